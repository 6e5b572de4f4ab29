{{ config(alias='OPPORTUNITYLINEITEM') }}

{%- set salesforce_fields = [
    'Id',
    'IsDeleted',
    'OpportunityId',
    'SortOrder',
    'PricebookEntryId',
    'Product2Id',
    'ProductCode',
    'Quantity',
    'TotalPrice',
    'UnitPrice',
    'ListPrice',
    'ServiceDate',
    'Discount',
    'Description',
    'CreatedDate',
    'CreatedById',
    'LastModifiedDate',
    'LastModifiedById',
    'SystemModstamp',
    'Line_Type__c',
] -%}

with

source as (

    select * from {{ source('salesforce', 'opportunitylineitem') }}

),

final as (

    select
        {{ salesforce_api_columns(salesforce_fields) }}

    from source
    {%- if not var('legacy_include_deleted') %}
    where not is_deleted
    {%- endif %}

)

select * from final

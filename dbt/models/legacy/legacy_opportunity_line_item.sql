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
{%- set columns = sfdc_sync.column_names(source('salesforce', 'opportunitylineitem')) %}

with

source as (

    select * from {{ source('salesforce', 'opportunitylineitem') }}

),

final as (

    select
        {{ salesforce_api_columns(salesforce_fields, columns=columns) }}

    from source
    {%- if not var('legacy_include_deleted') %}
    where not is_deleted
    {%- endif %}

)

select * from final

{{ config(alias='LEAD') }}

{%- set salesforce_fields = [
    'Id',
    'IsDeleted',
    'MasterRecordId',
    'LastName',
    'FirstName',
    'Salutation',
    'Name',
    'Title',
    'Company',
    'Street',
    'City',
    'State',
    'PostalCode',
    'Country',
    'Latitude',
    'Longitude',
    'Phone',
    'MobilePhone',
    'Email',
    'Website',
    'Description',
    'LeadSource',
    'Status',
    'Industry',
    'Rating',
    'AnnualRevenue',
    'NumberOfEmployees',
    'OwnerId',
    'IsConverted',
    'ConvertedDate',
    'ConvertedAccountId',
    'ConvertedContactId',
    'ConvertedOpportunityId',
    'IsUnreadByOwner',
    'CreatedDate',
    'CreatedById',
    'LastModifiedDate',
    'LastModifiedById',
    'SystemModstamp',
    'Lead_Score__c',
] -%}
{#- The type of a custom field's null when the org lacks it (others: varchar). -#}
{%- set null_types = {'Lead_Score__c': 'decimal(18, 0)'} -%}
{%- set columns = sfdc_sync.column_names(source('salesforce', 'lead')) %}

with

source as (

    select * from {{ source('salesforce', 'lead') }}

),

final as (

    select
        {{ salesforce_api_columns(
            salesforce_fields, person_name=true, columns=columns, null_types=null_types
        ) }}

    from source
    {%- if not var('legacy_include_deleted') %}
    where not is_deleted
    {%- endif %}

)

select * from final

{{ config(alias='CONTACT') }}

{%- set salesforce_fields = [
    'Id',
    'IsDeleted',
    'MasterRecordId',
    'AccountId',
    'LastName',
    'FirstName',
    'Salutation',
    'Name',
    'MailingStreet',
    'MailingCity',
    'MailingState',
    'MailingPostalCode',
    'MailingCountry',
    'MailingLatitude',
    'MailingLongitude',
    'Phone',
    'MobilePhone',
    'Email',
    'Title',
    'Department',
    'LeadSource',
    'Birthdate',
    'Description',
    'ReportsToId',
    'HasOptedOutOfEmail',
    'DoNotCall',
    'OwnerId',
    'CreatedDate',
    'CreatedById',
    'LastModifiedDate',
    'LastModifiedById',
    'SystemModstamp',
    'Preferred_Language__c',
    'Contact_Score__c',
] -%}
{#- The type of a custom field's null when the org lacks it (others: varchar). -#}
{%- set null_types = {'Contact_Score__c': 'decimal(18, 0)'} -%}
{%- set columns = sfdc_sync.column_names(source('salesforce', 'contact')) %}

with

source as (

    select * from {{ source('salesforce', 'contact') }}

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

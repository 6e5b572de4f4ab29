{{ config(alias='USER') }}

{%- set salesforce_fields = [
    'Id',
    'IsDeleted',
    'Username',
    'LastName',
    'FirstName',
    'Name',
    'CompanyName',
    'Division',
    'Department',
    'Title',
    'Street',
    'City',
    'State',
    'PostalCode',
    'Country',
    'Latitude',
    'Longitude',
    'Email',
    'Phone',
    'MobilePhone',
    'Alias',
    'CommunityNickname',
    'IsActive',
    'TimeZoneSidKey',
    'LocaleSidKey',
    'EmailEncodingKey',
    'LanguageLocaleKey',
    'UserType',
    'ManagerId',
    'ProfileId',
    'UserRoleId',
    'EmployeeNumber',
    'LastLoginDate',
    'CreatedDate',
    'CreatedById',
    'LastModifiedDate',
    'LastModifiedById',
    'SystemModstamp',
    'Sales_Team__c',
] -%}
{%- set columns = sfdc_sync.column_names(source('salesforce', 'user')) %}

with

source as (

    select * from {{ source('salesforce', 'user') }}

),

final as (

    select
        {{ salesforce_api_columns(salesforce_fields, person_name=true, columns=columns) }}

    from source
    {%- if not var('legacy_include_deleted') %}
    where not is_deleted
    {%- endif %}

)

select * from final

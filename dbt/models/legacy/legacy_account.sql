{{ config(alias='ACCOUNT') }}

{%- set salesforce_fields = [
    'Id',
    'IsDeleted',
    'MasterRecordId',
    'Name',
    'Type',
    'ParentId',
    'BillingStreet',
    'BillingCity',
    'BillingState',
    'BillingPostalCode',
    'BillingCountry',
    'BillingLatitude',
    'BillingLongitude',
    'ShippingStreet',
    'ShippingCity',
    'ShippingState',
    'ShippingPostalCode',
    'ShippingCountry',
    'ShippingLatitude',
    'ShippingLongitude',
    'Phone',
    'Fax',
    'AccountNumber',
    'Website',
    'Sic',
    'Industry',
    'AnnualRevenue',
    'NumberOfEmployees',
    'Ownership',
    'TickerSymbol',
    'Description',
    'Rating',
    'Site',
    'OwnerId',
    'CreatedDate',
    'CreatedById',
    'LastModifiedDate',
    'LastModifiedById',
    'SystemModstamp',
    'AccountSource',
    'Customer_Tier__c',
    'SLA__c',
    'External_Account_Id__c',
    'Active__c',
] -%}
{%- set columns = sfdc_sync.column_names(source('salesforce', 'account')) %}

with

source as (

    select * from {{ source('salesforce', 'account') }}

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

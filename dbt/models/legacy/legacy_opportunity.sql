{{ config(alias='OPPORTUNITY') }}

{%- set salesforce_fields = [
    'Id',
    'IsDeleted',
    'AccountId',
    'IsPrivate',
    'Name',
    'Description',
    'StageName',
    'Amount',
    'Probability',
    'ExpectedRevenue',
    'TotalOpportunityQuantity',
    'CloseDate',
    'Type',
    'NextStep',
    'LeadSource',
    'IsClosed',
    'IsWon',
    'ForecastCategoryName',
    'OwnerId',
    'CreatedDate',
    'CreatedById',
    'LastModifiedDate',
    'LastModifiedById',
    'SystemModstamp',
    'FiscalQuarter',
    'FiscalYear',
    'Discount_Percent__c',
    'Competitor__c',
    'Contract_Term_Months__c',
    'Region__c',
] -%}
{#- The type of a custom field's null when the org lacks it (others: varchar). -#}
{%- set null_types = {
    'Discount_Percent__c': 'decimal(18, 2)',
    'Contract_Term_Months__c': 'decimal(18, 0)',
} -%}
{%- set columns = sfdc_sync.column_names(source('salesforce', 'opportunity')) %}

with

source as (

    select * from {{ source('salesforce', 'opportunity') }}

),

final as (

    select
        {{ salesforce_api_columns(
            salesforce_fields, columns=columns, null_types=null_types
        ) }}

    from source
    {%- if not var('legacy_include_deleted') %}
    where not is_deleted
    {%- endif %}

)

select * from final

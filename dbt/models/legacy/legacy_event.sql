{{ config(alias='EVENT') }}

{%- set salesforce_fields = [
    'Id',
    'IsDeleted',
    'WhoId',
    'WhatId',
    'Subject',
    'Location',
    'IsAllDayEvent',
    'ActivityDateTime',
    'ActivityDate',
    'DurationInMinutes',
    'StartDateTime',
    'EndDateTime',
    'Description',
    'OwnerId',
    'Type',
    'IsPrivate',
    'ShowAs',
    'EventSubtype',
    'CreatedDate',
    'CreatedById',
    'LastModifiedDate',
    'LastModifiedById',
    'SystemModstamp',
    'Meeting_Outcome__c',
] -%}
{%- set columns = sfdc_sync.column_names(source('salesforce', 'event')) %}

with

source as (

    select * from {{ source('salesforce', 'event') }}

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

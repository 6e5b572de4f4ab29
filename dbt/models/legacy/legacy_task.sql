{{ config(alias='TASK') }}

{%- set salesforce_fields = [
    'Id',
    'IsDeleted',
    'WhoId',
    'WhatId',
    'Subject',
    'ActivityDate',
    'Status',
    'Priority',
    'IsHighPriority',
    'OwnerId',
    'Description',
    'Type',
    'IsClosed',
    'CallDurationInSeconds',
    'CallType',
    'CallDisposition',
    'TaskSubtype',
    'CompletedDateTime',
    'IsReminderSet',
    'ReminderDateTime',
    'CreatedDate',
    'CreatedById',
    'LastModifiedDate',
    'LastModifiedById',
    'SystemModstamp',
    'Outcome__c',
] -%}
{%- set columns = sfdc_sync.column_names(source('salesforce', 'task')) %}

with

source as (

    select * from {{ source('salesforce', 'task') }}

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

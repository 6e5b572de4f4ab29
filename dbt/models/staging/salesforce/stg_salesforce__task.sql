{%- set columns = sfdc_sync.column_names(source('salesforce', 'task')) %}

with

source as (

    select * from {{ source('salesforce', 'task') }}

),

renamed as (

    select

        ---------- ids
        id as task_id,
        whoid as who_id,
        whatid as what_id,
        ownerid as owner_id,
        createdbyid as created_by_id,
        lastmodifiedbyid as last_modified_by_id,
        ---------- text
        subject,
        status,
        priority,
        description,
        type as task_type,
        calltype as call_type,
        calldisposition as call_disposition,
        tasksubtype as task_subtype,
        {{ sfdc_sync.custom_field(columns, 'outcome__c', 'varchar') }} as outcome,
        ---------- numerics
        calldurationinseconds as call_duration_in_seconds,
        ---------- booleans
        ishighpriority as is_high_priority,
        isclosed as is_closed,
        isreminderset as is_reminder_set,
        ---------- dates
        activitydate as activity_date,
        ---------- timestamps
        completeddatetime as completed_date_time,
        reminderdatetime as reminder_date_time,
        createddate as created_date,
        lastmodifieddate as last_modified_date,
        systemmodstamp as system_modstamp,
        ---------- sync metadata
        _synced_at as synced_at

    from source
    where {{ sfdc_sync.not_deleted() }}

)

select * from renamed

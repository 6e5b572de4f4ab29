{%- set columns = sfdc_sync.column_names(source('salesforce', 'event')) %}

with

source as (

    select * from {{ source('salesforce', 'event') }}

),

renamed as (

    select

        ---------- ids
        id as event_id,
        whoid as who_id,
        whatid as what_id,
        ownerid as owner_id,
        createdbyid as created_by_id,
        lastmodifiedbyid as last_modified_by_id,
        ---------- text
        subject,
        location,
        description,
        type as event_type,
        showas as show_as,
        eventsubtype as event_subtype,
        {{ sfdc_sync.custom_field(columns, 'meeting_outcome__c', 'varchar') }} as meeting_outcome,
        ---------- numerics
        durationinminutes as duration_in_minutes,
        ---------- booleans
        isalldayevent as is_all_day_event,
        isprivate as is_private,
        ---------- dates
        activitydate as activity_date,
        ---------- timestamps
        activitydatetime as activity_date_time,
        startdatetime as start_date_time,
        enddatetime as end_date_time,
        createddate as created_date,
        lastmodifieddate as last_modified_date,
        systemmodstamp as system_modstamp,
        ---------- sync metadata
        _synced_at as synced_at

    from source
    where {{ sfdc_sync.not_deleted() }}

)

select * from renamed

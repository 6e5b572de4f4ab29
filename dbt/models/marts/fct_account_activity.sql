with

accounts as (

    select * from {{ ref('stg_salesforce__account') }}

),

opportunities as (

    select * from {{ ref('stg_salesforce__opportunity') }}

),

contacts as (

    select * from {{ ref('stg_salesforce__contact') }}

),

tasks as (

    select * from {{ ref('stg_salesforce__task') }}

),

events as (

    select * from {{ ref('stg_salesforce__event') }}

),

activities as (

    select
        'task' as activity_kind,
        task_id as activity_id,
        what_id,
        who_id,
        activity_date,
        is_closed as is_done
    from tasks

    union all

    select
        'event' as activity_kind,
        event_id as activity_id,
        what_id,
        who_id,
        activity_date,
        coalesce(end_date_time, start_date_time, activity_date_time) <= {{ sfdc_sync.utc_now() }}
            as is_done
    from events

),

-- WhatId is polymorphic (Account, Opportunity, ...) and WhoId points at a Contact or
-- Lead: an activity belongs to the account it is on, else its opportunity's account,
-- else its contact's account. The joins are on unique keys, so no fan-out.
activities_by_account as (

    select
        activities.*,
        coalesce(
            accounts.account_id, opportunities.account_id, contacts.account_id
        ) as account_id
    from activities
    left join accounts on activities.what_id = accounts.account_id
    left join opportunities on activities.what_id = opportunities.opportunity_id
    left join contacts on activities.who_id = contacts.contact_id

),

rollup as (

    select
        account_id,
        count(case when activity_kind = 'task' then 1 end) as task_count,
        count(case when activity_kind = 'task' and not is_done then 1 end) as open_task_count,
        count(case when activity_kind = 'event' then 1 end) as event_count,
        max(case when activity_kind = 'task' and is_done then activity_date end)
            as last_task_date,
        max(case when activity_kind = 'event' and is_done then activity_date end)
            as last_event_date
    from activities_by_account
    where account_id is not null
    group by 1

),

final as (

    select
        accounts.account_id,
        accounts.account_name,
        coalesce(rollup.task_count, 0) as task_count,
        coalesce(rollup.open_task_count, 0) as open_task_count,
        coalesce(rollup.event_count, 0) as event_count,
        coalesce(rollup.task_count, 0) + coalesce(rollup.event_count, 0) as activity_count,
        rollup.last_task_date,
        rollup.last_event_date,
        -- Salesforce's LastActivityDate rule: completed tasks and past events only
        {{ sfdc_sync.greatest_ignore_nulls('rollup.last_task_date', 'rollup.last_event_date') }}
            as last_activity_date

    from accounts
    left join rollup on accounts.account_id = rollup.account_id

)

select * from final

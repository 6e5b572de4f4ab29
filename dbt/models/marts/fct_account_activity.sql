-- Incremental (docs/dbt.md "Incremental marts"): the accounts rebuilt are those an
-- activity written since the last build is or was attributed to (any version's WhatId /
-- WhoId), those any changed opportunity or contact is or was on (their activities move
-- with them), those written themselves, those an activity on a changed account or
-- opportunity falls through to, and those with an event that ended since (an event
-- counts as done once it is past: time alone changes last_event_date).
{{ config(
    materialized='incremental',
    incremental_strategy='replace_keys',
    unique_key='account_id',
) }}
{%- set since = sfdc_sync.incremental_since() %}

with

{% if is_incremental() -%}
touched_references as (

    {%- for name in ['task', 'event'] %}
    select
        whatid as what_id,
        whoid as who_id
    from {{ source('salesforce_history', name) }}
    where id in ({{ sfdc_sync.changed_ids(source('salesforce', name), since) }})
    union all
    select
        whatid as what_id,
        whoid as who_id
    from {{ source('salesforce', name) }}
    where _synced_at >= {{ since }}
    union all
    -- on an account or opportunity deleted (or back) since: the activity falls through
    -- to (or back from) its contact's account
    select
        whatid as what_id,
        whoid as who_id
    from {{ source('salesforce', name) }}
    where
        whatid in ({{ sfdc_sync.changed_ids(source('salesforce', 'account'), since) }})
        or whatid in ({{ sfdc_sync.changed_ids(source('salesforce', 'opportunity'), since) }})
    union all
    {%- endfor %}
    select
        ended.what_id,
        ended.who_id
    from {{ ref('stg_salesforce__event') }} as ended
    where
        coalesce(ended.end_date_time, ended.start_date_time, ended.activity_date_time)
        between {{ since }} and {{ sfdc_sync.utc_now() }}

),

affected_keys as (

    select distinct touched.key_id from (
        -- the first branch names the column (key_id)
        {{ sfdc_sync.touched_values('opportunity', 'accountid', since) }}
        union all
        {{ sfdc_sync.touched_values('contact', 'accountid', since) }}
        union all
        {{ sfdc_sync.changed_ids(source('salesforce', 'account'), since) }}
        union all
        select touched_references.what_id from touched_references
        union all
        select opportunity.accountid
        from {{ source('salesforce', 'opportunity') }} as opportunity
        where opportunity.id in (select touched_references.what_id from touched_references)
        union all
        select contact.accountid
        from {{ source('salesforce', 'contact') }} as contact
        where contact.id in (select touched_references.who_id from touched_references)
    ) as touched
    where touched.key_id is not null

),

-- What an activity of an affected account can point at: the account, its opportunities
-- (WhatId) and its contacts (WhoId). Only such activities are read.
affected_what as (

    select affected_keys.key_id as what_id from affected_keys
    union all
    select opportunity_id from {{ ref('stg_salesforce__opportunity') }}
    where account_id in (select affected_keys.key_id from affected_keys)

),

affected_who as (

    select contact_id as who_id from {{ ref('stg_salesforce__contact') }}
    where account_id in (select affected_keys.key_id from affected_keys)

),

{% endif -%}

-- Attribution looks up every live account, opportunity and contact: an activity of an
-- affected account's contact may be on another account's opportunity, and belongs there.
live_accounts as (

    select * from {{ ref('stg_salesforce__account') }}

),

accounts as (

    select * from live_accounts
    {%- if is_incremental() %}
    where account_id in (select affected_keys.key_id from affected_keys)
    {%- endif %}

),

opportunities as (

    select * from {{ ref('stg_salesforce__opportunity') }}

),

contacts as (

    select * from {{ ref('stg_salesforce__contact') }}

),

{%- for name in ['task', 'event'] %}

{{ name }}s as (

    select * from {{ ref('stg_salesforce__' ~ name) }}
    {%- if is_incremental() %}
    where
        what_id in (select affected_what.what_id from affected_what)
        or who_id in (select affected_who.who_id from affected_who)
    {%- endif %}

),
{%- endfor %}

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
            live_accounts.account_id, opportunities.account_id, contacts.account_id
        ) as account_id
    from activities
    left join live_accounts on activities.what_id = live_accounts.account_id
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
            as last_activity_date,
        {{ sfdc_sync.utc_now() }} as built_at

    from accounts
    left join rollup on accounts.account_id = rollup.account_id

)

{{ sfdc_sync.incremental_batch('account_id') }}

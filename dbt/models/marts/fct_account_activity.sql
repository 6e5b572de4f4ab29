-- Incremental (docs/dbt.md "Incremental marts"): the accounts rebuilt are those an
-- activity written since the last build is or was attributed to (any version's WhatId /
-- WhoId), those any changed opportunity or contact is or was on (their activities move
-- with them), those written themselves, those an activity on a changed account or
-- opportunity falls through to, and those whose next event has ended since (an event
-- counts as done once it is past: time alone changes last_event_date).
--
-- Every read of an incremental build is by value: the keys are read first and inlined
-- (inlined_keys), so the engine's lookup indexes (objects.yaml lookup_fields: WhatId,
-- WhoId, AccountId; DuckDB ART, Snowflake search optimization) and primary keys answer
-- them, and "ended since" is an hour-bucket lookup in this table (next_event_end_hour).
{{ config(
    materialized='incremental',
    incremental_strategy='replace_keys',
    unique_key='account_id',
    post_hook="{{ sfdc_sync.lookup_index('next_event_end_hour') }}",
) }}
{%- set since = sfdc_sync.incremental_since() %}
{%- set activity_sources = ['task', 'event'] %}

{%- if is_incremental() %}
{%- if execute and 'next_event_end_hour' not in (
    adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list) %}
{%- do exceptions.raise_compiler_error(
    this ~ ' predates its next_event_end_hour column: rebuild it once with '
    ~ '`dbt build --full-refresh --select fct_account_activity` (docs/dbt.md)') %}
{%- endif %}
{%- set changed = {} %}
{%- for name in activity_sources %}
{%- do changed.update({name: sfdc_sync.inlined_keys(
    sfdc_sync.changed_ids(source('salesforce', name), since)).list}) %}
{%- endfor %}
{%- set changed_parents = sfdc_sync.inlined_keys(
    sfdc_sync.changed_ids(source('salesforce', 'account'), since)
    ~ ' union all ' ~ sfdc_sync.changed_ids(source('salesforce', 'opportunity'), since)) %}

{#- What the activities written since point or pointed at (every version), and the
    references of activities on a changed account or opportunity: deleted (or back), the
    activity falls through to (or back from) its contact's account. -#}
{%- set references %}
    select whatid as what_id, whoid as who_id
    from {{ source('salesforce_history', 'task') }}
    where id in {{ changed['task'] }}
    union all
    select whatid, whoid from {{ source('salesforce', 'task') }}
    where id in {{ changed['task'] }}
    union all
    select whatid, whoid from {{ source('salesforce', 'task') }}
    where whatid in {{ changed_parents.list }}
    union all
    select whatid, whoid from {{ source('salesforce_history', 'event') }}
    where id in {{ changed['event'] }}
    union all
    select whatid, whoid from {{ source('salesforce', 'event') }}
    where id in {{ changed['event'] }}
    union all
    select whatid, whoid from {{ source('salesforce', 'event') }}
    where whatid in {{ changed_parents.list }}
{%- endset %}
{%- set what_refs = sfdc_sync.inlined_keys('select what_id from (' ~ references ~ ') as r') %}
{%- set who_refs = sfdc_sync.inlined_keys('select who_id from (' ~ references ~ ') as r') %}

{%- set affected_query %}
    select distinct touched.key_id from (
        -- the first branch names the column (key_id)
        {{ sfdc_sync.touched_values('opportunity', 'accountid', since) }}
        union all
        {{ sfdc_sync.touched_values('contact', 'accountid', since) }}
        union all
        select id from {{ source('salesforce', 'account') }}
        where id in {{ changed_parents.list }}
        union all
        select id from {{ source('salesforce', 'account') }}
        where id in {{ what_refs.list }}
        union all
        select accountid from {{ source('salesforce', 'opportunity') }}
        where id in {{ what_refs.list }}
        union all
        select accountid from {{ source('salesforce', 'contact') }}
        where id in {{ who_refs.list }}
        union all
        -- accounts whose next event ended since: time alone made it done
        select account_id from {{ this }}
        where {{ sfdc_sync.hours_since_filter(
            'next_event_end_hour', sfdc_sync.incremental_since_value()) }}
    ) as touched
    {#- No `key_id is not null`: DuckDB would push it into each scan next to the key
        lookup, and its index answers a scan with one filter only. inlined_keys drops
        nulls; in its subquery fallback a null key matches no row. #}
{%- endset %}
{%- set affected = sfdc_sync.inlined_keys(affected_query) %}

{#- What an activity of an affected account can point at: the account, its live
    opportunities (WhatId) and its live contacts (WhoId). Only such activities are read. -#}
{%- set what_keys = sfdc_sync.inlined_keys(
    'select key_id from (' ~ affected.relation ~ ') as a union all '
    ~ 'select opportunity_id from ' ~ ref('stg_salesforce__opportunity')
    ~ ' where account_id in ' ~ affected.list) %}
{%- set who_keys = sfdc_sync.inlined_keys(
    'select contact_id from ' ~ ref('stg_salesforce__contact')
    ~ ' where account_id in ' ~ affected.list) %}

{#- What those activities point at, for their attribution: an activity of an affected
    account's contact may be on another account's opportunity, and belongs there. -#}
{%- set pointed %}
    select what_id, who_id from {{ ref('stg_salesforce__task') }}
    where what_id in {{ what_keys.list }}
    union all
    select what_id, who_id from {{ ref('stg_salesforce__task') }}
    where who_id in {{ who_keys.list }}
    union all
    select what_id, who_id from {{ ref('stg_salesforce__event') }}
    where what_id in {{ what_keys.list }}
    union all
    select what_id, who_id from {{ ref('stg_salesforce__event') }}
    where who_id in {{ who_keys.list }}
{%- endset %}
{%- set attributed_what = sfdc_sync.inlined_keys('select what_id from (' ~ pointed ~ ') as p') %}
{%- set attributed_who = sfdc_sync.inlined_keys('select who_id from (' ~ pointed ~ ') as p') %}
{%- endif %}

with

{% if is_incremental() -%}
-- read by incremental_batch, which the linter sees as `select * from final`
affected_keys as (  -- noqa: ST03

    {{ affected.relation }}

),

{% endif -%}

live_accounts as (

    select * from {{ ref('stg_salesforce__account') }}
    {%- if is_incremental() %}
    where account_id in {{ attributed_what.list }}
    {%- endif %}

),

accounts as (

    select * from {{ ref('stg_salesforce__account') }}
    {%- if is_incremental() %}
    where account_id in {{ affected.list }}
    {%- endif %}

),

opportunities as (

    select * from {{ ref('stg_salesforce__opportunity') }}
    {%- if is_incremental() %}
    where opportunity_id in {{ attributed_what.list }}
    {%- endif %}

),

contacts as (

    select * from {{ ref('stg_salesforce__contact') }}
    {%- if is_incremental() %}
    where contact_id in {{ attributed_who.list }}
    {%- endif %}

),

{%- for name in activity_sources %}

{{ name }}s as (

    select * from {{ ref('stg_salesforce__' ~ name) }}
    {%- if is_incremental() %}
    where what_id in {{ what_keys.list }}
    -- union, not union all: an activity on one of the keys by both WhatId and WhoId is
    -- read twice (one filter per scan, so each is an index lookup)
    union
    select * from {{ ref('stg_salesforce__' ~ name) }}
    where who_id in {{ who_keys.list }}
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
        is_closed as is_done,
        cast(null as timestamp) as ends_at
    from tasks

    union all

    select
        'event' as activity_kind,
        event_id as activity_id,
        what_id,
        who_id,
        activity_date,
        coalesce(end_date_time, start_date_time, activity_date_time) <= {{ sfdc_sync.utc_now() }}
            as is_done,
        coalesce(end_date_time, start_date_time, activity_date_time) as ends_at
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
            as last_event_date,
        min(case when activity_kind = 'event' and not is_done then ends_at end)
            as next_event_end_at
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
        -- when the next build must look again: time alone makes that event done
        date_trunc('hour', rollup.next_event_end_at) as next_event_end_hour,
        {{ sfdc_sync.build_stamp() }} as built_at

    from accounts
    left join rollup on accounts.account_id = rollup.account_id

)

{{ sfdc_sync.incremental_batch('account_id') }}

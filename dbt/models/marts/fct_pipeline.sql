-- Incremental (docs/dbt.md "Incremental marts"): the owners rebuilt are those any
-- opportunity written since the last build has or had (every scd2 version: a reassigned
-- or re-staged deal leaves its old group), the owners renamed since, and, with a quota
-- source, those whose quota differs from the one the mart holds. An owner is the unit:
-- owner_month_pipeline_amount, the quota and the owner's name span all of an owner's
-- rows. Salesforce requires Opportunity.OwnerId, so no row has a null key.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_keys',
    unique_key='owner_id',
) }}
{%- set since = sfdc_sync.incremental_since() %}
{%- set quota_enabled = var('quota_enabled') | as_bool -%}
{%- if quota_enabled %}
{%- set quota_query %}
    select
        owner_id,
        {{ sfdc_sync.month_start('quota_month') }} as close_month,
        sum(quota_amount) as quota_amount
    from {{ source('revenue_ops', 'quota') }}
    group by 1, 2
{%- endset %}
{%- endif %}
{%- set quota_changed = '' %}
{%- if quota_enabled and is_incremental() %}
{%- set quota_changed %}
        -- with a quota source: owners whose quota is not the mart's
        union all
        select built.owner_id
        from {{ this }} as built
        left join ({{ quota_query }}) as quota
            on built.owner_id = quota.owner_id
            and built.close_month = quota.close_month
        where built.quota_amount is distinct from quota.quota_amount
{%- endset %}
{%- endif %}
{%- if is_incremental() %}
{%- set affected_query %}
    select distinct touched.key_id from (
        -- the first branch names the column (key_id)
        {{ sfdc_sync.touched_values('opportunity', 'ownerid', since) }}
        union all
        -- renamed owners
        select id from {{ source('salesforce', 'user') }}
        where _synced_at >= {{ since }}{{ quota_changed }}
    ) as touched
    {#- No `key_id is not null`: DuckDB would push it into each scan next to the key
        lookup, and its index answers a scan with one filter only. inlined_keys drops
        nulls; in its subquery fallback a null key matches no row. #}

{%- endset %}
{%- set affected = sfdc_sync.inlined_keys(affected_query) %}
{%- endif %}

with

{% if quota_enabled -%}
quota as (

    {{ quota_query }}

),

{% endif -%}

{% if is_incremental() -%}
-- read by incremental_batch, which the linter sees as `select * from final`
affected_keys as (  -- noqa: ST03

    {{ affected.relation }}

),

{% endif -%}

opportunities as (

    select * from {{ ref('stg_salesforce__opportunity') }}
    {%- if is_incremental() %}
    where owner_id in {{ affected.list }}
    {%- endif %}

),

users as (

    select * from {{ ref('stg_salesforce__user') }}
    {%- if is_incremental() %}
    where user_id in {{ affected.list }}
    {%- endif %}

),

open_opportunities as (

    select
        stage_name,
        owner_id,
        {{ sfdc_sync.month_start('close_date') }} as close_month,
        amount,
        expected_revenue
    from opportunities
    -- after the owners' lookup, not in its scan (DuckDB's index answers one filter)
    where {{ sfdc_sync.after_lookup('not is_closed', 'opportunity_id') }}

),

pipeline as (

    select
        stage_name,
        owner_id,
        close_month,
        count(*) as opportunity_count,
        coalesce(sum(amount), 0) as pipeline_amount,
        coalesce(sum(expected_revenue), 0) as weighted_pipeline_amount
    from open_opportunities
    group by 1, 2, 3

),

final as (

    select
        pipeline.stage_name,
        pipeline.owner_id,
        users.user_name as owner_name,
        pipeline.close_month,
        pipeline.opportunity_count,
        pipeline.pipeline_amount,
        pipeline.weighted_pipeline_amount,
        sum(pipeline.pipeline_amount) over (
            partition by pipeline.owner_id, pipeline.close_month
        ) as owner_month_pipeline_amount,
        {%- if quota_enabled %}
        quota.quota_amount,
        sum(pipeline.pipeline_amount) over (
            partition by pipeline.owner_id, pipeline.close_month
        ) / nullif(quota.quota_amount, 0) as pipeline_coverage,
        {%- else %}
        cast(null as decimal(18, 2)) as quota_amount,
        cast(null as double) as pipeline_coverage,
        {%- endif %}
        {{ sfdc_sync.build_stamp() }} as built_at

    from pipeline
    left join users on pipeline.owner_id = users.user_id
    {%- if quota_enabled %}
    -- ST11 is off here: sqlfluff also lints this join with the select list's else branch
    left join quota  -- noqa: ST11
        on pipeline.owner_id = quota.owner_id
        and pipeline.close_month = quota.close_month
    {%- endif %}

)

{{ sfdc_sync.incremental_batch('owner_id') }}

{%- set quota_enabled = var('quota_enabled') | as_bool -%}

with

opportunities as (

    select * from {{ ref('stg_salesforce__opportunity') }}

),

users as (

    select * from {{ ref('stg_salesforce__user') }}

),

{% if quota_enabled -%}
quota as (

    select
        owner_id,
        {{ sfdc_sync.month_start('quota_month') }} as close_month,
        sum(quota_amount) as quota_amount
    from {{ source('revenue_ops', 'quota') }}
    group by 1, 2

),

{% endif -%}

open_opportunities as (

    select
        stage_name,
        owner_id,
        {{ sfdc_sync.month_start('close_date') }} as close_month,
        amount,
        expected_revenue
    from opportunities
    where not is_closed

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
        ) / nullif(quota.quota_amount, 0) as pipeline_coverage
        {%- else %}
        cast(null as decimal(18, 2)) as quota_amount,
        cast(null as double) as pipeline_coverage
        {%- endif %}

    from pipeline
    left join users on pipeline.owner_id = users.user_id
    {%- if quota_enabled %}
    -- ST11 is off here: sqlfluff also lints this join with the select list's else branch
    left join quota  -- noqa: ST11
        on pipeline.owner_id = quota.owner_id
        and pipeline.close_month = quota.close_month
    {%- endif %}

)

select * from final

-- One row per opportunity version. "As of" any instant: see macros/as_of.sql and docs/dbt.md
--   where valid_from <= <ts> and (valid_to is null or valid_to > <ts>) [and not is_deleted]

with

versions as (

    select * from {{ ref('stg_salesforce__opportunity_history') }}

),

final as (

    select
        opportunity_id,
        row_number() over (
            partition by opportunity_id order by valid_from
        ) as version_number,
        valid_from,
        valid_to,
        is_current,
        is_deleted,
        stage_name,
        amount,
        expected_revenue,
        probability,
        close_date,
        forecast_category_name,
        is_closed,
        is_won,
        owner_id,
        account_id,
        opportunity_name,
        lag(stage_name) over (
            partition by opportunity_id order by valid_from
        ) as previous_stage_name,
        lag(amount) over (
            partition by opportunity_id order by valid_from
        ) as previous_amount,
        system_modstamp,
        synced_at

    from versions

)

select * from final

-- One row per opportunity version. "As of" any instant: see macros/as_of.sql and docs/dbt.md
--   where valid_from <= <ts> and (valid_to is null or valid_to > <ts>) [and not is_deleted]
--
-- Incremental (docs/dbt.md "Incremental marts"): an opportunity whose scd2 or current rows
-- the engine wrote since the last build has all its versions rebuilt, so version_number
-- and the previous_* columns see every version; one with no version left is removed.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_keys',
    unique_key='opportunity_id',
) }}
{%- set since = sfdc_sync.incremental_since() %}

with

{% if is_incremental() -%}
affected_keys as (

    select id as key_id from (
        {{ sfdc_sync.changed_ids(source('salesforce_history', 'opportunity'), since) }}
        union
        {{ sfdc_sync.changed_ids(source('salesforce', 'opportunity'), since) }}
    ) as changed

),

{% endif -%}

versions as (

    select * from {{ ref('stg_salesforce__opportunity_history') }}
    {%- if is_incremental() %}
    where opportunity_id in (select affected_keys.key_id from affected_keys)
    {%- endif %}

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
        synced_at,
        {{ sfdc_sync.build_stamp() }} as built_at

    from versions

)

{{ sfdc_sync.incremental_batch('opportunity_id') }}

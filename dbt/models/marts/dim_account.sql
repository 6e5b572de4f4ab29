-- Incremental (docs/dbt.md "Incremental marts"): the accounts rebuilt are those written
-- since the last build, those any changed contact or opportunity is or was on, and those
-- whose owner changed; an account deleted since is removed.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_keys',
    unique_key='account_id',
) }}
{%- set since = sfdc_sync.incremental_since() %}
{%- if is_incremental() %}
{%- set affected_query %}
    select distinct touched.key_id from (
        -- the first branch names the column (key_id)
        {{ sfdc_sync.touched_values('contact', 'accountid', since) }}
        union all
        {{ sfdc_sync.touched_values('opportunity', 'accountid', since) }}
        union all
        {{ sfdc_sync.changed_ids(source('salesforce', 'account'), since) }}
        union all
        select id from {{ source('salesforce', 'account') }}
        where ownerid in {{ sfdc_sync.inlined_keys(
            sfdc_sync.changed_ids(source('salesforce', 'user'), since)).list }}
    ) as touched
    {#- No `key_id is not null`: DuckDB would push it into each scan next to the key
        lookup, and its index answers a scan with one filter only. inlined_keys drops
        nulls; in its subquery fallback a null key matches no row. #}

{%- endset %}
{%- set affected = sfdc_sync.inlined_keys(affected_query) %}
{%- set owners = sfdc_sync.inlined_keys(
    'select ownerid from ' ~ source('salesforce', 'account') ~ ' where id in ' ~ affected.list) %}
{%- endif %}

with

{% if is_incremental() -%}
-- read by incremental_batch, which the linter sees as `select * from final`
affected_keys as (  -- noqa: ST03

    {{ affected.relation }}

),

{% endif -%}

accounts as (

    select * from {{ ref('stg_salesforce__account') }}
    {%- if is_incremental() %}
    where account_id in {{ affected.list }}
    {%- endif %}

),

users as (

    select * from {{ ref('stg_salesforce__user') }}
    {%- if is_incremental() %}
    where user_id in {{ owners.list }}
    {%- endif %}

),

contacts as (

    select * from {{ ref('stg_salesforce__contact') }}
    {%- if is_incremental() %}
    where account_id in {{ affected.list }}
    {%- endif %}

),

opportunities as (

    select * from {{ ref('stg_salesforce__opportunity') }}
    {%- if is_incremental() %}
    where account_id in {{ affected.list }}
    {%- endif %}

),

contact_counts as (

    select
        account_id,
        count(*) as contact_count
    from contacts
    where account_id is not null
    group by 1

),

opportunity_summary as (

    select
        account_id,
        count(case when not is_closed then 1 end) as open_opportunity_count,
        coalesce(sum(case when not is_closed then amount end), 0) as open_pipeline_amount,
        count(case when is_won then 1 end) as won_opportunity_count,
        coalesce(sum(case when is_won then amount end), 0) as won_amount,
        max(case when is_won then close_date end) as last_won_date
    from opportunities
    where account_id is not null
    group by 1

),

final as (

    select
        accounts.account_id,
        accounts.account_name,
        accounts.account_type,
        accounts.industry,
        accounts.rating,
        accounts.customer_tier,
        accounts.annual_revenue,
        accounts.number_of_employees,
        accounts.billing_country,
        accounts.billing_state,
        accounts.billing_city,
        accounts.parent_id as parent_account_id,
        accounts.owner_id,
        users.user_name as owner_name,
        coalesce(contact_counts.contact_count, 0) as contact_count,
        coalesce(opportunity_summary.open_opportunity_count, 0) as open_opportunity_count,
        coalesce(opportunity_summary.open_pipeline_amount, 0) as open_pipeline_amount,
        coalesce(opportunity_summary.won_opportunity_count, 0) as won_opportunity_count,
        coalesce(opportunity_summary.won_amount, 0) as won_amount,
        opportunity_summary.last_won_date,
        accounts.created_date,
        accounts.synced_at,
        {{ sfdc_sync.build_stamp() }} as built_at

    from accounts
    left join users on accounts.owner_id = users.user_id
    left join contact_counts on accounts.account_id = contact_counts.account_id
    left join opportunity_summary on accounts.account_id = opportunity_summary.account_id

)

{{ sfdc_sync.incremental_batch('account_id') }}

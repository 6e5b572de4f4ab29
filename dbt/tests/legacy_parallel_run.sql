{#
    Parallel run (docs/migration.md): the legacy views against the old replication's
    tables, while both exist. Fails with one row per difference: a row count per object,
    or an Opportunity whose Amount differs (or that exists on one side only).

    Off unless SFDC_LEGACY_PARALLEL_RUN=true (then it runs with every dbt build, the
    dbt_refresh sensor's included, and a failure alerts like any failed check). The old
    tables are SFDC_LEGACY_OLD_DATABASE (default: the target's) . SFDC_LEGACY_OLD_SCHEMA
    (default legacy_old) . <OBJECT>, with the legacy views' names and columns. Records
    changed in the last SFDC_LEGACY_COMPARE_LAG_MINUTES (default 120) are left out on
    both sides: the old replication runs on its own, slower schedule.
#}
{{ config(
    severity='error',
    tags=['legacy_parallel_run'],
    meta={'dagster': {'ref': {'name': 'legacy_opportunity'}}},
) }}

{%- set enabled = env_var('SFDC_LEGACY_PARALLEL_RUN', 'false') | trim | lower == 'true' -%}
{%- set old_database = env_var('SFDC_LEGACY_OLD_DATABASE', '') | trim or target.database -%}
{%- set old_schema = env_var('SFDC_LEGACY_OLD_SCHEMA', 'legacy_old') | trim -%}
{%- set lag_minutes = env_var('SFDC_LEGACY_COMPARE_LAG_MINUTES', '120') | trim | int -%}
{%- set objects = {
    'ACCOUNT': 'legacy_account',
    'CONTACT': 'legacy_contact',
    'EVENT': 'legacy_event',
    'LEAD': 'legacy_lead',
    'OPPORTUNITY': 'legacy_opportunity',
    'OPPORTUNITYLINEITEM': 'legacy_opportunity_line_item',
    'TASK': 'legacy_task',
    'USER': 'legacy_user',
} -%}

{% if enabled %}

with

new_counts as (

    {%- for name, model in objects.items() %}
    select
        '{{ name }}' as object_name,
        count(*) as n_rows
    from {{ ref(model) }}
    where SystemModstamp < {{ sfdc_sync.minutes_ago(lag_minutes) }}
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}

),

old_counts as (

    {%- for name, model in objects.items() %}
    select
        '{{ name }}' as object_name,
        count(*) as n_rows
    from {{ api.Relation.create(database=old_database, schema=old_schema, identifier=name) }}
    where SystemModstamp < {{ sfdc_sync.minutes_ago(lag_minutes) }}
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}

),

count_differences as (

    select
        'row_count' as difference,
        new_counts.object_name,
        cast(null as varchar) as record_id,
        cast(new_counts.n_rows as decimal(38, 2)) as new_value,
        cast(old_counts.n_rows as decimal(38, 2)) as old_value
    from new_counts
    inner join old_counts on new_counts.object_name = old_counts.object_name
    where new_counts.n_rows != old_counts.n_rows

),

new_opportunities as (

    select
        Id as record_id,
        Amount as amount
    from {{ ref('legacy_opportunity') }}
    where SystemModstamp < {{ sfdc_sync.minutes_ago(lag_minutes) }}

),

old_opportunities as (

    select
        Id as record_id,
        Amount as amount
    from {{ api.Relation.create(database=old_database, schema=old_schema, identifier='OPPORTUNITY') }}
    where SystemModstamp < {{ sfdc_sync.minutes_ago(lag_minutes) }}

),

amount_differences as (

    select
        'amount' as difference,
        'OPPORTUNITY' as object_name,
        coalesce(new_opportunities.record_id, old_opportunities.record_id) as record_id,
        cast(new_opportunities.amount as decimal(38, 2)) as new_value,
        cast(old_opportunities.amount as decimal(38, 2)) as old_value
    from new_opportunities
    full outer join old_opportunities
        on new_opportunities.record_id = old_opportunities.record_id
    where
        new_opportunities.record_id is null
        or old_opportunities.record_id is null
        or new_opportunities.amount is distinct from old_opportunities.amount

)

select * from count_differences
union all
select * from amount_differences

{% else %}

select
    'off' as difference,
    cast(null as varchar) as object_name
where 1 = 0

{% endif %}

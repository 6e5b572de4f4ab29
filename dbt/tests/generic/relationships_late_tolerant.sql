{#
    Like `relationships`, but tolerant of late arrival (DESIGN §6): objects sync
    independently, so a child can land minutes before its parent. A child row fails only
    when its parent is missing and the child was synced more than `window_minutes` ago
    (default: var late_arrival_window_minutes); null references are not checked.
#}
{% test relationships_late_tolerant(
    model, column_name, to, field, synced_at='synced_at', window_minutes=none
) %}

{%- set window = window_minutes if window_minutes is not none
    else var('late_arrival_window_minutes') -%}

{#- A domain build selects the tests of its models, whose other side may be another
    domain's view that a fresh platform has not built yet (stg_salesforce__user for the
    revenue models' owners): naming it failed the first revenue build. Until it exists
    there is nothing to compare; the nightly build, which builds every model, compares. -#}
{%- set unbuilt = execute and load_relation(to) is none -%}
{%- if unbuilt -%}
    {{ log("relationships_late_tolerant: " ~ to ~ " is not built yet; nothing compared",
        info=True) }}
{%- endif %}

{%- if unbuilt or sfdc_sync.skipped_on_frequent_build() %}

-- Nightly-only (macros/test_scope.sql) on a frequent build, or the other side not built
-- yet: no row, and no relation named.
select
    cast(null as varchar) as reference_id,
    cast(null as timestamp) as synced_at
where 1 = 0

{%- else %}

with

child as (

    select
        {{ column_name }} as reference_id,
        {{ synced_at }} as synced_at
    from {{ model }}
    where {{ column_name }} is not null

),

parent as (

    select {{ field }} as referenced_id
    from {{ to }}

),

orphans as (

    select child.*
    from child
    left join parent on child.reference_id = parent.referenced_id
    where parent.referenced_id is null
      and child.synced_at < {{ sfdc_sync.minutes_ago(window) }}

)

select * from orphans

{%- endif %}

{% endtest %}

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

with

child as (

    select
        {{ column_name }} as reference_id,
        {{ synced_at }} as synced_at
    from {{ model }}
    where {{ column_name }} is not null

),

parent as (

    -- a nightly-only test on a frequent build (macros/test_scope.sql) reads no parent
    select {{ field }} as referenced_id
    from {{ to }}
    where {{ 'false' if sfdc_sync.skipped_on_frequent_build() else 'true' }}

),

orphans as (

    select child.*
    from child
    left join parent on child.reference_id = parent.referenced_id
    where parent.referenced_id is null
      and child.synced_at < {{ sfdc_sync.minutes_ago(window) }}

)

select * from orphans

{% endtest %}

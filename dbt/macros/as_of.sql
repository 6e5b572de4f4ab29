{#
    "As of" over scd2 validity intervals [valid_from, valid_to), valid_to null = still open.
    valid_from/valid_to are source (Salesforce commit) time in UTC, never load time.

    as_of_filter('2024-06-30')            -> the predicate, for any model or ad-hoc query
    opportunity_as_of('2024-06-30')       -> a full select over fct_opportunity_history:
                                             the opportunities that existed (not deleted)
                                             at that instant, one row each

    A date means its midnight UTC: as of '2024-06-30' is the state at 2024-06-30 00:00:00;
    pass '2024-06-30 23:59:59' for the end of that day.
#}

{% macro as_of_filter(as_of, valid_from='valid_from', valid_to='valid_to') -%}
    {%- set ts = sfdc_sync.timestamp_literal(as_of) -%}
    {{ valid_from }} <= {{ ts }} and ({{ valid_to }} is null or {{ valid_to }} > {{ ts }})
{%- endmacro %}

{% macro opportunity_as_of(as_of, include_deleted=false) -%}
    select *
    from {{ ref('fct_opportunity_history') }}
    where {{ sfdc_sync.as_of_filter(as_of) }}
    {%- if not include_deleted %}
      and not is_deleted
    {%- endif %}
{%- endmacro %}

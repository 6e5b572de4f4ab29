{#
    Cross-database helpers. The engine stores timestamps as naive UTC (TIMESTAMP in DuckDB,
    TIMESTAMP_NTZ in Snowflake), so "now" must be naive UTC too, whatever the session time
    zone: comparing against a zoned current_timestamp would shift by the session offset.
#}

{% macro utc_now() -%}
    {{ return(adapter.dispatch('utc_now', 'sfdc_sync')()) }}
{%- endmacro %}

{% macro default__utc_now() -%}
    cast(timezone('UTC', current_timestamp) as timestamp)
{%- endmacro %}

{% macro snowflake__utc_now() -%}
    sysdate()
{%- endmacro %}


{# The naive-UTC timestamp `minutes` minutes ago. #}
{% macro minutes_ago(minutes) -%}
    {{ return(adapter.dispatch('minutes_ago', 'sfdc_sync')(minutes)) }}
{%- endmacro %}

{% macro default__minutes_ago(minutes) -%}
    ({{ sfdc_sync.utc_now() }} - to_minutes(cast({{ minutes }} as bigint)))
{%- endmacro %}

{% macro snowflake__minutes_ago(minutes) -%}
    dateadd('minute', -1 * ({{ minutes }}), {{ sfdc_sync.utc_now() }})
{%- endmacro %}


{# First day of the month of a date or timestamp, as a DATE. #}
{% macro month_start(expression) -%}
    {{ return(adapter.dispatch('month_start', 'sfdc_sync')(expression)) }}
{%- endmacro %}

{% macro default__month_start(expression) -%}
    cast(date_trunc('month', {{ expression }}) as date)
{%- endmacro %}

{% macro snowflake__month_start(expression) -%}
    to_date(date_trunc('month', {{ expression }}))
{%- endmacro %}


{#
    The greatest non-null value. DuckDB's greatest() already skips nulls; Snowflake's
    returns null as soon as one argument is null.
#}
{% macro greatest_ignore_nulls(a, b) -%}
    {{ return(adapter.dispatch('greatest_ignore_nulls', 'sfdc_sync')(a, b)) }}
{%- endmacro %}

{% macro default__greatest_ignore_nulls(a, b) -%}
    greatest({{ a }}, {{ b }})
{%- endmacro %}

{% macro snowflake__greatest_ignore_nulls(a, b) -%}
    greatest(coalesce({{ a }}, {{ b }}), coalesce({{ b }}, {{ a }}))
{%- endmacro %}


{# A timestamp literal (naive UTC) from 'YYYY-MM-DD[ HH:MI:SS]' text. #}
{% macro timestamp_literal(value) -%}
    {{ return(adapter.dispatch('timestamp_literal', 'sfdc_sync')(value)) }}
{%- endmacro %}

{% macro default__timestamp_literal(value) -%}
    cast('{{ value }}' as timestamp)
{%- endmacro %}

{% macro snowflake__timestamp_literal(value) -%}
    to_timestamp_ntz('{{ value }}')
{%- endmacro %}


{#
    The filter staging puts on current's rows: not soft-deleted. On DuckDB, a scan answers
    `x in (<literals>)` from an index (the engine's lookup indexes, current's primary key)
    only while that is its one pushed-down filter: a plain `not is_deleted` becomes a
    second one and turns every lookup through a staging view into a full scan (measured,
    DuckDB 2.0.1). An OR is not pushed into the scan, so it is applied after the lookup;
    `id` is never null (the primary key), so the rows are the same.
#}
{% macro not_deleted() -%}
    {{ return(sfdc_sync.after_lookup('not is_deleted', 'id')) }}
{%- endmacro %}


{#
    `predicate`, kept out of the scan on DuckDB (see not_deleted): `key` is a column that
    is never null (the primary key), so `or key is null` changes no row. Elsewhere the
    predicate itself.
#}
{% macro after_lookup(predicate, key) -%}
    {{ return(adapter.dispatch('after_lookup', 'sfdc_sync')(predicate, key)) }}
{%- endmacro %}

{% macro default__after_lookup(predicate, key) -%}
    ({{ predicate }} or {{ key }} is null)
{%- endmacro %}

{% macro snowflake__after_lookup(predicate, key) -%}
    {{ predicate }}
{%- endmacro %}

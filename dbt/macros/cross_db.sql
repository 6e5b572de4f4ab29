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

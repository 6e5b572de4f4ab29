{#
    Key tests on the frequent builds read recent rows only; the nightly build reads all.

    Every test has `where: __recent__` (dbt_project.yml `data_tests:`). With
    `--vars '{recent_days: N}'`, N > 0 (what a domain's frequent build passes), the
    placeholder becomes "written in the last N days": `built_at >= <N days ago>` on a
    model that has built_at (the incremental marts: the rows their builds rewrote, all
    versions of an opportunity together), else `synced_at >= ...` (staging: the rows the
    engine wrote), and a model with neither (fct_pipeline, a small aggregate) is read
    whole. With recent_days 0 (the default, and the nightly build) every row is read.

    A narrower read can only hide a failure, never invent one: unique, not_null,
    at_most_one_current and unique_combination_of_columns hold on any subset of rows, and
    relationships_late_tolerant filters the child only (the parent side is read whole).
    What a recent-only test cannot see (a duplicate between an old row and a new one) the
    nightly full run sees.

    A test whose rows cannot be narrowed without reading a whole table has
    `where: __nightly__` instead (in its .yml): with recent_days > 0 it becomes `false`,
    so the frequent build runs the test over no rows (DuckDB and Snowflake plan no scan
    for a constant-false filter) and it passes; with 0 it is `true`, every row. These are
    the views without a write time of their own (commission_preview, the legacy views: a
    legacy `Id` is the current table's primary key) and the relationships whose parent
    side is a whole-table read (docs/dbt.md, "Nightly-only tests").

    dbt renders a test's `where` config without the project's macros, hence the
    placeholders substituted here. Any other `where` is applied as dbt applies it.
#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where and '__recent__' in where -%}
        {%- set where = where | replace('__recent__', sfdc_sync.recent_rows(relation)) -%}
    {%- endif -%}
    {%- if where and '__nightly__' in where -%}
        {%- set where = where | replace('__nightly__', sfdc_sync.nightly_rows()) -%}
    {%- endif -%}
    {%- if where -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
    {%- endif -%}
    {%- do return(relation) -%}
{%- endmacro %}

{# The predicate `__recent__` stands for on `relation` (true = every row). #}
{% macro recent_rows(relation) -%}
    {%- set days = var('recent_days') | int -%}
    {%- if days <= 0 or not execute -%}
        {{ return('true') }}
    {%- endif -%}
    {%- set columns = sfdc_sync.column_names(relation) -%}
    {%- for column in ['built_at', 'synced_at'] -%}
        {%- if column in columns -%}
            {{ return(column ~ ' >= ' ~ sfdc_sync.minutes_ago(days * 1440)) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return('true') }}
{%- endmacro %}

{# The predicate `__nightly__` stands for: no row on a frequent build, every row nightly. #}
{% macro nightly_rows() -%}
    {{ return('false' if (var('recent_days') | int) > 0 else 'true') }}
{%- endmacro %}

{# True when the test being compiled is nightly-only and this is a frequent build. #}
{% macro skipped_on_frequent_build() -%}
    {{ return('__nightly__' in (config.get('where') or '') and (var('recent_days') | int) > 0) }}
{%- endmacro %}

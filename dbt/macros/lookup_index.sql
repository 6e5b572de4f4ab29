{#
    Hooks that make `column` of this model's table fast to look up by value (an
    `in (<literals>)` filter), as objects.yaml `lookup_fields` does for the engine's tables.

    DuckDB: an ART index (`lookup_index`, a post-hook), kept by incremental builds. DuckDB
    cannot rename a table that has an index, and a full refresh renames the old table
    aside, so `drop_mart_lookup_indexes` (on-run-start) drops these indexes first on a
    --full-refresh run; dropping them in the model's own pre-hook instead races dbt-duckdb's
    `duckdb_indexes()` lookups in the other threads (a catalog error naming the renamed
    table, seen with 4 threads). The post-hook then creates it on the new table.
    Snowflake: search optimization (EQUALITY), added on a full build (a new table) when var
    snowflake_search_optimization is true, as the engine adds it to its tables only when
    the warehouse resource's search_optimization is on.
#}
{% macro lookup_index(column) -%}
    {{ return(adapter.dispatch('lookup_index', 'sfdc_sync')(column)) }}
{%- endmacro %}

{% macro drop_mart_lookup_indexes() -%}
    {{ return(adapter.dispatch('drop_mart_lookup_indexes', 'sfdc_sync')()) }}
{%- endmacro %}

{% macro _lookup_index_name(column) -%}
    {{ return(this.identifier ~ '_' ~ column ~ '_mart_idx') }}
{%- endmacro %}

{% macro default__lookup_index(column) -%}
    create index if not exists {{ sfdc_sync._lookup_index_name(column) }}
    on {{ this }} ({{ column }})
{%- endmacro %}

{% macro default__drop_mart_lookup_indexes() -%}
    {%- if execute and flags.FULL_REFRESH -%}
        {%- set found = run_query(
            "select schema_name, index_name from duckdb_indexes() "
            ~ "where index_name like '%\\_mart\\_idx' escape '\\'") -%}
        {%- for row in found.rows -%}
            {%- do run_query('drop index if exists ' ~ adapter.quote(row[0]) ~ '.'
                ~ adapter.quote(row[1])) -%}
        {%- endfor -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{% macro snowflake__lookup_index(column) -%}
    {%- if var('snowflake_search_optimization') | as_bool and not is_incremental() -%}
        alter table {{ this }} add search optimization on equality({{ column }})
    {%- endif -%}
{%- endmacro %}

{% macro snowflake__drop_mart_lookup_indexes() -%}
    select 1
{%- endmacro %}

{#
    Test-only: copied into a temporary copy of the dbt project (bench/dbt_snowflake_statements.py
    `fake_project`) so the real dbt-snowflake adapter runs on fakesnow 0.12.1 (target `fake`).
    Never part of dbt/macros: production sends the statements dbt-snowflake writes.

    fakesnow (DuckDB underneath) has no Snowflake temporary tables in its catalog: the
    incremental marts' `__dbt_tmp` relation becomes a plain table, dropped by dbt after the
    merge as before (one statement either way). The other shims of
    /work/shared/reference/snowflake.md B3 are not needed: the project has no merge or
    snapshot, and fakesnow runs dbt-snowflake's BEGIN / DELETE / INSERT / COMMIT of
    `replace_keys` as sent.
#}
{% macro is_fakesnow() -%}
    {{ return(target.name == 'fake') }}
{%- endmacro %}

{% macro snowflake__create_table_temporary_sql(relation, compiled_code) -%}
    {%- if sfdc_sync.is_fakesnow() -%}
        create or replace table {{ relation }} as ({{ compiled_code }})
    {%- else -%}
        {{ return(dbt.snowflake__create_table_temporary_sql(relation, compiled_code)) }}
    {%- endif -%}
{%- endmacro %}

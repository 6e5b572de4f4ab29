{#
    Custom schemas are used literally: a model configured with `schema: legacy` lands in
    `legacy`, not `<target schema>_legacy`, because the legacy views must keep the schema
    name existing consumers query. Models without a custom schema use the target schema.
    Each target is its own warehouse (a DuckDB file, or the prod database), so literal
    names never collide between environments.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}

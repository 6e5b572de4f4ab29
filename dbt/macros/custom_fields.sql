{#
    Custom fields (`__c`) belong to an org, not to Salesforce: the emulator's org has
    Competitor__c, Region__c, Discount_Percent__c...; a real org may have none of them. The
    engine creates one column per field its describe returns, so staging and the legacy
    views read a custom field only when the engine's table has its column, and a typed
    null otherwise: the model keeps its shape and builds on any org.

    {%- set columns = sfdc_sync.column_names(source('salesforce', 'opportunity')) %}
    {{ sfdc_sync.custom_field(columns, 'competitor__c', 'varchar') }} as competitor

    The column list is read from the warehouse when the model runs (one metadata query per
    model), so a field added to the org appears on the next build.
#}

{# Lower-cased column names of a relation (none while dbt parses). #}
{% macro column_names(relation) -%}
    {%- set names = [] -%}
    {%- if execute -%}
        {%- for column in adapter.get_columns_in_relation(relation) -%}
            {%- do names.append(column.name | lower) -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(names) }}
{%- endmacro %}

{# The custom field's column when the table has it, else a null of `data_type`. #}
{% macro custom_field(columns, name, data_type) -%}
    {%- if name | lower in columns -%}
        {{ name | lower }}
    {%- else -%}
        cast(null as {{ data_type }})
    {%- endif -%}
{%- endmacro %}

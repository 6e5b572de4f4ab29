{#
    `stagename as StageName, ...` for a list of Salesforce API names: the engine's columns
    are the lower-cased API names, the legacy tables used the API names themselves.
    Unquoted aliases keep DuckDB's case as written and fold to upper case in Snowflake,
    which is what the old Snowflake replication produced (STAGENAME).

    A custom field (`__c`) whose column the engine's table lacks (`columns`, from
    `sfdc_sync.column_names`: the org has no such field) is a null of its type in
    `null_types` (varchar when not listed), so the view keeps the columns consumers query.
#}
{% macro salesforce_api_columns(api_names, person_name=false, columns=none, null_types={}) -%}
    {%- for api_name in api_names %}
        {%- if api_name == 'IsDeleted' %}
            is_deleted as IsDeleted
        {%- elif api_name == 'Name' and person_name %}
            {{ person_full_name() }} as Name
        {%- elif api_name.endswith('__c') and columns is not none
            and (api_name | lower) not in columns %}
            cast(null as {{ null_types.get(api_name, 'varchar') }}) as {{ api_name }}
        {%- else %}
            {{ api_name | lower }} as {{ api_name }}
        {%- endif %}
        {{- "," if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- A person's Name (Contact, Lead, User) is the compound of FirstName and LastName: CDC
    events carry only the parts, so the warehouse derives it the way Salesforce does. -#}
{% macro person_full_name() -%}
    nullif(trim(coalesce(firstname || ' ', '') || coalesce(lastname, '')), '')
{%- endmacro %}

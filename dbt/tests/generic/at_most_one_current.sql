{#
    scd2 integrity: per key, at most one open version (valid_to null / is_current).
    Two open versions would make every "as of" query return duplicates.
#}
{% test at_most_one_current(model, column_name, current_flag='is_current') %}

with

open_versions as (

    select
        {{ column_name }} as record_id,
        count(*) as n_open
    from {{ model }}
    where {{ current_flag }}
    group by {{ column_name }}

)

select * from open_versions
where n_open > 1

{% endtest %}

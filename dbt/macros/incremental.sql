{#
    Incremental marts: what they read since their last build, and how a batch replaces
    the rows of its keys. docs/dbt.md, "Incremental marts", gives the rules each model
    follows to stay equal to a full rebuild.

    incremental_since()
        On an incremental run: a timestamp literal, the newest `built_at` in the model's
        own table less var incremental_clock_skew_minutes. Source rows the engine wrote
        (`_synced_at`) at or after it are the changes to apply. `built_at` is not simply
        when the build ran (build_stamp below): an apply stamps its rows when it starts and
        commits later, so it is never later than the oldest apply in flight. The skew
        margin covers the engine's clock (the stamps) against the warehouse's (built_at).
        The value is read first and inlined as a literal, so Snowflake prunes
        micro-partitions on it (a scalar subquery is not pruned before the scan).
        On a full build (or an empty table): the earliest timestamp, i.e. everything.
#}
{% macro incremental_since() -%}
    {%- set since = sfdc_sync.incremental_since_value() -%}
    {%- set text = since.strftime('%Y-%m-%d %H:%M:%S.%f') if since is not none
        else '1900-01-01 00:00:00' -%}
    {{ return(sfdc_sync.timestamp_literal(text)) }}
{%- endmacro %}

{# incremental_since() as a datetime; none on a full build, an empty table, or at parse. #}
{% macro incremental_since_value() -%}
    {%- set since = none -%}
    {%- if execute and is_incremental() -%}
        {%- set newest = run_query('select max(built_at) from ' ~ this) -%}
        {%- set newest = newest.columns[0].values()[0] -%}
        {%- if newest is not none -%}
            {%- set skew = var('incremental_clock_skew_minutes') | int -%}
            {%- set since = newest - modules.datetime.timedelta(minutes=skew) -%}
        {%- endif -%}
    {%- endif -%}
    {{ return(since) }}
{%- endmacro %}


{#
    build_stamp(): the `built_at` literal of the rows a build writes. The earlier of the
    warehouse's clock (read first) and the oldest apply in flight in
    sfdc_meta.apply_in_flight (sync_engine/in_flight.py: an apply commits its row there
    before it takes the stamp it writes, and deletes it after its last commit), so the
    next build, reading from the newest built_at, sees every write this one could not.
    Rows older than var incremental_lookback_minutes are a killed apply's and ignored.
    Without that table (an engine from before it): the clock less the lookback, the old
    fixed bound. At parse: the clock expression.
#}
{% macro build_stamp() -%}
    {%- if not execute -%}
        {{ return(sfdc_sync.utc_now()) }}
    {%- endif -%}
    {%- set now = run_query('select ' ~ sfdc_sync.utc_now()).columns[0].values()[0] -%}
    {%- set lookback = var('incremental_lookback_minutes') | int -%}
    {%- set oldest_alive = now - modules.datetime.timedelta(minutes=lookback) -%}
    {%- set markers = adapter.get_relation(
        database=this.database, schema=var('sfdc_meta_schema'),
        identifier='apply_in_flight') -%}
    {%- if markers is none -%}
        {%- set stamp = oldest_alive -%}
    {%- else -%}
        {%- set oldest = run_query(
            'select min(started_at) from ' ~ markers ~ ' where started_at >= '
            ~ sfdc_sync.timestamp_literal(oldest_alive.strftime('%Y-%m-%d %H:%M:%S.%f'))
        ).columns[0].values()[0] -%}
        {%- set stamp = oldest if oldest is not none and oldest < now else now -%}
    {%- endif -%}
    {{ return(sfdc_sync.timestamp_literal(stamp.strftime('%Y-%m-%d %H:%M:%S.%f'))) }}
{%- endmacro %}

{#
    A filter on an hour-bucket column (`column`, timestamps truncated to the hour, naive
    UTC) for the hours from `since` (a datetime) to now: `in (<hour literals>)`, which an
    index (DuckDB) or search optimization (Snowflake) answers by value, as no range can
    be. Over var incremental_inline_hours_max hours (a build after a long pause):
    `>= since`, the same rows by a scan. `since` none (a full build): true.
#}
{% macro hours_since_filter(column, since) -%}
    {%- if since is none -%}
        {{ return('true') }}
    {%- endif -%}
    {%- set now = modules.datetime.datetime.utcnow() -%}
    {%- set first = since.replace(minute=0, second=0, microsecond=0) -%}
    {%- set count = ((now - first).total_seconds() // 3600) | int + 1 -%}
    {%- if count > var('incremental_inline_hours_max') | int -%}
        {{ return(column ~ ' >= ' ~ sfdc_sync.timestamp_literal(
            first.strftime('%Y-%m-%d %H:%M:%S'))) }}
    {%- endif -%}
    {%- set literals = [] -%}
    {%- for k in range(count) -%}
        {%- set hour = first + modules.datetime.timedelta(hours=k) -%}
        {%- do literals.append(sfdc_sync.timestamp_literal(hour.strftime('%Y-%m-%d %H:%M:%S'))) -%}
    {%- endfor -%}
    {{ return(column ~ ' in (' ~ literals | join(', ') ~ ')') }}
{%- endmacro %}


{#
    The Ids of a source table's rows the engine wrote since `since`: updates, deletes
    (current keeps deleted rows, flagged) and undeletes alike.
#}
{% macro changed_ids(relation, since) -%}
    select id from {{ relation }} where _synced_at >= {{ since }}
{%- endmacro %}


{#
    The batch of an incremental run, from `final` (the model's rows, restricted to the
    affected keys) and `affected_keys` (one column `key_id`, the keys whose rows may have
    changed, unique): every row of `final` with `_key`, plus one row with `_remove` true
    for each affected key that no longer has a row. On a full build: `final` itself.
#}
{% macro incremental_batch(key) -%}
    {%- if is_incremental() %}
    select
        affected_keys.key_id as _key,
        final.*,
        final.{{ key }} is null as _remove
    from affected_keys
    left join final on affected_keys.key_id = final.{{ key }}
    {%- else %}
    select * from final
    {%- endif %}
{%- endmacro %}


{#
    Incremental strategy `replace_keys` (config incremental_strategy='replace_keys',
    unique_key = the column the batch's `_key` is a value of): delete every row of the
    batch's keys, insert the batch's live rows. A plain merge cannot remove a row (a
    deleted account, an account whose last activity was deleted), and delete+insert only
    removes keys it re-inserts. The key need not be unique in the table:
    fct_opportunity_history replaces all versions of an opportunity at once.

    `_key` and `_remove` exist only on incremental runs (incremental_batch), so the table
    never has them: the insert names the table's own columns. Readers never see the
    keys deleted and not yet inserted: DuckDB runs the model in one transaction; on
    Snowflake (autocommit) the two statements are wrapped in one explicitly, as
    dbt-snowflake wraps its own delete+insert.
#}
{% macro get_incremental_replace_keys_sql(arg_dict) -%}
    {%- set key = arg_dict['unique_key'] -%}
    {%- if key is not string -%}
        {%- do exceptions.raise_compiler_error(
            "replace_keys needs a single-column unique_key (got " ~ key ~ ") in " ~ this) -%}
    {%- endif -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    {%- set dml -%}
        delete from {{ target }}
        where {{ key }} in (select _key from {{ source }});

        insert into {{ target }} ({{ columns }})
        select {{ columns }} from {{ source }}
        where not _remove
    {%- endset -%}
    {{ return(adapter.dispatch('replace_keys_transaction', 'sfdc_sync')(dml)) }}
{%- endmacro %}

{% macro default__replace_keys_transaction(dml) -%}
    {{ return(dml) }}
{%- endmacro %}

{% macro snowflake__replace_keys_transaction(dml) -%}
    {{ return(snowflake_dml_explicit_transaction(dml)) }}
{%- endmacro %}


{#
    Every value `column` has or had, in any version, on the rows of source table `name`
    the engine wrote since `since`: the new parent of a re-parented child and its old one
    (scd2 keeps the old version), the parent of a deleted child. The changed ids are
    inlined (inlined_keys), so scd2 is read by its index on id. For marts whose rows
    aggregate children by parent (dim_account counts contacts and opportunities per
    account): these parents' rows are the ones to rebuild. Older versions add parents
    that did not change; rebuilding them is harmless.
#}
{% macro touched_values(name, column, since) -%}
    {%- set changed = sfdc_sync.inlined_keys(
        sfdc_sync.changed_ids(source('salesforce', name), since)) %}
    select {{ column }} as key_id
    from {{ source('salesforce_history', name) }}
    where id in {{ changed.list }}
    union all
    select {{ column }} as key_id
    from {{ source('salesforce', name) }}
    where _synced_at >= {{ since }}
{%- endmacro %}


{#
    The keys `query` returns (one column), read first and inlined as literals, so the
    reads of the affected keys' rows are pruned to the micro-partitions (DuckDB: row
    groups) whose min/max can hold them. A semi-join on a subquery is not pruned before
    the scan: measured on DuckDB, `account_id in (select ... from affected_keys)` read
    every contact and opportunity (the planner hashed the big side), the same filter
    with the 17 literal keys read 40 contacts (bench/dbt_rows_scanned.py). As with
    incremental_since(), the query runs once more than it appears in the model.

    Returns {'list': a parenthesized list for `x in <list>`, 'relation': a query with
    one column key_id (for that, `query`'s column must be named key_id; the list takes
    any one-column query).} Over var incremental_inline_keys_max keys: the keys in a
    temporary table (keys_table), read by both, which selects the same rows by a hash
    join instead of lookups. At parse time: the query itself. No key: `(null)`, which
    matches nothing, and an empty relation.
#}
{% macro inlined_keys(query) -%}
    {%- set limit = var('incremental_inline_keys_max') | int -%}
    {%- set subquery = {'list': '(select * from (' ~ query ~ ') as keys)',
        'relation': 'select key_id from (' ~ query ~ ') as keys'} -%}
    {%- if not execute -%}
        {{ return(subquery) }}
    {%- endif -%}
    {#- At most limit + 2 distinct rows come back (one may be null): a catch-up build
        after hours without one has ~10^5 keys, and reading them all into dbt's Python
        (agate) only to fall back to the subquery took minutes and GBs per model. -#}
    {%- set marked = '-- sfdc_sync inlined_keys: affected keys, read first\n'
        ~ 'select distinct * from (' ~ query ~ ') as keys limit ' ~ (limit + 2) -%}
    {%- set keys = run_query(marked).columns[0].values() | reject('none') | unique | list -%}
    {%- if keys | length > limit -%}
        {{ return(sfdc_sync.keys_table(query)) }}
    {%- endif -%}
    {%- if keys | length == 0 -%}
        {{ return({'list': '(null)',
            'relation': 'select cast(null as varchar) as key_id where 1 = 0'}) }}
    {%- endif -%}
    {%- set literals = [] -%}
    {%- for key in keys -%}
        {%- do literals.append("'" ~ (key | string | replace("'", "''")) ~ "'") -%}
    {%- endfor -%}
    {%- set selects = [] -%}
    {%- for literal in literals -%}
        {%- do selects.append('select ' ~ literal ~ ' as key_id') -%}
    {%- endfor -%}
    {{ return({'list': '(' ~ literals | join(', ') ~ ')',
        'relation': selects | join('\n    union all\n    ')}) }}
{%- endmacro %}


{#
    Over inlined_keys' limit: the distinct values of `query` (one column) written once
    into a session's temporary table, and {'list', 'relation'} reading it. The queries
    nest (fct_account_activity's keys are read through the keys of the keys before), so
    as subqueries each level re-ran every level below it once per use: the hourly
    activities build at production shape spent 33 s on its key queries and 52 s on the
    model (90 s in all; 38 s with keys tables), holding the one DuckDB writer
    (docs/dbt.md "Keys inlined"). The name is the model's and the query's hash, so a
    rerun in the session replaces it.
#}
{% macro keys_table(query) -%}
    {%- set relation = api.Relation.create(
        database=this.database, schema=this.schema,
        identifier=this.identifier ~ '__keys_' ~ local_md5(query)[:12]) -%}
    {%- set relation = adapter.dispatch('keys_table_relation', 'sfdc_sync')(relation) -%}
    {%- do run_query(adapter.dispatch('create_keys_table', 'sfdc_sync')(
        relation, 'select distinct * from (' ~ query ~ ') as keys')) -%}
    {{ return({'list': '(select * from ' ~ relation ~ ')',
        'relation': 'select key_id from ' ~ relation}) }}
{%- endmacro %}

{% macro default__keys_table_relation(relation) -%}
    {{ return(relation) }}
{%- endmacro %}

{# DuckDB's temporary tables live in the `temp` catalog: the name is never qualified. #}
{% macro duckdb__keys_table_relation(relation) -%}
    {{ return(relation.include(database=false, schema=false)) }}
{%- endmacro %}

{% macro default__create_keys_table(relation, sql) -%}
    create or replace temporary table {{ relation }} as {{ sql }}
{%- endmacro %}

{# dbt-snowflake's own temporary-table statement (the one its incremental models use). #}
{% macro snowflake__create_keys_table(relation, sql) -%}
    {{ return(snowflake__create_table_temporary_sql(relation, sql)) }}
{%- endmacro %}

"""The correctness SQL, once for both warehouses: raw append, fold, current and scd2 writes.

Each function returns one statement for the dialect `d` (`sync_engine.dialect`), which
holds everything DuckDB and Snowflake spell differently; nothing here branches on the
warehouse's name. Statement names follow the order `apply.apply_batch` runs them in;
docs/engine.md walks through them ("SQL per dialect" lists the differences).

Temporary tables (all `sfdc_tmp_*`): stage (the loaded batch) -> batch (deduped by
change_id) -> apply (not yet applied) -> touched (per record: version range, old version,
late?) -> old (touched current rows) -> anchor (the scd2 row a late record is rebuilt
from) -> seq (anchor + changes, per record) -> fold (state after every change) -> hist
(the scd2 rows to write).

The writes are DELETE/UPDATE/INSERT inside one transaction, never MERGE: fakesnow rejects
MERGE inside BEGIN, and DELETE + INSERT of the touched rows is what a MERGE would rewrite
anyway. Every dedup sorts with an explicit null placement (Snowflake sorts NULLs first on
DESC).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sync_engine.changes import FIRST_REAL_VERSION
from sync_engine.dialect import SqlDialect
from sync_engine.spec import IS_DELETED_COLUMN, IS_DELETED_FIELD, RAW_META_COLUMNS, ObjectSpec
from sync_engine.warehouse import SchemaNames

LOAD_LOG_COUNTS = (
    "changes",
    "raw_inserted",
    "applied",
    "records",
    "inserted",
    "updated",
    "deleted",
    "noop",
    "late",
    "history_rows",
)
# Change types that carry a whole record (every field); UPDATE/DELETE carry what changed.
WHOLE_CHANGE_TYPES = ("SNAPSHOT", "CREATE", "UNDELETE")
# current's marker: TRUE once a whole change of the record has been applied, FALSE while
# none has, NULL for rows written before the column existed (unknown: `incomplete` asks
# raw). An OR over the applied changes, so any order and batching give the same value.
READ_WHOLE_COLUMN = "_read_whole"
# The apply table's flag of a whole change (a double underscore no Salesforce field has).
WHOLE_FLAG = "change__whole"
# The raw columns a flat stage (`SqlDialect.flat_stage`) holds as JSON text.
_JSON_TEXT_COLUMNS = ("set_fields", "payload")


def _cols(d: SqlDialect, names: Sequence[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{d.q(n)}" for n in names)


def _field_ddl(d: SqlDialect, spec: ObjectSpec) -> list[str]:
    return [f"{d.q(f.column)} {d.column_type(f.wtype)}" for f in spec.fields]


def _meta_ddl(d: SqlDialect) -> dict[str, str]:
    """Raw's own columns and their types."""
    return {
        "change_id": "VARCHAR NOT NULL",
        "record_id": "VARCHAR(18) NOT NULL",
        "source": "VARCHAR NOT NULL",
        "change_type": "VARCHAR NOT NULL",
        "version": "VARCHAR NOT NULL",
        "version_ts": f"{d.timestamp} NOT NULL",
        "commit_ts": d.timestamp,
        "system_modstamp": d.timestamp,
        "transaction_key": "VARCHAR",
        "sequence_number": d.bigint,
        "replay_id": "VARCHAR",
        "schema_id": "VARCHAR",
        "set_fields": f"{d.text_array} NOT NULL",
        "payload": d.json,
        "batch_id": "VARCHAR",
        "ingested_at": d.timestamp,
        "change_date": "DATE NOT NULL",
    }


def raw_columns(spec: ObjectSpec) -> list[str]:
    """Raw's columns, in table order."""
    return [*RAW_META_COLUMNS, IS_DELETED_COLUMN, *spec.columns]


def create_raw(d: SqlDialect, spec: ObjectSpec, s: SchemaNames) -> str:
    """Raw: append-only, typed fields next to the payload as received."""
    cols = [f"{d.q(c)} {ddl}" for c, ddl in _meta_ddl(d).items()]
    cols += [f"{d.q(IS_DELETED_COLUMN)} BOOLEAN", *_field_ddl(d, spec)]
    cluster = d.raw_cluster_sql.format(d.q("change_date"))
    return f"CREATE TABLE IF NOT EXISTS {d.table(s.raw, spec.table)} ({', '.join(cols)}){cluster}"


def create_current(d: SqlDialect, spec: ObjectSpec, s: SchemaNames) -> str:
    """Current: one row per Id; on DuckDB the PRIMARY KEY's ART index serves the point
    lookups (on Snowflake it is informational)."""
    q = d.q
    cols = [f"{q('id')} VARCHAR(18) PRIMARY KEY", *_field_ddl(d, spec)]
    cols += [
        f"{q(IS_DELETED_COLUMN)} BOOLEAN NOT NULL",
        f"{q('_version')} VARCHAR NOT NULL",
        f"{q('_source')} VARCHAR NOT NULL",
        f"{q('_synced_at')} {d.timestamp} NOT NULL",
        f"{q(READ_WHOLE_COLUMN)} BOOLEAN",
    ]
    return f"CREATE TABLE IF NOT EXISTS {d.table(s.current, spec.table)} ({', '.join(cols)})"


def add_read_whole(d: SqlDialect, spec: ObjectSpec, s: SchemaNames) -> str:
    """The marker on a current table that predates it: NULL (unknown) on existing rows."""
    return add_column(d, s.current, spec.table, READ_WHOLE_COLUMN, "BOOLEAN")


def create_history(d: SqlDialect, spec: ObjectSpec, s: SchemaNames) -> str:
    """SCD2: one row per distinct version of a record."""
    q = d.q
    cols = [f"{q('id')} VARCHAR(18) NOT NULL", *_field_ddl(d, spec)]
    cols += [
        f"{q(IS_DELETED_COLUMN)} BOOLEAN NOT NULL",
        f"{q('_version')} VARCHAR NOT NULL",
        f"{q('_source')} VARCHAR NOT NULL",
        f"{q('valid_from')} {d.timestamp} NOT NULL",
        f"{q('valid_to')} {d.timestamp}",
        f"{q('is_current')} BOOLEAN NOT NULL",
        f"{q('_synced_at')} {d.timestamp} NOT NULL",
    ]
    return f"CREATE TABLE IF NOT EXISTS {d.table(s.history, spec.table)} ({', '.join(cols)})"


def create_history_index(d: SqlDialect, spec: ObjectSpec, s: SchemaNames) -> str:
    """An index on scd2.id (`point_lookups` dialects): closing/rebuilding a record's
    versions is a point lookup."""
    q = d.q
    name = q(f"{spec.table}_id_idx")
    return f"CREATE INDEX IF NOT EXISTS {name} ON {d.table(s.history, spec.table)} ({q('id')})"


def search_optimization(d: SqlDialect, spec: ObjectSpec, s: SchemaNames) -> list[str]:
    """Snowflake: search optimization on current's and scd2's `id` (every apply reads and
    rewrites them by touched ids); none where an index serves (DuckDB)."""
    if d.search_optimization_sql is None:
        return []
    return [
        d.search_optimization_sql.format(table=d.table(schema, spec.table), column=d.q("id"))
        for schema in (s.current, s.history)
    ]


def create_lookup_index(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, column: str) -> str:
    """An index on one of current's reference columns (`point_lookups` dialects), so dbt's
    reads of a parent's children (`whatid IN ('...')`) are index lookups, not scans."""
    q = d.q
    name = q(f"{spec.table}_{column}_lookup_idx")
    return f"CREATE INDEX IF NOT EXISTS {name} ON {d.table(s.current, spec.table)} ({q(column)})"


def search_optimization_lookups(
    d: SqlDialect, spec: ObjectSpec, s: SchemaNames, columns: Sequence[str]
) -> str:
    """Snowflake: search optimization on current's reference columns (EQUALITY answers
    `IN` lists and joins whose build side has few distinct values)."""
    targets = ", ".join(d.q(c) for c in columns)
    return (
        f"ALTER TABLE {d.table(s.current, spec.table)} "
        f"ADD SEARCH OPTIMIZATION ON EQUALITY({targets})"
    )


def create_quarantine(d: SqlDialect, spec: ObjectSpec, s: SchemaNames) -> str:
    """Quarantine: rows that failed validation, with the reason."""
    q = d.q
    return (
        f"CREATE TABLE IF NOT EXISTS {d.table(s.quarantine, spec.table)} ("
        f"{q('change_id')} VARCHAR, {q('record_id')} VARCHAR, {q('reason')} VARCHAR NOT NULL, "
        f"{q('payload')} {d.json}, {q('batch_id')} VARCHAR, "
        f"{q('quarantined_at')} {d.timestamp} NOT NULL)"
    )


def create_schema_registry(d: SqlDialect, s: SchemaNames) -> str:
    """sfdc_meta.schema_registry: the fields of every object, per describe."""
    q = d.q
    return (
        f"CREATE TABLE IF NOT EXISTS {d.table(s.meta, 'schema_registry')} ("
        f"{q('object_name')} VARCHAR NOT NULL, {q('field_name')} VARCHAR NOT NULL, "
        f"{q('column_name')} VARCHAR NOT NULL, {q('sf_type')} VARCHAR NOT NULL, "
        f"{q('warehouse_type')} VARCHAR NOT NULL, {q('first_seen_at')} {d.timestamp} NOT NULL, "
        f"{q('last_seen_at')} {d.timestamp} NOT NULL, {q('removed_at')} {d.timestamp})"
    )


def create_load_log(d: SqlDialect, s: SchemaNames) -> str:
    """sfdc_meta.load_log: one row per applied batch; also the 'already applied' ledger."""
    q = d.q
    counts = ", ".join(f"{q(c)} {d.bigint}" for c in LOAD_LOG_COUNTS)
    return (
        f"CREATE TABLE IF NOT EXISTS {d.table(s.meta, 'load_log')} ("
        f"{q('batch_id')} VARCHAR NOT NULL, {q('object_name')} VARCHAR NOT NULL, "
        f"{q('applied_at')} {d.timestamp} NOT NULL, {counts})"
    )


def add_column(d: SqlDialect, schema: str, table: str, column: str, ddl_type: str) -> str:
    """ALTER TABLE ... ADD COLUMN IF NOT EXISTS."""
    return f"ALTER TABLE {d.table(schema, table)} ADD COLUMN IF NOT EXISTS {d.q(column)} {ddl_type}"


def stage_ddl(d: SqlDialect, spec: ObjectSpec) -> str:
    """Columns of the stage temp table: the batch as given, nullable.

    A flat stage (Snowflake) holds set_fields and payload as JSON text and one
    `<col>__set` flag per state column, computed before the upload. Otherwise the flags
    are computed by `select_to_apply` from `set_fields` (DuckDB's `list_contains`, on
    every core), not in Python before the load: for a 1M-row batch that was ~1 s of
    polars work and a copy of the batch.
    """
    text = dict.fromkeys(_JSON_TEXT_COLUMNS, "VARCHAR") if d.flat_stage else {}
    cols = [
        f"{d.q(c)} {text.get(c, ddl.replace(' NOT NULL', ''))}" for c, ddl in _meta_ddl(d).items()
    ]
    cols += [f"{d.q(IS_DELETED_COLUMN)} BOOLEAN", *_field_ddl(d, spec)]
    if d.flat_stage:
        cols += [f"{d.q(c + '__set')} BOOLEAN" for c in spec.state_columns]
    return ", ".join(cols)


def _apply_columns(d: SqlDialect, spec: ObjectSpec, alias: str, from_raw: bool = False) -> str:
    """What the fold reads of a change: ids, version, state and one `<col>__set` flag each.

    Raw's other columns (payload, replay ids...) stay behind in the batch table, so the
    apply table is a fraction of the batch's bytes. `from_raw`: `alias` is raw itself
    (its `set_fields` list), not a stage.
    """
    q, a = d.q, f"{alias}."
    flat = d.flat_stage and not from_raw
    flags = []
    for name, col in [
        *((f.name, f.column) for f in spec.fields),
        (IS_DELETED_FIELD, IS_DELETED_COLUMN),
    ]:
        flag = q(col + "__set")
        test = f"{a}{flag}" if flat else d.array_contains(f"{a}{q('set_fields')}", name)
        flags.append(f"{test} AS {flag}")
    kinds = ", ".join(d.string(k) for k in WHOLE_CHANGE_TYPES)
    flags.append(f"{a}{q('change_type')} IN ({kinds}) AS {q(WHOLE_FLAG)}")
    cols = _cols(d, ["record_id", "version", "version_ts", "source", *spec.state_columns], a)
    return f"{cols}, {', '.join(flags)}"


def dedupe_batch(d: SqlDialect) -> str:
    """One row per change_id; a repeated id with different versions keeps the lowest."""
    q = d.q
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_batch')} AS "
        f"SELECT * FROM {q('sfdc_tmp_stage')} "
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {q('change_id')} "
        f"ORDER BY {q('version')} ASC NULLS LAST) = 1"
    )


def insert_raw(
    d: SqlDialect,
    spec: ObjectSpec,
    s: SchemaNames,
    dmin: dt.date,
    dmax: dt.date,
    *,
    anti_join: bool = True,
) -> str:
    """Idempotent append: rows whose change_id raw already holds are skipped.

    A change_id fixes the version and so the change_date: the anti-join only reads raw's
    [dmin, dmax] days, which zone maps (DuckDB) / partition pruning (Snowflake) cut to
    the batch's days instead of the whole history. Without `anti_join` (the raw-append
    ledger proved raw holds none of these change ids: `raw_append_overlaps`) raw is not
    read at all. A flat stage's JSON text is parsed.
    """
    q = d.q
    cols = raw_columns(spec)
    parsed = _JSON_TEXT_COLUMNS if d.flat_stage else ()
    select = ", ".join(f"PARSE_JSON(b.{q(c)})" if c in parsed else f"b.{q(c)}" for c in cols)
    insert = (
        f"INSERT INTO {d.table(s.raw, spec.table)} ({_cols(d, cols)}) "
        f"SELECT {select} FROM {q('sfdc_tmp_batch')} b"
    )
    if not anti_join:
        return insert
    return (
        f"{insert} WHERE NOT EXISTS (SELECT 1 FROM {d.table(s.raw, spec.table)} r "
        f"WHERE r.{q('change_date')} BETWEEN {d.date_literal(dmin)} AND {d.date_literal(dmax)} "
        f"AND r.{q('change_id')} = b.{q('change_id')})"
    )


# The raw-append ledger, sfdc_meta.raw_appends: per raw INSERT and change-id family, the
# rows it appended and their day and record-id ranges, the read (a Bulk job) and the part
# label they came from (docs/engine.md, "The raw-append ledger").
RAW_APPENDS = "raw_appends"
# Change ids are tagged hashes (changes.py): a CDC id hashes ("cdc", event, record), a REST
# snapshot's ends with "rest", Bulk/delete-scan/fill/refresh ids have their own tags. Ids
# of two families can never be equal, so only same-family appends are compared.
FAMILY_OF_SOURCE = {"cdc": "cdc", "rest": "rest"}
OTHER_FAMILY = "bulk"


def family_sql(d: SqlDialect, source: str) -> str:
    """The change-id family of a row whose source column is `source` (an expression)."""
    cases = " ".join(f"WHEN {d.string(v)} THEN {d.string(f)}" for v, f in FAMILY_OF_SOURCE.items())
    return f"CASE {source} {cases} ELSE {d.string(OTHER_FAMILY)} END"


def create_raw_appends(d: SqlDialect, s: SchemaNames) -> str:
    """sfdc_meta.raw_appends: what each raw INSERT appended (the 'already in raw?' ledger)."""
    q = d.q
    return (
        f"CREATE TABLE IF NOT EXISTS {d.table(s.meta, RAW_APPENDS)} ("
        f"{q('object_name')} VARCHAR NOT NULL, {q('batch_id')} VARCHAR NOT NULL, "
        f"{q('read_id')} VARCHAR, {q('label')} VARCHAR, {q('family')} VARCHAR NOT NULL, "
        f"{q('rows')} {d.bigint} NOT NULL, {q('day_min')} DATE NOT NULL, "
        f"{q('day_max')} DATE NOT NULL, {q('id_min')} VARCHAR NOT NULL, "
        f"{q('id_max')} VARCHAR NOT NULL, {q('appended_at')} {d.timestamp} NOT NULL)"
    )


def raw_appends_from_raw(
    d: SqlDialect,
    spec: ObjectSpec,
    s: SchemaNames,
    at: dt.datetime,
    where: str = "",
    read_id: str | None = None,
    label: str | None = None,
) -> str:
    """Ledger rows recomputed from raw, per batch id and family (`where` filters raw).

    Seeds the ledger of a raw table that predates it (no read: compared with everything),
    and records an append whose anti-join skipped rows (its exact counts).
    """
    q = d.q
    read = "NULL" if read_id is None else d.string(read_id)
    lab = "NULL" if label is None else d.string(label)
    family = family_sql(d, q("source"))
    return (
        f"INSERT INTO {d.table(s.meta, RAW_APPENDS)} SELECT {d.string(spec.name)}, "
        f"{q('batch_id')}, {read}, {lab}, {family}, COUNT(*), MIN({q('change_date')}), "
        f"MAX({q('change_date')}), MIN({q('record_id')}), MAX({q('record_id')}), "
        f"{d.timestamp_literal(at)} FROM {d.table(s.raw, spec.table)} "
        f"WHERE {q('batch_id')} IS NOT NULL{where} GROUP BY {q('batch_id')}, {family}"
    )


def insert_raw_append(
    d: SqlDialect,
    spec: ObjectSpec,
    s: SchemaNames,
    batch_id: str,
    read_id: str | None,
    label: str | None,
    family: str,
    rows: int,
    days: tuple[dt.date, dt.date],
    ids: tuple[str, str],
    at: dt.datetime,
) -> str:
    """One ledger row: `rows` rows of `family` appended under `batch_id`."""
    read = "NULL" if read_id is None else d.string(read_id)
    lab = "NULL" if label is None else d.string(label)
    return (
        f"INSERT INTO {d.table(s.meta, RAW_APPENDS)} VALUES ({d.string(spec.name)}, "
        f"{d.string(batch_id)}, {read}, {lab}, {d.string(family)}, {int(rows)}, "
        f"{d.date_literal(days[0])}, {d.date_literal(days[1])}, {d.string(ids[0])}, "
        f"{d.string(ids[1])}, {d.timestamp_literal(at)})"
    )


def raw_append_overlaps(
    d: SqlDialect,
    spec: ObjectSpec,
    s: SchemaNames,
    families: Sequence[tuple[str, dt.date, dt.date, str, str]],
    read_id: str | None,
    label: str | None,
) -> str:
    """How many earlier appends could hold a change id of a chunk with these families.

    `families`: (family, day min, day max, record id min, record id max) of the chunk. An
    append can hold one of its change ids only if it has the same family and overlapping
    days and record ids, and is not another part of the same read (a Bulk job returns
    each record once, so its parts share no change id). Appends of the same part (a
    retry) do count.
    """
    q = d.q
    terms = " OR ".join(
        f"({q('family')} = {d.string(f)} AND {q('day_min')} <= {d.date_literal(dmax)} "
        f"AND {q('day_max')} >= {d.date_literal(dmin)} AND {q('id_min')} <= {d.string(imax)} "
        f"AND {q('id_max')} >= {d.string(imin)})"
        for f, dmin, dmax, imin, imax in families
    )
    same_read = ""
    if read_id is not None and label is not None:
        same_read = (
            f" AND NOT ({q('read_id')} IS NOT DISTINCT FROM {d.string(read_id)} "
            f"AND {q('label')} IS DISTINCT FROM {d.string(label)})"
        )
    return (
        f"SELECT COUNT(*) FROM {d.table(s.meta, RAW_APPENDS)} "
        f"WHERE {q('object_name')} = {d.string(spec.name)} AND ({terms or 'FALSE'}){same_read}"
    )


def _ledger_of_batch(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, batch_id: str) -> str:
    """The raw-append ledger's rows of `batch_id`: `<table> WHERE ...`."""
    q = d.q
    return (
        f"{d.table(s.meta, RAW_APPENDS)} WHERE {q('object_name')} = {d.string(spec.name)} "
        f"AND {q('batch_id')} = {d.string(batch_id)}"
    )


def raw_appended_rows(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, batch_id: str) -> str:
    """How many raw rows the ledger says carry `batch_id` (NULL: none)."""
    return f"SELECT SUM({d.q('rows')}) FROM {_ledger_of_batch(d, spec, s, batch_id)}"


def delete_raw_appends(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, batch_id: str) -> str:
    """Drop the ledger rows of `batch_id` (before recomputing them from raw)."""
    return f"DELETE FROM {_ledger_of_batch(d, spec, s, batch_id)}"


def select_to_apply(
    d: SqlDialect, spec: ObjectSpec, s: SchemaNames, dmin: dt.date, dmax: dt.date
) -> str:
    """The batch's changes not yet applied to current/scd2.

    Applied = its raw row came from a batch in load_log. A change appended to raw by a
    batch that crashed before its merge committed is therefore applied again: that is
    the retry.
    """
    q = d.q
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_apply')} AS "
        f"SELECT {_apply_columns(d, spec, 'b')} FROM {q('sfdc_tmp_batch')} b "
        f"JOIN {d.table(s.raw, spec.table)} r ON r.{q('change_id')} = b.{q('change_id')} "
        f"AND r.{q('change_date')} BETWEEN {d.date_literal(dmin)} AND {d.date_literal(dmax)} "
        f"WHERE b.{q('change_type')} NOT LIKE 'GAP%' "
        f"AND NOT EXISTS (SELECT 1 FROM {d.table(s.meta, 'load_log')} l "
        f"WHERE l.{q('object_name')} = {d.string(spec.name)} "
        f"AND l.{q('batch_id')} = r.{q('batch_id')})"
    )


def select_all_to_apply(d: SqlDialect, spec: ObjectSpec) -> str:
    """`select_to_apply` when raw just took every batch row: the batch minus its gap rows.

    Every row then carries this (unlogged) batch's id in raw, so the join with raw and
    load_log would return the whole batch; skipping it saves a batch-sized join with raw
    (~1 s for a 1M-change backfill batch).
    """
    q = d.q
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_apply')} AS "
        f"SELECT {_apply_columns(d, spec, 'b')} FROM {q('sfdc_tmp_batch')} b "
        f"WHERE b.{q('change_type')} NOT LIKE 'GAP%'"
    )


def touched(d: SqlDialect) -> str:
    """Per touched record: the batch's version range."""
    q = d.q
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_touched')} AS "
        f"SELECT {q('record_id')} AS {q('id')}, MIN({q('version')}) AS {q('vmin')}, "
        f"COUNT(*) AS {q('n')} FROM {q('sfdc_tmp_apply')} GROUP BY {q('record_id')}"
    )


def id_counts(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, id_filter: str | None) -> str:
    """Current's rows and duplicated ids: `COUNT(*)`, `COUNT(*) - COUNT(DISTINCT id)`.

    With `id_filter` (an id list or a subquery: the ids a run touched) it reads only those
    records (DuckDB: the PRIMARY KEY's index; Snowflake: search optimization on `id`);
    None reads the whole table (the nightly check).
    """
    q = d.q
    where = "" if id_filter is None else f" WHERE {q('id')} IN ({id_filter})"
    return (
        f"SELECT COUNT(*), COUNT(*) - COUNT(DISTINCT {q('id')}) "
        f"FROM {d.table(s.current, spec.table)}{where}"
    )


def touched_counts(d: SqlDialect) -> str:
    """How many records the chunk touches, and how many changes it applies to them."""
    q = d.q
    return f"SELECT COUNT(*), SUM({q('n')}) FROM {q('sfdc_tmp_touched')}"


def touched_ids(d: SqlDialect, late_only: bool = False) -> str:
    """The touched records' ids (the late ones only: after `classify`), as a subquery."""
    q = d.q
    if late_only:
        return f"SELECT {q('id')} FROM {q('sfdc_tmp_class')} WHERE {q('is_late')}"
    return f"SELECT {q('id')} FROM {q('sfdc_tmp_touched')}"


def fetch_current(
    d: SqlDialect, spec: ObjectSpec, s: SchemaNames, id_filter: str, append: bool = False
) -> str:
    """The touched records' current rows (`id_filter`: an id list or a subquery).

    `append`: add them to `sfdc_tmp_old` (a further id list of the same chunk).
    """
    q = d.q
    into = (
        f"INSERT INTO {q('sfdc_tmp_old')} "
        if append
        else f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_old')} AS "
    )
    return f"{into}SELECT * FROM {d.table(s.current, spec.table)} WHERE {q('id')} IN ({id_filter})"


def current_holds_any(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, id_list: str) -> str:
    """One row if current holds any of the listed ids, else none (index lookups)."""
    return (
        f"SELECT 1 FROM {d.table(s.current, spec.table)} WHERE {d.q('id')} IN ({id_list}) LIMIT 1"
    )


def current_in_range(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, low: str, high: str) -> str:
    """One row if current holds any id in `[low, high]`, else none.

    For ids beyond every current one (a bootstrap's next Bulk part, in Id order) DuckDB's
    ART index finds no entry and no row is read; `LIMIT 1` stops a scan at its first hit.
    """
    q = d.q
    return (
        f"SELECT 1 FROM {d.table(s.current, spec.table)} "
        f"WHERE {q('id')} BETWEEN {d.string(low)} AND {d.string(high)} LIMIT 1"
    )


def no_current_rows(d: SqlDialect, spec: ObjectSpec, s: SchemaNames) -> str:
    """`fetch_current` when none of the touched records is in current: an empty table."""
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {d.q('sfdc_tmp_old')} AS "
        f"SELECT * FROM {d.table(s.current, spec.table)} WHERE FALSE"
    )


def classify(d: SqlDialect) -> str:
    """Late = the record already holds a version at or after the batch's earliest one.

    New = not in current, with one change in the batch: its one scd2 row and its current
    row are that change (`insert_new_history`, `insert_new_current`), no fold at all; a
    backfill batch is all new (a fill is never new: it makes a current row but no scd2
    row, and with a version below every real one it makes an existing record late).
    Simple = in current, in order, with one change in the batch: its fold is that change
    over the current row, computed without window functions (`fold`'s fast path). Every
    other record takes the windowed fold.
    """
    q = d.q
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_class')} AS "
        f"SELECT tt.{q('id')}, tt.{q('vmin')}, o.{q('_version')} AS {q('old_version')}, "
        f"COALESCE(tt.{q('vmin')} <= o.{q('_version')}, FALSE) AS {q('is_late')}, "
        f"tt.{q('n')} = 1 AND o.{q('id')} IS NOT NULL "
        f"AND NOT COALESCE(tt.{q('vmin')} <= o.{q('_version')}, FALSE) AS {q('is_simple')}, "
        f"tt.{q('n')} = 1 AND o.{q('id')} IS NULL "
        f"AND tt.{q('vmin')} >= '{FIRST_REAL_VERSION}' AS {q('is_new')} "
        f"FROM {q('sfdc_tmp_touched')} tt LEFT JOIN {q('sfdc_tmp_old')} o "
        f"ON o.{q('id')} = tt.{q('id')}"
    )


def refold_apply(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, id_filter: str) -> str:
    """A refold (`apply.refold`): every raw change of the records, as the apply table.

    No change_date bound: a record's first change may lie on any day.
    """
    q = d.q
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_apply')} AS "
        f"SELECT {_apply_columns(d, spec, 'r', from_raw=True)} "
        f"FROM {d.table(s.raw, spec.table)} r WHERE r.{q('record_id')} IN ({id_filter}) "
        f"AND r.{q('change_type')} NOT LIKE 'GAP%'"
    )


def refold_touched(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, id_filter: str) -> str:
    """A refold: the ids any of raw, current or scd2 holds, with no lower version bound.

    `vmin` '' sorts before every version, so `fetch_anchors` finds no anchor and the late
    path rebuilds each record from its first raw change; an id only current or scd2 holds
    (written outside the platform) is touched too, so its rows go.
    """
    q = d.q
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_touched')} AS "
        f"SELECT u.{q('id')}, '' AS {q('vmin')}, COUNT(a.{q('record_id')}) AS {q('n')} "
        f"FROM (SELECT {q('record_id')} AS {q('id')} FROM {q('sfdc_tmp_apply')} "
        f"UNION SELECT {q('id')} FROM {d.table(s.current, spec.table)} "
        f"WHERE {q('id')} IN ({id_filter}) "
        f"UNION SELECT {q('id')} FROM {d.table(s.history, spec.table)} "
        f"WHERE {q('id')} IN ({id_filter})) u "
        f"LEFT JOIN {q('sfdc_tmp_apply')} a ON a.{q('record_id')} = u.{q('id')} "
        f"GROUP BY u.{q('id')}"
    )


def refold_class(d: SqlDialect) -> str:
    """A refold: every touched record is late, without an anchor (`classify`'s columns)."""
    q = d.q
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_class')} AS "
        f"SELECT tt.{q('id')}, tt.{q('vmin')}, o.{q('_version')} AS {q('old_version')}, "
        f"TRUE AS {q('is_late')}, FALSE AS {q('is_simple')}, FALSE AS {q('is_new')} "
        f"FROM {q('sfdc_tmp_touched')} tt LEFT JOIN {q('sfdc_tmp_old')} o "
        f"ON o.{q('id')} = tt.{q('id')}"
    )


def class_counts(d: SqlDialect) -> str:
    """How many touched records are late, and how many new (`classify`)."""
    q = d.q
    return (
        f"SELECT {d.count_if(q('is_late'))}, {d.count_if(q('is_new'))} FROM {q('sfdc_tmp_class')}"
    )


def fetch_anchors(
    d: SqlDialect, spec: ObjectSpec, s: SchemaNames, id_filter: str | None, append: bool = False
) -> str:
    """For each late record, the last scd2 row before its earliest new change (if any).

    `append`: add them to `sfdc_tmp_anchor` (a further id list of the same chunk).
    """
    q = d.q
    if id_filter is None:  # no late record: an empty table, without reading scd2
        return (
            f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_anchor')} AS "
            f"SELECT * FROM {d.table(s.history, spec.table)} WHERE FALSE"
        )
    into = (
        f"INSERT INTO {q('sfdc_tmp_anchor')} "
        if append
        else f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_anchor')} AS "
    )
    return (
        f"{into}"
        f"SELECT h.* FROM {d.table(s.history, spec.table)} h "
        f"JOIN {q('sfdc_tmp_class')} c ON c.{q('id')} = h.{q('id')} AND c.{q('is_late')} "
        f"WHERE h.{q('id')} IN ({id_filter}) AND h.{q('_version')} < c.{q('vmin')} "
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY h.{q('id')} "
        f"ORDER BY h.{q('_version')} DESC NULLS LAST) = 1"
    )


def anchor_range(d: SqlDialect) -> str:
    """Late records without an anchor, and the earliest anchor's valid_from."""
    q = d.q
    return (
        f"SELECT COUNT(*) - COUNT(a.{q('id')}), MIN(a.{q('valid_from')}) "
        f"FROM {q('sfdc_tmp_class')} c LEFT JOIN {q('sfdc_tmp_anchor')} a "
        f"ON a.{q('id')} = c.{q('id')} WHERE c.{q('is_late')}"
    )


def build_seq(
    d: SqlDialect, spec: ObjectSpec, s: SchemaNames, late_filter: str | None, since: dt.date
) -> str:
    """The sequence each touched record is folded over, anchor first.

    In-order record: anchor = its current row (the state before the batch) + the batch's
    changes. Late record: anchor = the scd2 row before the late version + every raw
    change after that anchor (the batch's included: raw was appended first), so the
    record's later versions are recomputed, and nothing else is read.
    """
    q = d.q
    state = spec.state_columns
    all_set = ", ".join(f"TRUE AS {q(c + '__set')}" for c in state)
    sets = _cols(d, [c + "__set" for c in state])
    parts = [
        f"SELECT o.{q('id')}, o.{q('_version')} AS {q('version')}, "
        f"CAST(NULL AS {d.timestamp}) AS {q('version_ts')}, o.{q('_source')} AS {q('source')}, "
        f"TRUE AS {q('is_anchor')}, {_cols(d, state, 'o.')}, {all_set} "
        f"FROM {q('sfdc_tmp_old')} o JOIN {q('sfdc_tmp_class')} c "
        f"ON c.{q('id')} = o.{q('id')} AND NOT c.{q('is_late')} "
        f"AND NOT c.{q('is_simple')} AND NOT c.{q('is_new')}",
        f"SELECT a.{q('id')}, a.{q('_version')}, a.{q('valid_from')}, "
        f"a.{q('_source')}, TRUE, {_cols(d, state, 'a.')}, {all_set} "
        f"FROM {q('sfdc_tmp_anchor')} a",
        f"SELECT b.{q('record_id')}, b.{q('version')}, b.{q('version_ts')}, b.{q('source')}, "
        f"FALSE, {_cols(d, state, 'b.')}, {sets} "
        f"FROM {q('sfdc_tmp_apply')} b JOIN {q('sfdc_tmp_class')} c "
        f"ON c.{q('id')} = b.{q('record_id')} AND NOT c.{q('is_late')} "
        f"AND NOT c.{q('is_simple')} AND NOT c.{q('is_new')}",
    ]
    if late_filter is not None:
        raw_sets = ", ".join(
            d.array_contains(f"r.{q('set_fields')}", name)
            for name in [*(f.name for f in spec.fields), IS_DELETED_FIELD]
        )
        parts.append(
            f"SELECT r.{q('record_id')}, r.{q('version')}, r.{q('version_ts')}, "
            f"r.{q('source')}, FALSE, {_cols(d, state, 'r.')}, {raw_sets} "
            f"FROM {d.table(s.raw, spec.table)} r "
            f"JOIN {q('sfdc_tmp_class')} c "
            f"ON c.{q('id')} = r.{q('record_id')} AND c.{q('is_late')} "
            f"LEFT JOIN {q('sfdc_tmp_anchor')} a ON a.{q('id')} = r.{q('record_id')} "
            f"WHERE r.{q('record_id')} IN ({late_filter}) "
            f"AND r.{q('change_date')} >= {d.date_literal(since)} "
            f"AND r.{q('change_type')} NOT LIKE 'GAP%' "
            f"AND (a.{q('_version')} IS NULL OR r.{q('version')} > a.{q('_version')})"
        )
    return f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_seq')} AS " + " UNION ALL ".join(parts)


def fold(d: SqlDialect, spec: ObjectSpec) -> str:
    """The state after every change of the sequence: per-field last writer in version order.

    For a field f, in version order: `lv` = version of the last change that set f, `lnv`
    = version of the last change that set f to a non-null value, `lval` = that non-null
    value. f = lval if lv = lnv, else null (the last writer wrote an explicit null).
    A row emits an scd2 version when its versioned state differs from the previous row's;
    a fill (version below FIRST_REAL_VERSION, hence first) never emits, and the first
    real change after fills (or after a current row that only fills made) always does.
    Windows share one PARTITION/ORDER, so the engine sorts once.
    """
    q = d.q
    w = (
        f"OVER (PARTITION BY {q('id')} ORDER BY {q('version')} "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    )
    w_plain = f"OVER (PARTITION BY {q('id')} ORDER BY {q('version')})"
    exprs = []
    for c in spec.state_columns:
        sc, vc = q(c + "__set"), q(c)
        expr = (
            f"CASE WHEN MAX(CASE WHEN {sc} THEN {q('version')} END) {w} "
            f"= MAX(CASE WHEN {sc} AND {vc} IS NOT NULL THEN {q('version')} END) {w} "
            f"THEN {d.last_value(f'CASE WHEN {sc} THEN {vc} END')} {w} END"
        )
        if c == IS_DELETED_COLUMN:  # false until a change sets it
            expr = f"COALESCE({expr}, FALSE)"
        exprs.append(f"{expr} AS {vc}")
    # The hash (what makes a version) leaves out SystemModstamp: spec.UNVERSIONED_COLUMNS.
    versioned = _cols(d, spec.versioned_columns)
    general = (
        f"WITH f1 AS (SELECT {q('id')}, {q('version')}, {q('version_ts')}, {q('source')}, "
        f"{q('is_anchor')}, {', '.join(exprs)} FROM {q('sfdc_tmp_seq')}), "
        f"f2 AS (SELECT *, {d.hash(versioned)} AS {q('state_hash')} FROM f1) "
        f"SELECT *, "
        f"(NOT {q('is_anchor')} AND {q('version')} >= '{FIRST_REAL_VERSION}' "
        f"AND (LAG({q('state_hash')}) {w_plain} IS NULL "
        f"OR LAG({q('version')}) {w_plain} < '{FIRST_REAL_VERSION}' "
        f"OR LAG({q('state_hash')}) {w_plain} <> {q('state_hash')})) AS {q('emits')}, "
        f"ROW_NUMBER() OVER (PARTITION BY {q('id')} ORDER BY {q('version')} {d.desc()}) = 1 "
        f"AS {q('is_last')}, FALSE AS {q('is_simple')} FROM f2"
    )
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_fold')} AS "
        f"{general} UNION ALL {_fold_simple(d, spec)}"
    )


def _fold_simple(d: SqlDialect, spec: ObjectSpec) -> str:
    """Fold rows of the simple records (`classify`): the anchor (current row) and the change.

    One change over the current row: a field is the change's value if the change sets
    it, else the current one; no window, no sort (a 1M-row backfill batch is all simple).
    Same columns, in the same order, as the windowed fold.
    """
    q = d.q
    state = spec.state_columns
    new = []
    for c in state:
        expr = f"CASE WHEN b.{q(c + '__set')} THEN b.{q(c)} ELSE o.{q(c)} END"
        if c == IS_DELETED_COLUMN:  # false until a change sets it
            expr = f"COALESCE({expr}, FALSE)"
        new.append(f"{expr} AS {q(c)}")
    olds = ", ".join(f"o.{q(c)} AS {q('o__' + c)}" for c in state)
    s1 = (
        f"SELECT b.{q('record_id')} AS {q('id')}, b.{q('version')}, b.{q('version_ts')}, "
        f"b.{q('source')}, o.{q('id')} IS NOT NULL AS {q('has_old')}, "
        f"o.{q('_version')} AS {q('o__version')}, o.{q('_source')} AS {q('o__source')}, "
        f"{', '.join(new)}, {olds} "
        f"FROM {q('sfdc_tmp_apply')} b JOIN {q('sfdc_tmp_class')} c "
        f"ON c.{q('id')} = b.{q('record_id')} AND c.{q('is_simple')} "
        f"LEFT JOIN {q('sfdc_tmp_old')} o ON o.{q('id')} = b.{q('record_id')}"
    )
    versioned = spec.versioned_columns
    old_hash = d.hash(_cols(d, ["o__" + c for c in versioned]))
    s2 = (
        f"SELECT *, {d.hash(_cols(d, versioned))} AS {q('state_hash')}, "
        f"CASE WHEN {q('has_old')} THEN {old_hash} END AS {q('old_hash')} FROM ({s1}) s1"
    )
    return (
        f"SELECT * FROM (WITH s2 AS ({s2}) "
        f"SELECT {q('id')}, {q('version')}, {q('version_ts')}, {q('source')}, "
        f"FALSE AS {q('is_anchor')}, {_cols(d, state)}, {q('state_hash')}, "
        f"({q('version')} >= '{FIRST_REAL_VERSION}' AND (NOT {q('has_old')} "
        f"OR {q('o__version')} < '{FIRST_REAL_VERSION}' "
        f"OR {q('state_hash')} <> {q('old_hash')})) AS {q('emits')}, "
        f"TRUE AS {q('is_last')}, TRUE AS {q('is_simple')} FROM s2 "
        f"UNION ALL "
        f"SELECT {q('id')}, {q('o__version')}, CAST(NULL AS {d.timestamp}), {q('o__source')}, "
        f"TRUE, {_cols(d, ['o__' + c for c in state])}, {q('old_hash')}, FALSE, FALSE, TRUE "
        f"FROM s2 WHERE {q('has_old')}) simple"
    )


def history_rows(d: SqlDialect) -> str:
    """Anchors and emitted states, with valid_to = the next one's valid_from.

    Windowed for the general records; a simple record has at most an anchor and one
    emitted row, so its anchor's next version is found by a join instead of a sort.
    """
    q = d.q
    w = f"OVER (PARTITION BY {q('id')} ORDER BY {q('version')})"
    f = q("sfdc_tmp_fold")
    return (
        f"CREATE OR REPLACE {d.temp} TABLE {q('sfdc_tmp_hist')} AS "
        f"SELECT *, LEAD({q('version_ts')}) {w} AS {q('next_ts')}, "
        f"LEAD({q('version')}) {w} IS NULL AS {q('now_current')} "
        f"FROM {f} WHERE NOT {q('is_simple')} AND ({q('is_anchor')} OR {q('emits')}) "
        f"UNION ALL "
        f"SELECT a.*, e.{q('version_ts')}, e.{q('id')} IS NULL FROM {f} a "
        f"LEFT JOIN {f} e ON e.{q('id')} = a.{q('id')} AND e.{q('is_simple')} "
        f"AND e.{q('emits')} WHERE a.{q('is_simple')} AND a.{q('is_anchor')} "
        f"UNION ALL "
        f"SELECT *, CAST(NULL AS {d.timestamp}), TRUE FROM {f} "
        f"WHERE {q('is_simple')} AND {q('emits')}"
    )


def delete_history_after_anchor(
    d: SqlDialect, spec: ObjectSpec, s: SchemaNames, late_filter: str
) -> str:
    """Drop the late records' scd2 rows after their anchor (all of them if none)."""
    q = d.q
    h = d.table(s.history, spec.table)
    return (
        f"DELETE FROM {h} USING (SELECT c.{q('id')}, a.{q('_version')} AS {q('anchor_version')} "
        f"FROM {q('sfdc_tmp_class')} c LEFT JOIN {q('sfdc_tmp_anchor')} a "
        f"ON a.{q('id')} = c.{q('id')} WHERE c.{q('is_late')}) d "
        f"WHERE {h}.{q('id')} IN ({late_filter}) AND {h}.{q('id')} = d.{q('id')} "
        f"AND (d.{q('anchor_version')} IS NULL OR {h}.{q('_version')} > d.{q('anchor_version')})"
    )


def _anchors(d: SqlDialect, late: bool) -> str:
    q = d.q
    flag = "" if late else "NOT "
    return (
        f"(SELECT n.* FROM {q('sfdc_tmp_hist')} n JOIN {q('sfdc_tmp_class')} c "
        f"ON c.{q('id')} = n.{q('id')} AND {flag}c.{q('is_late')} WHERE n.{q('is_anchor')}) n"
    )


def close_open_versions(
    d: SqlDialect, spec: ObjectSpec, s: SchemaNames, id_filter: str, by_index: bool = False
) -> str:
    """In-order records that changed state: close their open scd2 row.

    `by_index` (for `point_lookups` dialects): a filter on `is_current` stops DuckDB from
    answering `id IN (...)` from the ART index (it scans all of scd2: 0.5-2 s at 10M
    rows), so the open row is picked in the SET instead: every scd2 row of those records
    is rewritten, the open one with its new valid_to, the closed ones with their own
    values. Measured with 10K ids: index 0.26 s / scan 0.10 s at 1M rows, 0.39 s /
    0.53 s at 10M; `apply` picks per table size.
    """
    q = d.q
    h = d.table(s.history, spec.table)
    if by_index:
        return (
            f"UPDATE {h} SET {q('valid_to')} = CASE WHEN {h}.{q('is_current')} "
            f"THEN n.{q('next_ts')} ELSE {h}.{q('valid_to')} END, {q('is_current')} = FALSE "
            f"FROM {_anchors(d, late=False)} "
            f"WHERE {h}.{q('id')} IN ({id_filter}) AND NOT n.{q('now_current')} "
            f"AND {h}.{q('id')} = n.{q('id')}"
        )
    return (
        f"UPDATE {h} SET {q('valid_to')} = n.{q('next_ts')}, {q('is_current')} = FALSE "
        f"FROM {_anchors(d, late=False)} "
        f"WHERE {h}.{q('id')} IN ({id_filter}) AND NOT n.{q('now_current')} "
        f"AND {h}.{q('id')} = n.{q('id')} AND {h}.{q('is_current')}"
    )


def reset_anchor_versions(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, late_filter: str) -> str:
    """Late records: the anchor row's validity ends at the next rebuilt version (or stays open)."""
    q = d.q
    h = d.table(s.history, spec.table)
    return (
        f"UPDATE {h} SET {q('valid_to')} = n.{q('next_ts')}, "
        f"{q('is_current')} = n.{q('now_current')} "
        f"FROM {_anchors(d, late=True)} "
        f"WHERE {h}.{q('id')} IN ({late_filter}) "
        f"AND {h}.{q('id')} = n.{q('id')} AND {h}.{q('_version')} = n.{q('version')}"
    )


def insert_history(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, synced_at: dt.datetime) -> str:
    """The new scd2 rows."""
    q = d.q
    cols = ["id", *spec.state_columns, "_version", "_source", "valid_from", "valid_to"]
    cols += ["is_current", "_synced_at"]
    return (
        f"INSERT INTO {d.table(s.history, spec.table)} ({_cols(d, cols)}) "
        f"SELECT {q('id')}, {_cols(d, spec.state_columns)}, {q('version')}, {q('source')}, "
        f"{q('version_ts')}, {q('next_ts')}, {q('now_current')}, "
        f"{d.timestamp_literal(synced_at)} "
        f"FROM {q('sfdc_tmp_hist')} WHERE NOT {q('is_anchor')}"
    )


def delete_current(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, id_filter: str) -> str:
    """Remove the touched records' current rows (re-inserted by insert_current)."""
    return f"DELETE FROM {d.table(s.current, spec.table)} WHERE {d.q('id')} IN ({id_filter})"


def insert_current(d: SqlDialect, spec: ObjectSpec, s: SchemaNames, synced_at: dt.datetime) -> str:
    """The touched records' new current rows: the last state of each fold."""
    q = d.q
    cols = ["id", *spec.state_columns, "_version", "_source", "_synced_at", READ_WHOLE_COLUMN]
    rw = q(READ_WHOLE_COLUMN)
    # The marker: TRUE if this chunk applies a whole change, else the old row's (NULL
    # stays unknown), FALSE without one.
    marker = (
        f"CASE WHEN w.{q('id')} IS NOT NULL THEN TRUE WHEN o.{q('id')} IS NULL THEN FALSE "
        f"ELSE o.{rw} END"
    )
    return (
        f"INSERT INTO {d.table(s.current, spec.table)} ({_cols(d, cols)}) "
        f"SELECT f.{q('id')}, {_cols(d, spec.state_columns, 'f.')}, f.{q('version')}, "
        f"f.{q('source')}, {d.timestamp_literal(synced_at)}, {marker} "
        f"FROM {q('sfdc_tmp_fold')} f LEFT JOIN {q('sfdc_tmp_old')} o ON o.{q('id')} = f.{q('id')} "
        f"LEFT JOIN (SELECT DISTINCT {q('record_id')} AS {q('id')} FROM {q('sfdc_tmp_apply')} "
        f"WHERE {q(WHOLE_FLAG)}) w ON w.{q('id')} = f.{q('id')} WHERE f.{q('is_last')}"
    )


def _new_changes(d: SqlDialect, all_new: bool) -> str:
    """The changes of the new records (`classify`); all of the apply table when all are new."""
    q = d.q
    if all_new:  # no join: a backfill batch is written straight from the apply table
        return f"{q('sfdc_tmp_apply')} b"
    return (
        f"{q('sfdc_tmp_apply')} b JOIN {q('sfdc_tmp_class')} c "
        f"ON c.{q('id')} = b.{q('record_id')} AND c.{q('is_new')}"
    )


def _new_state(d: SqlDialect, spec: ObjectSpec) -> str:
    """A new record's state: the fields its one change sets (is_deleted false unless set)."""
    q = d.q
    exprs = []
    for c in spec.state_columns:
        expr = f"CASE WHEN b.{q(c + '__set')} THEN b.{q(c)} END"
        if c == IS_DELETED_COLUMN:
            expr = f"COALESCE({expr}, FALSE)"
        exprs.append(expr)
    return ", ".join(exprs)


def insert_new_history(
    d: SqlDialect, spec: ObjectSpec, s: SchemaNames, synced_at: dt.datetime, all_new: bool
) -> str:
    """New records: their one scd2 row, open from the change's version (no fold, no sort)."""
    q = d.q
    cols = ["id", *spec.state_columns, "_version", "_source", "valid_from", "valid_to"]
    cols += ["is_current", "_synced_at"]
    return (
        f"INSERT INTO {d.table(s.history, spec.table)} ({_cols(d, cols)}) "
        f"SELECT b.{q('record_id')}, {_new_state(d, spec)}, b.{q('version')}, b.{q('source')}, "
        f"b.{q('version_ts')}, CAST(NULL AS {d.timestamp}), TRUE, "
        f"{d.timestamp_literal(synced_at)} FROM {_new_changes(d, all_new)}"
    )


def insert_new_current(
    d: SqlDialect, spec: ObjectSpec, s: SchemaNames, synced_at: dt.datetime, all_new: bool
) -> str:
    """New records: their current row is their one change."""
    q = d.q
    cols = ["id", *spec.state_columns, "_version", "_source", "_synced_at", READ_WHOLE_COLUMN]
    return (
        f"INSERT INTO {d.table(s.current, spec.table)} ({_cols(d, cols)}) "
        f"SELECT b.{q('record_id')}, {_new_state(d, spec)}, b.{q('version')}, b.{q('source')}, "
        f"{d.timestamp_literal(synced_at)}, b.{q(WHOLE_FLAG)} FROM {_new_changes(d, all_new)}"
    )


def counts_new(d: SqlDialect, all_new: bool) -> str:
    """New records: how many, and how many of them arrive deleted."""
    q = d.q
    deleted = d.count_if(f"b.{q(IS_DELETED_COLUMN + '__set')} AND b.{q(IS_DELETED_COLUMN)}")
    return f"SELECT COUNT(*), {deleted} FROM {_new_changes(d, all_new)}"


def counts(d: SqlDialect, spec: ObjectSpec) -> str:
    """inserted / updated / deleted / noop / late / history_rows for the batch."""
    q = d.q
    dc = q(IS_DELETED_COLUMN)
    old, new_hash = f"c.{q('old_version')}", f"f.{q('state_hash')}"
    old_hash = d.hash(_cols(d, spec.versioned_columns, "o."))
    exists = f"o.{q('id')} IS NOT NULL"
    return (
        f"SELECT "
        f"{d.count_if(f'{old} IS NULL')}, "
        f"{d.count_if(f'{old} IS NOT NULL AND {exists} AND {old_hash} <> {new_hash}')}, "
        f"{d.count_if(f'f.{dc} AND NOT COALESCE(o.{dc}, FALSE)')}, "
        f"{d.count_if(f'{exists} AND {old_hash} = {new_hash}')}, "
        f"{d.count_if('c.' + q('is_late'))}, "
        f"(SELECT COUNT(*) FROM {q('sfdc_tmp_hist')} WHERE NOT {q('is_anchor')}) "
        f"FROM {q('sfdc_tmp_class')} c "
        f"JOIN {q('sfdc_tmp_fold')} f ON f.{q('id')} = c.{q('id')} AND f.{q('is_last')} "
        f"LEFT JOIN {q('sfdc_tmp_old')} o ON o.{q('id')} = c.{q('id')}"
    )


def insert_load_log(
    d: SqlDialect,
    s: SchemaNames,
    batch_id: str,
    object_name: str,
    at: dt.datetime,
    values: Sequence[int],
) -> str:
    """Record the batch as applied (same transaction as the writes)."""
    cols = _cols(d, ["batch_id", "object_name", "applied_at", *LOAD_LOG_COUNTS])
    vals = ", ".join(str(int(v)) for v in values)
    return (
        f"INSERT INTO {d.table(s.meta, 'load_log')} ({cols}) "
        f"VALUES ({d.string(batch_id)}, {d.string(object_name)}, "
        f"{d.timestamp_literal(at)}, {vals})"
    )

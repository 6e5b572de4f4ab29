"""apply_batch: one change batch -> raw, current and scd2 (DESIGN §3-§4).

Steps, and what a crash between them leaves:
1. load the batch into a temp stage table and dedupe it by change_id;
2. append to raw what raw does not hold yet (one INSERT: atomic, idempotent);
3. read, without writing: which changes are not yet applied (their raw row's batch is not
   in sfdc_meta.load_log), the touched records' current rows, the scd2 anchor of late
   records, and fold anchor + changes per record;
4. in one transaction: scd2 deletes/updates/inserts, current DELETE + INSERT of the
   touched ids, and the load_log row.
A crash after 2 leaves raw ahead; the rerun finds those changes unapplied (their batch is
not logged) and applies them. A crash in 4 rolls back to the old state. Either way the
rerun converges on the same tables.

Cost: every read and write is driven by the batch's record ids (the ART index on DuckDB),
so a batch costs O(batch), not O(table). A late change additionally reads its record's
raw changes after the scd2 anchor (see docs/engine.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from resources.warehouse import RECORD_ID_RE, Warehouse
from sync_engine.changes import conform_batch
from sync_engine.dialect import sql_for
from sync_engine.spec import IS_DELETED_COLUMN, IS_DELETED_FIELD, ObjectSpec

log = logging.getLogger(__name__)

# Up to this many touched ids, DuckDB reads/writes current and scd2 through an inlined
# `id IN ('...')` list, answered by the ART index; measured on 1M/10M-row tables, the
# list costs ~20 us per id to plan, the same as hash-joining a ~7M-row id column, so
# larger batches (comparable to the table anyway) use a hash join instead.
LITERAL_ID_LIMIT = 20_000
# Closing scd2 versions: DuckDB scans scd2 at ~0.05 s per 1M rows, or reads a touched id's
# rows through the ART index at ~30 us per id (10K ids: 0.10 s scan / 0.26 s index at 1M
# rows, 0.53 s / 0.39 s at 10M); the index wins once scd2 holds this many rows per id.
INDEX_CLOSE_ROWS_PER_ID = 600
_BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


@dataclass
class ApplyResult:
    """Counts of one apply_batch call (also written to sfdc_meta.load_log)."""

    batch_id: str
    changes: int = 0
    raw_inserted: int = 0
    applied: int = 0
    records: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    noop: int = 0
    late: int = 0
    history_rows: int = 0

    def as_dict(self) -> dict[str, int | str]:
        """Plain dict (for Dagster metadata)."""
        return asdict(self)


def _after_raw_append() -> None:
    """Seam between the raw append and the merge; the crash tests break in here."""


def default_batch_id(batch: pa.Table) -> str:
    """Deterministic id of a batch's content: re-running the same batch keeps its id."""
    ids = pc.unique(batch.column("change_id")).to_pylist()
    return "b" + hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:31]


def _stage(
    spec: ObjectSpec, batch: pa.Table, batch_id: str, now: dt.datetime, dialect: str
) -> pa.Table:
    """The batch plus batch_id/ingested_at defaults and one `<col>__set` flag per state column."""
    df = pl.from_arrow(batch)
    assert isinstance(df, pl.DataFrame)
    flags = [
        pl.col("set_fields").list.contains(pl.lit(f.name)).alias(f.column + "__set")
        for f in spec.fields
    ]
    flags.append(
        pl.col("set_fields")
        .list.contains(pl.lit(IS_DELETED_FIELD))
        .alias(IS_DELETED_COLUMN + "__set")
    )
    df = df.with_columns(
        *flags,
        # The applied-ledger check keys on raw.batch_id, so it must be this apply's id.
        pl.lit(batch_id).alias("batch_id"),
        pl.col("ingested_at").fill_null(pl.lit(now)),
    )
    if dialect == "snowflake":
        # Snowflake's stage holds set_fields as JSON text; raw parses it into an ARRAY.
        text = [json.dumps(v) for v in batch.column("set_fields").to_pylist()]
        df = df.with_columns(pl.Series("set_fields", text, dtype=pl.String))
    return df.to_arrow()


def _check_ids(spec: ObjectSpec, batch: pa.Table) -> None:
    ok = pc.match_substring_regex(batch.column("record_id"), RECORD_ID_RE.pattern)
    bad = batch.num_rows - pc.sum(ok.fill_null(False)).as_py()
    if bad:
        # Never log the values themselves: ids of a PII-bearing object are personal data.
        raise ValueError(
            f"{spec.name}: {bad} change rows have a malformed record_id (expected 15 or 18 "
            "alphanumerics); validate the batch (quarantine) before apply_batch"
        )


@dataclass
class _Staged:
    """A conformed batch loaded into the dedupe stage, and its day range."""

    batch_id: str
    rows: int
    dmin: dt.date | None = None
    dmax: dt.date | None = None


def _stage_batch(
    warehouse: Warehouse,
    spec: ObjectSpec,
    batch: pa.Table | pl.DataFrame,
    batch_id: str | None,
    now: dt.datetime,
) -> _Staged:
    """Conform, id and stage `batch` (deduped by change_id) in `sfdc_tmp_batch`."""
    sql = sql_for(warehouse)
    if isinstance(batch, pl.DataFrame):
        batch = batch.to_arrow()
    batch = conform_batch(spec, batch)
    if batch_id is not None and not _BATCH_ID_RE.match(batch_id):
        raise ValueError(f"batch_id {batch_id!r} must match {_BATCH_ID_RE.pattern}")
    # The id always ends with the content hash: a label reused for different content must
    # not make the ledger believe new changes were already applied.
    content = default_batch_id(batch) if batch.num_rows else "empty"
    staged = _Staged(f"{batch_id}-{content}" if batch_id else content, batch.num_rows)
    if batch.num_rows == 0:
        return staged
    _check_ids(spec, batch)
    stage = _stage(spec, batch, staged.batch_id, now, warehouse.dialect)
    staged.dmin = pc.min(batch.column("change_date")).as_py()
    staged.dmax = pc.max(batch.column("change_date")).as_py()
    if pc.count_distinct(batch.column("change_id")).as_py() == batch.num_rows:
        # Already one row per change_id (the usual case): load it as the deduped batch and
        # skip dedupe_batch's window over it (~1 s for a 1M-row batch).
        warehouse.load_temp_table("sfdc_tmp_batch", sql.stage_ddl(spec), stage)
        return staged
    warehouse.load_temp_table("sfdc_tmp_stage", sql.stage_ddl(spec), stage)
    warehouse.execute(sql.dedupe_batch())
    return staged


def _raw_took_all(warehouse: Warehouse, spec: ObjectSpec, batch_id: str, inserted: int) -> bool:
    """Did raw just take every deduped batch row, for a batch not in load_log?

    Then every row's raw copy carries this unlogged batch id: all of them are to apply.
    """
    sql = sql_for(warehouse)
    if inserted <= 0:
        return False
    rows = warehouse.query(f"SELECT COUNT(*) FROM {sql.q('sfdc_tmp_batch')}")[0][0]
    if rows != inserted:
        return False
    log_table = sql.t(warehouse.schema_names.meta, "load_log")
    logged = warehouse.query(
        f"SELECT COUNT(*) FROM {log_table} WHERE {sql.q('object_name')} = '{spec.name}' "
        f"AND {sql.q('batch_id')} = '{batch_id}'"
    )[0][0]
    return logged == 0


def _history_rows(warehouse: Warehouse, spec: ObjectSpec) -> int:
    """DuckDB's row count estimate of the object's scd2 table (catalog only, no scan)."""
    rows = warehouse.query(
        "SELECT estimated_size FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
        [warehouse.schema_names.history, spec.table],
    )
    return int(rows[0][0]) if rows else 0


def append_raw(
    warehouse: Warehouse,
    spec: ObjectSpec,
    batch: pa.Table | pl.DataFrame,
    *,
    batch_id: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Append `batch` to raw only (idempotent); returns the rows raw did not hold yet.

    The raw layer's own step, so a blocking check can sit between raw and current:
    `apply_batch` with the same batch and `batch_id` later finds these rows in raw and
    merges them (its own raw insert is then a no-op).
    """
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    staged = _stage_batch(warehouse, spec, batch, batch_id, now)
    if not staged.rows:
        return 0
    sql = sql_for(warehouse)
    return warehouse.execute(sql.insert_raw(spec, warehouse.schema_names, staged.dmin, staged.dmax))


def apply_batch(
    warehouse: Warehouse,
    spec: ObjectSpec,
    batch: pa.Table | pl.DataFrame,
    *,
    batch_id: str | None = None,
    now: dt.datetime | None = None,
) -> ApplyResult:
    """Apply a change batch to raw, current and scd2 of `spec`'s object.

    `spec` is the merge spec from `registry.sync_schema` (described + removed fields), and
    the tables must exist (sync_schema creates them). `batch` follows
    `changes.batch_schema(spec)`; polars frames are accepted. The batch id is a hash of the
    batch's change ids (after `batch_id`, a label, when given), so a retried batch keeps
    its id; it overrides the batch's own batch_id column. Returns the counts.

    One object's batches must be applied one at a time (a Dagster concurrency pool per
    object): the reads before the write transaction assume no concurrent writer.
    """
    sql = sql_for(warehouse)
    s = warehouse.schema_names
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    staged = _stage_batch(warehouse, spec, batch, batch_id, now)
    batch_id, dmin, dmax = staged.batch_id, staged.dmin, staged.dmax
    result = ApplyResult(batch_id=batch_id, changes=staged.rows)
    if not staged.rows:
        return result
    result.raw_inserted = warehouse.execute(sql.insert_raw(spec, s, dmin, dmax))
    _after_raw_append()

    if _raw_took_all(warehouse, spec, batch_id, result.raw_inserted):
        warehouse.execute(sql.select_all_to_apply())
    else:
        warehouse.execute(sql.select_to_apply(spec, s, dmin, dmax))
    warehouse.execute(sql.touched())
    touched = [
        r[0] for r in warehouse.query(f"SELECT {sql.q('id')} FROM {sql.q('sfdc_tmp_touched')}")
    ]
    result.records = len(touched)
    if not touched:
        log.info("%s batch %s: nothing new to apply", spec.name, batch_id)
        return result
    result.applied = warehouse.query(f"SELECT COUNT(*) FROM {sql.q('sfdc_tmp_apply')}")[0][0]

    use_literals = warehouse.dialect == "duckdb" and len(touched) <= LITERAL_ID_LIMIT
    id_filter = (
        sql.id_list(touched)
        if use_literals
        else f"SELECT {sql.q('id')} FROM {sql.q('sfdc_tmp_touched')}"
    )
    warehouse.execute(sql.fetch_current(spec, s, id_filter))
    warehouse.execute(sql.classify())
    late = [
        r[0]
        for r in warehouse.query(
            f"SELECT {sql.q('id')} FROM {sql.q('sfdc_tmp_class')} WHERE {sql.q('is_late')}"
        )
    ]
    late_filter = None
    since = dt.date(1970, 1, 1)
    if late:
        late_filter = (
            sql.id_list(late)
            if use_literals
            else f"SELECT {sql.q('id')} FROM {sql.q('sfdc_tmp_class')} WHERE {sql.q('is_late')}"
        )
    warehouse.execute(sql.fetch_anchors(spec, s, late_filter))
    if late:
        # Raw rows after the anchor have change_date >= the anchor's day; a late record
        # without an anchor is rebuilt from its first change.
        unanchored, first = warehouse.query(
            f"SELECT COUNT(*) - COUNT(a.{sql.q('id')}), MIN(a.{sql.q('valid_from')}) "
            f"FROM {sql.q('sfdc_tmp_class')} c LEFT JOIN {sql.q('sfdc_tmp_anchor')} a "
            f"ON a.{sql.q('id')} = c.{sql.q('id')} WHERE c.{sql.q('is_late')}"
        )[0]
        if not unanchored and first is not None:
            since = first.date()
    warehouse.execute(sql.build_seq(spec, s, late_filter, since))
    warehouse.execute(sql.fold(spec))
    warehouse.execute(sql.history_rows())
    counts = [int(v or 0) for v in warehouse.query(sql.counts(spec))[0]]
    result.inserted, result.updated, result.deleted, result.noop, result.late = counts[:5]
    result.history_rows = counts[5]

    warehouse.begin()
    try:
        if late_filter is not None:
            warehouse.execute(sql.delete_history_after_anchor(spec, s, late_filter))
            warehouse.execute(sql.reset_anchor_versions(spec, s, late_filter))
        by_index = use_literals and _history_rows(warehouse, spec) > INDEX_CLOSE_ROWS_PER_ID * len(
            touched
        )
        warehouse.execute(sql.close_open_versions(spec, s, id_filter, by_index=by_index))
        warehouse.execute(sql.insert_history(spec, s, now))
        warehouse.execute(sql.delete_current(spec, s, id_filter))
        warehouse.execute(sql.insert_current(spec, s, now))
        log_values = [getattr(result, c) for c in sql.LOAD_LOG_COUNTS]
        warehouse.execute(sql.insert_load_log(s, batch_id, spec.name, now, log_values))
        warehouse.commit()
    except BaseException:
        warehouse.rollback()
        raise
    log.info("%s batch %s applied: %s", spec.name, batch_id, result.as_dict())
    return result

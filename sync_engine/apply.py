"""apply_batch: one change batch -> raw, current and scd2 (DESIGN §3-§4).

Steps, and what a crash between them leaves:
1. stage the batch (DuckDB: its Arrow buffers in place; else a temp table), deduped by
   change_id;
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

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import TypeAlias

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sync_engine import statements as st
from sync_engine.changes import conform_batch
from sync_engine.dialect import SqlDialect, dialect_of
from sync_engine.in_flight import in_flight
from sync_engine.spec import IS_DELETED_COLUMN, IS_DELETED_FIELD, ObjectSpec
from sync_engine.warehouse import SchemaNames, Warehouse

log = logging.getLogger(__name__)

# Up to this many touched ids, DuckDB reads/writes current and scd2 through an inlined
# `id IN ('...')` list, answered by the ART index; measured on 1M/10M-row tables, the
# list costs ~20 us per id to plan, the same as hash-joining a ~7M-row id column, so
# larger batches (comparable to the table anyway) use a hash join instead.
LITERAL_ID_LIMIT = 20_000
# Above LITERAL_ID_LIMIT touched ids, a hash join with the touched-id temp table scans
# current and scd2 whole: O(table) per chunk (a 50K-record poll part read all of a 10M-row
# table three times). So once the table holds at least this many rows per touched id, the
# ids stay inlined, in lists of LITERAL_ID_LIMIT, one statement per list (index lookups:
# rows read = the touched records'); only a chunk comparable to the table (a backfill into
# a small or empty one) takes the join. The price is time: measured with a 50K-record poll
# part (2 shared cores, load ~4-5), the lists cost ~25-65 us per id per statement (at 10M
# rows fetch 3.3 s, scd2 close 1.7 s, DELETE 1.3 s: the run 9.2 s, against 5.2 s with the
# join at load ~3; at 1M 6.8-9.5 s against 2.5-8.0 s), the join ~0.1 us per table row; the
# lists win in time from a few hundred rows per id on (Task/Event's ~500M rows). At 100,
# the 1M-row poll kept the join (3.6 s) but the statements a run issues then depend on the
# table's size; the bar (issue 11) is rows read per run growing with the batch only.
LIST_MIN_ROWS_PER_ID = 10
# A large chunk's ids looked up first (`_none_in_current`): ~30 us each through the index.
PROBE_SAMPLE = 64
# Closing scd2 versions: DuckDB scans scd2 at ~0.05 s per 1M rows, or reads a touched id's
# rows through the ART index at ~30 us per id (10K ids: 0.10 s scan / 0.26 s index at 1M
# rows, 0.53 s / 0.39 s at 10M); the index wins once scd2 holds this many rows per id.
INDEX_CLOSE_ROWS_PER_ID = 600
# Batches above this many changes are applied in chunks of whole records, each its own
# batch, so temp tables and conversions are a chunk's size: a 1M-row backfill batch in one
# piece peaked at 3.1-3.4 GB RSS (1.3 GB chunked, the caller's 0.7 GB frame included), and
# under a 1 GB memory_limit its temp tables spilled (loading it took 1.9 s instead of 0.7 s).
# A 200K-row chunk's statements take ~1.4 s, against ~0.1 s for those whose cost is fixed.
CHUNK_ROWS = 200_000
# DuckDB keeps the rows of a commit smaller than a row group (122,880 rows) in memory and in
# the WAL until a checkpoint, and the resource's 1 GB checkpoint_threshold (kept for CDC
# batches) let a backfill in 100K-row parts pile up ~1 GB of them: peak RSS 1.8 GB for 1M
# records. After a call that wrote at least CHECKPOINT_ROWS rows (raw + scd2 + current: a
# landed 50K-row Bulk part does, a 10K-change CDC batch does not), a WAL of
# CHECKPOINT_WAL_BYTES or more is checkpointed. Measured, 1M records landed in 50K-row
# parts (append_raw, then apply_batch): a checkpoint after every call cost ~0.3 s each,
# 12.5 s in all; at 256 MB of WAL 19 s and 960 MB peak RSS, at 128 MB 21 s and 820 MB.
CHECKPOINT_ROWS = 50_000
CHECKPOINT_WAL_BYTES = 128 * 2**20
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


# ApplyResult's counts, summed over a batch's chunks.
_COUNTS = tuple(f.name for f in fields(ApplyResult) if f.name != "batch_id")


def _after_raw_append() -> None:
    """Seam between the raw append and the merge; the crash tests break in here."""


def _content_id(change_ids: pa.Array | pa.ChunkedArray, rows: int) -> tuple[str, bool]:
    """Deterministic id of a batch's content, and whether its change_ids are all distinct.

    The id is sha256 over the sorted distinct change ids, newline-joined (the id
    `default_batch_id` always gave), computed on Arrow buffers: no Python string per row.
    """
    ids = pc.unique(change_ids.cast(pa.large_string()))
    ids = ids.take(pc.sort_indices(ids))
    empty, newline = pa.scalar("", pa.large_string()), pa.scalar("\n", pa.large_string())
    lines = pc.binary_join_element_wise(ids, empty, newline)
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    offsets = offsets[lines.offset : lines.offset + len(lines) + 1]
    data = memoryview(lines.buffers()[2])[int(offsets[0]) : int(offsets[-1]) - 1]
    return "b" + hashlib.sha256(data).hexdigest()[:31], len(ids) == rows


def default_batch_id(batch: pa.Table) -> str:
    """Deterministic id of a batch's content: re-running the same batch keeps its id."""
    return _content_id(batch.column("change_id"), batch.num_rows)[0]


def _stage(
    spec: ObjectSpec, batch: pa.Table, batch_id: str, now: dt.datetime, d: SqlDialect
) -> pa.Table:
    """The batch with this apply's batch_id and the ingested_at default.

    A flat stage (Snowflake's upload) also gets one `<col>__set` flag per state column and
    set_fields as JSON text; otherwise (DuckDB) the flags are computed in SQL
    (`statements.select_to_apply`), so the stage is the batch's own buffers plus two
    columns.
    """
    # The applied-ledger check keys on raw.batch_id, so it must be this apply's id.
    ingested = batch.column("ingested_at")
    batch = batch.set_column(
        batch.schema.get_field_index("batch_id"),
        "batch_id",
        pa.repeat(pa.scalar(batch_id, pa.string()), batch.num_rows),
    ).set_column(
        batch.schema.get_field_index("ingested_at"),
        "ingested_at",
        pc.fill_null(ingested, pa.scalar(now, ingested.type)),
    )
    if not d.flat_stage:
        return batch
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
    # The flat stage holds set_fields as JSON text; raw parses it into an ARRAY.
    text = [json.dumps(v) for v in batch.column("set_fields").to_pylist()]
    df = df.with_columns(*flags, pl.Series("set_fields", text, dtype=pl.String))
    return df.to_arrow()


def _check_ids(spec: ObjectSpec, ids: pa.Array | pa.ChunkedArray) -> None:
    # RECORD_ID_RE (15 or 18 ASCII alphanumerics) without a regex: ~10x faster on 1M ids.
    length = pc.binary_length(ids)
    ok = pc.and_(pc.ascii_is_alnum(ids), pc.or_(pc.equal(length, 15), pc.equal(length, 18)))
    bad = len(ids) - pc.sum(ok.fill_null(False)).as_py()
    if bad:
        # Never log the values themselves: ids of a PII-bearing object are personal data.
        raise ValueError(
            f"{spec.name}: {bad} change rows have a malformed record_id (expected 15 or 18 "
            "alphanumerics); validate the batch (quarantine) before apply_batch"
        )


Batch: TypeAlias = pa.Table | pl.DataFrame


def _column(batch: Batch, name: str) -> pa.Array | pa.ChunkedArray:
    """One column as Arrow (a polars column is converted alone, not the whole frame)."""
    if isinstance(batch, pl.DataFrame):
        return batch.get_column(name).to_arrow()
    return batch.column(name)


def _conformed(spec: ObjectSpec, batch: Batch) -> pa.Table:
    """`batch` (or a chunk of it) in the change schema, as Arrow."""
    return conform_batch(spec, batch.to_arrow() if isinstance(batch, pl.DataFrame) else batch)


@dataclass
class _Prepared:
    """A checked batch, as given (chunks are conformed one at a time), with its id."""

    batch: Batch
    rows: int
    batch_id: str
    unique: bool  # one row per change_id: no dedupe needed


def _prepare(spec: ObjectSpec, batch: Batch, label: str | None) -> _Prepared:
    """Check `batch`'s columns and record ids and give it its id, without copying it.

    Conforming the whole of a 1M-row polars batch at once held two more copies of it
    (~1.1 GB: polars -> Arrow large strings -> the schema's strings); chunks are
    conformed one at a time instead, so memory grows with the chunk, not the batch.
    """
    if label is not None and not _BATCH_ID_RE.match(label):
        raise ValueError(f"batch_id {label!r} must match {_BATCH_ID_RE.pattern}")
    rows = batch.height if isinstance(batch, pl.DataFrame) else batch.num_rows
    _conformed(spec, batch.slice(0, 0))  # missing columns fail here, before any write
    if not rows:
        return _Prepared(batch, 0, f"{label}-empty" if label else "empty", True)
    _check_ids(spec, _column(batch, "record_id"))
    content, unique = _content_id(_column(batch, "change_id"), rows)
    # The id always ends with the content hash: a label reused for different content must
    # not make the ledger believe new changes were already applied.
    return _Prepared(batch, rows, f"{label}-{content}" if label else content, unique)


def _chunk_id(prepared: _Prepared, chunk: Batch) -> tuple[str, bool]:
    """A chunk's id, `<batch id>.c-<hash of its change ids>`, and whether they are distinct.

    The ledger counts a change as applied when the batch id its raw row carries is in
    load_log, so an id must always name the same rows: `<batch id>.c<i>` did not (the
    slices depend on the batch's row order, the hash split on its duplicate count), and a
    part appended by `append_raw` in one order, then applied in another, lost the rows
    whose raw copy carried a chunk id the apply had logged for other rows. Hashing the
    chunk's own change ids (~0.06 s per 200K rows) makes the id exact, and the same rows
    get the same id wherever they fall in the batch.
    """
    rows = chunk.height if isinstance(chunk, pl.DataFrame) else chunk.num_rows
    content, unique = _content_id(_column(chunk, "change_id"), rows)
    return f"{prepared.batch_id}.c-{content[1:]}", unique


def _chunks(prepared: _Prepared, chunk_rows: int) -> Iterator[tuple[str, Batch, bool]]:
    """(chunk id, rows, change_ids distinct) per chunk of at most ~`chunk_rows` rows.

    Every change of a record lands in the same chunk, so each chunk is an ordinary batch
    of whole records (the invariant makes any batching equal; this one also keeps each
    chunk's records in order instead of making them late). A batch of one change per
    record (a backfill) is cut into zero-copy slices; others are split by a hash of the
    record id. A batch that fits is its own only chunk, with the batch's id. Either way a
    chunk's id hashes exactly its change ids (`_chunk_id`).
    """
    batch, n = prepared.batch, prepared.rows
    parts = -(-n // chunk_rows)
    if parts <= 1:
        yield prepared.batch_id, batch, prepared.unique
        return
    ids = pl.from_arrow(_column(batch, "record_id"))
    assert isinstance(ids, pl.Series)
    if ids.n_unique() == n:
        size = -(-n // parts)
        for i in range(parts):
            if i * size < n:
                chunk = batch.slice(i * size, size)
                yield _chunk_id(prepared, chunk)[0], chunk, True
        return
    part_of = (ids.hash(seed=0) % parts).to_numpy()
    for i in range(parts):
        mask = part_of == i
        if not mask.any():
            continue
        if isinstance(batch, pl.DataFrame):
            chunk = batch.filter(pl.Series(mask))
        else:
            chunk = batch.filter(pa.array(mask))
        chunk_id, unique = _chunk_id(prepared, chunk)
        yield chunk_id, chunk, unique


# The deduped chunk every statement after the stage reads (a temp table or an Arrow view).
BATCH_TABLE = "sfdc_tmp_batch"


# Per change-id family of a staged chunk: (family, day min, day max, id min, id max, rows).
_Family: TypeAlias = tuple[str, dt.date, dt.date, str, str, int]


@dataclass
class _Staged:
    """A chunk staged as `sfdc_tmp_batch` (deduped by change_id), and its day range.

    `families` are the chunk's ranges per change-id family, `read_id` and `label` what the
    caller said the chunk is a part of: what the raw-append ledger records and compares.
    """

    batch_id: str
    rows: int
    dmin: dt.date
    dmax: dt.date
    families: tuple[_Family, ...] = ()
    read_id: str | None = None
    label: str | None = None


def _families(stage: pa.Table) -> tuple[_Family, ...]:
    """The stage's rows per change-id family, with their day and record-id ranges."""
    frame = pl.from_arrow(stage.select(["source", "change_date", "record_id"]))
    assert isinstance(frame, pl.DataFrame)
    family = pl.col("source").replace_strict(
        st.FAMILY_OF_SOURCE, default=st.OTHER_FAMILY, return_dtype=pl.String
    )
    grouped = (
        frame.group_by(family.alias("family"))
        .agg(
            pl.col("change_date").min().alias("dmin"),
            pl.col("change_date").max().alias("dmax"),
            pl.col("record_id").min().alias("imin"),
            pl.col("record_id").max().alias("imax"),
            pl.len().alias("rows"),
        )
        .sort("family")
    )
    return tuple(grouped.iter_rows())


@contextlib.contextmanager
def _staged_chunk(
    warehouse: Warehouse,
    spec: ObjectSpec,
    chunk: Batch,
    chunk_id: str,
    unique: bool,
    now: dt.datetime,
    read_id: str | None = None,
    label: str | None = None,
) -> Iterator[_Staged]:
    """Stage one chunk, deduped by change_id, as `sfdc_tmp_batch`, for the `with` block.

    A chunk of distinct change_ids (the usual case) on DuckDB is not loaded at all: the
    statements scan its Arrow buffers in place (a 1M-row backfill spent ~1.2 s copying
    them into a temp table, then read them once for raw and once for the apply table).
    """
    d = dialect_of(warehouse)
    stage = _stage(spec, _conformed(spec, chunk), chunk_id, now, d)
    days = stage.column("change_date")
    staged = _Staged(
        chunk_id,
        stage.num_rows,
        pc.min(days).as_py(),
        pc.max(days).as_py(),
        _families(stage),
        read_id if label is not None else None,
        label,
    )
    if unique and warehouse.register_arrow(BATCH_TABLE, stage):
        try:
            yield staged
        finally:
            warehouse.unregister_arrow(BATCH_TABLE)
        return
    if unique:
        # Already one row per change_id: load it as the deduped batch and skip
        # dedupe_batch's window over it (~1 s for a 1M-row batch).
        warehouse.load_temp_table(BATCH_TABLE, st.stage_ddl(d, spec), stage)
    else:
        warehouse.load_temp_table("sfdc_tmp_stage", st.stage_ddl(d, spec), stage)
        warehouse.execute(st.dedupe_batch(d))
    del stage, days  # loaded: memory follows the temp table, not this copy
    yield staged


def _raw_took_all(warehouse: Warehouse, spec: ObjectSpec, batch_id: str, inserted: int) -> bool:
    """Did raw just take every deduped batch row, for a batch not in load_log?

    Then every row's raw copy carries this unlogged batch id: all of them are to apply.
    """
    if inserted <= 0:
        return False
    d = dialect_of(warehouse)
    rows = warehouse.query(f"SELECT COUNT(*) FROM {d.q(BATCH_TABLE)}")[0][0]
    return rows == inserted and not _logged(warehouse, spec, batch_id)


def _raw_holds_chunk(warehouse: Warehouse, spec: ObjectSpec, staged: _Staged) -> bool:
    """Does raw already hold every row of this chunk, under its id, with nothing applied?

    The production shape: the raw asset appends a landed part (`append_raw`) before the
    current asset applies it with the same label. Then the raw append would insert
    nothing and `select_to_apply` would hash-join the chunk with raw's rows of its days
    (~1.8 s per 1M rows for both joins); the raw-append ledger's count of rows appended
    under the chunk's id replaces them (it read raw's batch_id over the chunk's days
    before, which for a whole-history Bulk part is all of raw). Only called for a chunk
    of distinct change ids: its id hashes exactly its change ids (`_chunk_id`), so raw
    rows carrying that id are some of this chunk's rows, and as many rows as the chunk
    holds means all of them.
    """
    d = dialect_of(warehouse)
    held = warehouse.query(st.raw_appended_rows(d, spec, warehouse.schema_names, staged.batch_id))[
        0
    ][0]
    return (
        held is not None
        and int(held) == staged.rows
        and not _logged(warehouse, spec, staged.batch_id)
    )


def _insert_raw(
    warehouse: Warehouse, spec: ObjectSpec, staged: _Staged, unique: bool, now: dt.datetime
) -> int:
    """Append the staged chunk to raw and record the append in the ledger, atomically.

    Raw is compared with (the anti-join) only when the ledger names an earlier append
    that could hold one of the chunk's change ids (`statements.raw_append_overlaps`):
    during a bootstrap, a whole-history Bulk part's days span all of raw, and comparing
    each part with them made the bootstrap quadratic. Returns the rows raw took.
    """
    d, s = dialect_of(warehouse), warehouse.schema_names
    ranges = [f[:5] for f in staged.families]
    compare = (
        not unique
        or warehouse.query(
            st.raw_append_overlaps(d, spec, s, ranges, staged.read_id, staged.label)
        )[0][0]
        > 0
    )
    warehouse.begin()
    try:
        added = warehouse.execute(
            st.insert_raw(d, spec, s, staged.dmin, staged.dmax, anti_join=compare)
        )
        if added and not compare and added == staged.rows:
            for family, dmin, dmax, imin, imax, rows in staged.families:
                warehouse.execute(
                    st.insert_raw_append(
                        d,
                        spec,
                        s,
                        staged.batch_id,
                        staged.read_id,
                        staged.label,
                        family,
                        rows,
                        (dmin, dmax),
                        (imin, imax),
                        now,
                    )
                )
        elif added:
            # Some rows were in raw already: record what raw holds under this id exactly.
            q = d.q
            where = (
                f" AND {q('batch_id')} = {d.string(staged.batch_id)} AND {q('change_date')} "
                f"BETWEEN {d.date_literal(staged.dmin)} AND {d.date_literal(staged.dmax)}"
            )
            warehouse.execute(st.delete_raw_appends(d, spec, s, staged.batch_id))
            warehouse.execute(
                st.raw_appends_from_raw(d, spec, s, now, where, staged.read_id, staged.label)
            )
        warehouse.commit()
    except BaseException:
        warehouse.rollback()
        raise
    return added


def _logged(warehouse: Warehouse, spec: ObjectSpec, batch_id: str) -> bool:
    """Is `batch_id` in load_log (applied) for this object?"""
    d = dialect_of(warehouse)
    log_table = d.table(warehouse.schema_names.meta, "load_log")
    logged = warehouse.query(
        f"SELECT COUNT(*) FROM {log_table} WHERE {d.q('object_name')} = {d.string(spec.name)} "
        f"AND {d.q('batch_id')} = {d.string(batch_id)}"
    )[0][0]
    return logged > 0


def _history_rows(warehouse: Warehouse, spec: ObjectSpec) -> int:
    """DuckDB's row count estimate of the object's scd2 table (catalog only, no scan)."""
    return table_rows_estimate(warehouse, warehouse.schema_names.history, spec)


def table_rows_estimate(warehouse: Warehouse, schema: str, spec: ObjectSpec) -> int:
    """DuckDB's row count estimate of one of the object's tables (catalog only, no scan)."""
    rows = warehouse.query(
        "SELECT estimated_size FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
        [schema, spec.table],
    )
    return int(rows[0][0]) if rows else 0


def _checkpoint_if_big(warehouse: Warehouse, written: int) -> None:
    """CHECKPOINT a DuckDB file after a big write, once its WAL holds CHECKPOINT_WAL_BYTES.

    Snowflake has no checkpoint; DuckDB's CHECKPOINT does not fail on an open transaction
    elsewhere (it is then skipped), and the rows are committed already either way.
    """
    if not dialect_of(warehouse).checkpoints or written < CHECKPOINT_ROWS:
        return
    path = warehouse.query(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    )[0][0]
    wal = f"{path}.wal" if path else None  # no path: an in-memory database, no WAL
    if wal and os.path.exists(wal) and os.path.getsize(wal) >= CHECKPOINT_WAL_BYTES:
        warehouse.execute("CHECKPOINT")


def append_raw(
    warehouse: Warehouse,
    spec: ObjectSpec,
    batch: pa.Table | pl.DataFrame,
    *,
    batch_id: str | None = None,
    now: dt.datetime | None = None,
    read_id: str | None = None,
) -> int:
    """Append `batch` to raw only (idempotent); returns the rows raw did not hold yet.

    The raw layer's own step, so a blocking check can sit between raw and current:
    `apply_batch` with the same batch and `batch_id` later finds these rows in raw and
    merges them (its own raw insert is then a no-op). Chunked like `apply_batch`, with
    the same chunk ids.

    `read_id` names the read `batch` is one part of (a Bulk job), and `batch_id` the
    part: parts of one read must share no change id (a Bulk job returns each record
    once). Such parts are not compared with each other's raw rows.
    """
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    prepared = _prepare(spec, batch, batch_id)
    if not prepared.rows:
        return 0
    inserted = 0
    for chunk_id, chunk, unique in _chunks(prepared, CHUNK_ROWS):
        with _staged_chunk(
            warehouse, spec, chunk, chunk_id, unique, now, read_id, batch_id
        ) as staged:
            if unique and _raw_holds_chunk(warehouse, spec, staged):
                continue  # appended before (a retried run): nothing to compare
            added = _insert_raw(warehouse, spec, staged, unique, now)
        _checkpoint_if_big(warehouse, added)
        inserted += added
    return inserted


def apply_batch(
    warehouse: Warehouse,
    spec: ObjectSpec,
    batch: pa.Table | pl.DataFrame,
    *,
    batch_id: str | None = None,
    now: dt.datetime | None = None,
    read_id: str | None = None,
) -> ApplyResult:
    """Apply a change batch to raw, current and scd2 of `spec`'s object.

    `spec` is the merge spec from `registry.sync_schema` (described + removed fields), and
    the tables must exist (sync_schema creates them). `batch` follows
    `changes.batch_schema(spec)`; polars frames are accepted. The batch id is a hash of the
    batch's change ids (after `batch_id`, a label, when given), so a retried batch keeps
    its id; it overrides the batch's own batch_id column. Returns the counts.

    A batch of more than CHUNK_ROWS changes is applied as chunks of whole records, each an
    ordinary batch with its own id (`<batch id>.c-<hash>`) and transaction, so memory is
    bounded by the chunk, not the batch; a rerun after a crash skips the chunks that
    committed (their raw rows' batch is in load_log).

    One object's batches must be applied one at a time (a Dagster concurrency pool per
    object): the reads before the write transaction assume no concurrent writer.
    `read_id` is `append_raw`'s.
    """
    prepared = _prepare(spec, batch, batch_id)
    result = ApplyResult(batch_id=prepared.batch_id)
    read = (read_id, batch_id)
    written = 0  # by the last chunk: checkpointed after the in-flight row is gone
    if prepared.rows:
        # In flight from before the stamp to the last commit: dbt builds bound their next
        # read by it (sync_engine/in_flight.py).
        with in_flight(warehouse, spec.name) as stamp:
            now = now if now is not None else stamp  # a caller's own stamp (tests) wins
            for chunk_id, chunk, unique in _chunks(prepared, CHUNK_ROWS):
                _checkpoint_if_big(warehouse, written)
                part = _apply_chunk(warehouse, spec, chunk, chunk_id, unique, now, read)
                written = part.raw_inserted + part.history_rows + part.records
                for name in _COUNTS:
                    setattr(result, name, getattr(result, name) + getattr(part, name))
    _checkpoint_if_big(warehouse, written)
    if result.records:
        log.info("%s batch %s applied: %s", spec.name, result.batch_id, result.as_dict())
    else:
        log.info("%s batch %s: nothing new to apply", spec.name, result.batch_id)
    return result


def _apply_chunk(
    warehouse: Warehouse,
    spec: ObjectSpec,
    chunk: Batch,
    batch_id: str,
    unique: bool,
    now: dt.datetime,
    read: tuple[str | None, str | None] = (None, None),
) -> ApplyResult:
    """apply_batch for one chunk of whole records: stage and raw, classify, fold, write.

    Everything before `_write` only reads the tables and writes temp tables; `_write` is
    the one transaction.
    """
    d = dialect_of(warehouse)
    result = ApplyResult(batch_id=batch_id)
    with _staged_chunk(warehouse, spec, chunk, batch_id, unique, now, *read) as staged:
        result.changes = staged.rows
        result.raw_inserted = _append_and_select(warehouse, spec, staged, unique, now)
    # Everything after reads the apply table, not the staged chunk.
    classified = _classify(warehouse, spec)
    if classified is None:
        return result
    result.records, result.applied = classified.records, classified.applied
    if not classified.all_new:
        folded = _fold(warehouse, spec, classified)
        result.inserted, result.updated, result.deleted, result.noop = folded[:4]
        result.late, result.history_rows = folded[4:]
    if classified.new:
        added, deleted = warehouse.query(st.counts_new(d, classified.all_new))[0]
        result.inserted += int(added)
        result.deleted += int(deleted or 0)
        result.history_rows += int(added)
    plan = _plan(warehouse, spec, classified)
    _write(warehouse, write_statements(d, spec, warehouse.schema_names, plan, result, now))
    return result


def _append_and_select(
    warehouse: Warehouse,
    spec: ObjectSpec,
    staged: _Staged,
    unique: bool,
    now: dt.datetime | None = None,
) -> int:
    """Append the staged chunk to raw and fill `sfdc_tmp_apply` with what is still to apply.

    Returns the rows raw took (0 when raw already held the chunk).
    """
    d, s = dialect_of(warehouse), warehouse.schema_names
    if unique and _raw_holds_chunk(warehouse, spec, staged):
        # Appended by append_raw (or by a run that crashed before its merge): the
        # raw append would insert nothing, and every row is to apply.
        _after_raw_append()
        warehouse.execute(st.select_all_to_apply(d, spec))
        return 0
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    inserted = _insert_raw(warehouse, spec, staged, unique, now)
    _after_raw_append()
    if _raw_took_all(warehouse, spec, staged.batch_id, inserted):
        warehouse.execute(st.select_all_to_apply(d, spec))
    else:
        warehouse.execute(st.select_to_apply(d, spec, s, staged.dmin, staged.dmax))
    return inserted


@dataclass(frozen=True)
class Classified:
    """What `classify` found for one chunk's touched records, and how statements name them.

    `id_filter` / `late_filter` go inside `id IN (...)`: an inlined list of the touched
    (late) ids when `literal_ids` (a `point_lookups` dialect, at most LITERAL_ID_LIMIT
    records: answered from the index), else a subquery over the temp tables.
    """

    records: int
    applied: int  # changes to apply
    late: int
    new: int
    id_filter: str
    late_filter: str | None  # None: no record is late
    literal_ids: bool
    # The same ids for the statements that read or write current/scd2 by id: one inlined
    # list of at most LITERAL_ID_LIMIT ids each (one statement per list), or the filter.
    id_chunks: tuple[str, ...] = ()
    late_chunks: tuple[str, ...] = ()

    @property
    def all_new(self) -> bool:
        """A backfill chunk: no fold, no read of scd2, no delete from current."""
        return self.new == self.records


def _classify(warehouse: Warehouse, spec: ObjectSpec) -> Classified | None:
    """Touched records, their current rows and their class (`statements.classify`).

    None when the chunk has nothing to apply (a replay).
    """
    d = dialect_of(warehouse)
    warehouse.execute(st.touched(d))
    records, applied = warehouse.query(st.touched_counts(d))[0]
    if not records:
        return None
    literal_ids = d.point_lookups and (
        records <= LITERAL_ID_LIMIT
        or table_rows_estimate(warehouse, warehouse.schema_names.current, spec)
        >= LIST_MIN_ROWS_PER_ID * records
    )
    ids = _touched_id_list(warehouse, late_only=False) if literal_ids else None
    id_filter, id_chunks = _id_filter(warehouse, literal_ids, late_only=False, ids=ids)
    if ids is not None and records > LITERAL_ID_LIMIT and _none_in_current(warehouse, spec, ids):
        # A bootstrap's Bulk parts come in Id order, each beyond the rows before it: two
        # probes prove them all new, instead of 50K index lookups (~1 s a part once current
        # holds 500K rows).
        warehouse.execute(st.no_current_rows(d, spec, warehouse.schema_names))
    else:
        for i, chunk in enumerate(id_chunks):
            warehouse.execute(
                st.fetch_current(d, spec, warehouse.schema_names, chunk, append=i > 0)
            )
    warehouse.execute(st.classify(d))
    late, new = warehouse.query(st.class_counts(d))[0]
    late_filter, late_chunks = (
        _id_filter(warehouse, literal_ids, late_only=True) if late else (None, ())
    )
    return Classified(
        records=int(records),
        applied=int(applied or 0),
        late=int(late),
        new=int(new),
        id_filter=id_filter,
        late_filter=late_filter,
        literal_ids=literal_ids,
        id_chunks=id_chunks,
        late_chunks=late_chunks,
    )


def _none_in_current(warehouse: Warehouse, spec: ObjectSpec, ids: list[str]) -> bool:
    """Whether current holds none of `ids` (a large chunk's touched ids), proven cheaply.

    First PROBE_SAMPLE of the ids, spread over the list, by point lookups (an ART index
    hit each): a poll part of updates finds one of its records at once and stops there.
    Only then a range probe, `SELECT 1 ... BETWEEN` lowest and highest `LIMIT 1`: for ids
    beyond every current one the index finds no entry and reads no row. Unbounded only
    for a chunk of mostly new ids whose range holds current rows the sample missed (the
    scan then stops at the first one).
    """
    d, s = dialect_of(warehouse), warehouse.schema_names
    step = max(1, len(ids) // PROBE_SAMPLE)
    sample = d.id_list(ids[::step][:PROBE_SAMPLE])
    if warehouse.query(st.current_holds_any(d, spec, s, sample)):
        return False
    return not warehouse.query(st.current_in_range(d, spec, s, min(ids), max(ids)))


def _touched_id_list(warehouse: Warehouse, *, late_only: bool) -> list[str]:
    """The touched (or late) ids, fetched."""
    return [r[0] for r in warehouse.query(st.touched_ids(dialect_of(warehouse), late_only))]


def _id_filter(
    warehouse: Warehouse, literal: bool, *, late_only: bool, ids: list[str] | None = None
) -> tuple[str, tuple[str, ...]]:
    """The touched (or late) ids as a filter, and as the filters of the by-id statements.

    `literal`: inlined lists of at most LITERAL_ID_LIMIT ids (the filter is the one list,
    or the subquery when there are several); else the subquery, once. `ids`: the ids,
    when the caller fetched them already.
    """
    d = dialect_of(warehouse)
    sub = st.touched_ids(d, late_only=late_only)
    if not literal:
        return sub, (sub,)
    if ids is None:
        ids = _touched_id_list(warehouse, late_only=late_only)
    chunks = _id_lists(d, ids)
    return (chunks[0] if len(chunks) == 1 else sub), chunks


def _id_lists(d: SqlDialect, ids: list[str]) -> tuple[str, ...]:
    """`ids` as validated `IN (...)` lists of at most LITERAL_ID_LIMIT ids each."""
    return tuple(
        d.id_list(ids[i : i + LITERAL_ID_LIMIT]) for i in range(0, len(ids), LITERAL_ID_LIMIT)
    )


def _fold(warehouse: Warehouse, spec: ObjectSpec, c: Classified) -> list[int]:
    """Fold the records that are not new over their anchors, into `sfdc_tmp_hist` (scd2
    rows to write) and `sfdc_tmp_fold` (the last row: current).

    Returns inserted, updated, deleted, noop, late and history_rows of those records.
    """
    d, s = dialect_of(warehouse), warehouse.schema_names
    if c.late_filter is None:
        warehouse.execute(st.fetch_anchors(d, spec, s, None))
    for i, chunk in enumerate(c.late_chunks):
        warehouse.execute(st.fetch_anchors(d, spec, s, chunk, append=i > 0))
    since = dt.date(1970, 1, 1)
    if c.late_filter is not None:
        # Raw rows after the anchor have change_date >= the anchor's day; a late
        # record without an anchor is rebuilt from its first change.
        unanchored, first = warehouse.query(st.anchor_range(d))[0]
        if not unanchored and first is not None:
            since = first.date()
    warehouse.execute(st.build_seq(d, spec, s, c.late_filter, since))
    warehouse.execute(st.fold(d, spec))
    warehouse.execute(st.history_rows(d))
    return [int(v or 0) for v in warehouse.query(st.counts(d, spec))[0]]


@dataclass(frozen=True)
class WritePlan:
    """The write transaction of one chunk, as the choices `write_statements` spells out."""

    id_filter: str  # the touched ids (`Classified.id_filter`)
    late_filter: str | None  # the late ids; None: no scd2 rebuild
    merge: bool  # some records were folded: close/insert scd2, replace their current rows
    new: bool  # some records are new: their one scd2 row and current row, straight
    close_by_index: bool  # `statements.close_open_versions(by_index=...)`
    # One statement per filter for the by-id writes (`Classified.id_chunks`); empty: the
    # filters above, once.
    id_chunks: tuple[str, ...] = ()
    late_chunks: tuple[str, ...] = ()


def _plan(warehouse: Warehouse, spec: ObjectSpec, c: Classified) -> WritePlan:
    """Decide the writes; on an indexed dialect, how to close scd2 rows (table size)."""
    merge = not c.all_new
    # Several id lists: one close per list, so a scan would read scd2 once per list; the
    # lists are used only while scd2 is large next to the chunk, where the index wins.
    by_index = (
        merge
        and c.literal_ids
        and (
            len(c.id_chunks) > 1
            or _history_rows(warehouse, spec) > INDEX_CLOSE_ROWS_PER_ID * c.records
        )
    )
    return WritePlan(
        c.id_filter, c.late_filter, merge, c.new > 0, by_index, c.id_chunks, c.late_chunks
    )


def write_statements(
    d: SqlDialect,
    spec: ObjectSpec,
    s: SchemaNames,
    plan: WritePlan,
    result: ApplyResult,
    now: dt.datetime,
) -> list[str]:
    """The statements of a chunk's write transaction, in order; the last logs `result`."""
    out = []
    ids = plan.id_chunks or (plan.id_filter,)
    late = plan.late_chunks or (() if plan.late_filter is None else (plan.late_filter,))
    if plan.merge:
        if plan.late_filter is not None:
            out += [st.delete_history_after_anchor(d, spec, s, f) for f in late]
            out += [st.reset_anchor_versions(d, spec, s, f) for f in late]
        out += [st.close_open_versions(d, spec, s, f, by_index=plan.close_by_index) for f in ids]
        out.append(st.insert_history(d, spec, s, now))
    if plan.new:
        out.append(st.insert_new_history(d, spec, s, now, not plan.merge))
    if plan.merge:
        out += [st.delete_current(d, spec, s, f) for f in ids]
        out.append(st.insert_current(d, spec, s, now))
    if plan.new:
        out.append(st.insert_new_current(d, spec, s, now, not plan.merge))
    values = [getattr(result, c) for c in st.LOAD_LOG_COUNTS]
    out.append(st.insert_load_log(d, s, result.batch_id, spec.name, now, values))
    return out


def _write(warehouse: Warehouse, statements: list[str]) -> None:
    """Run `statements` in one transaction: all of them or none."""
    warehouse.begin()
    try:
        for statement in statements:
            warehouse.execute(statement)
        warehouse.commit()
    except BaseException:
        warehouse.rollback()
        raise


def refold(
    warehouse: Warehouse,
    spec: ObjectSpec,
    record_ids: Iterable[str],
    *,
    now: dt.datetime | None = None,
) -> ApplyResult:
    """Rebuild the records' current and scd2 rows from raw alone, whatever those tables
    hold for them now: every raw change of each record, folded from its first.

    The repair for rows changed outside the platform (a manual DELETE or UPDATE of
    current or scd2): a re-read of such a record lands a change_id raw already holds,
    and apply_batch applies a raw change once, so only a refold restores it. By the
    central invariant (any order, any batching) the result is what applying raw gives,
    so refolding a record the tables hold correctly changes nothing but its
    `_synced_at`. A record raw does not know loses its current and scd2 rows.

    Cost: the records' raw rows are found by record_id with no change_date bound (two
    reads of raw per LITERAL_ID_LIMIT ids: the apply table, the fold's sequence): a
    repair, not a recurring run. Each id list is one
    transaction, logged in load_log as `refold-<hash>.<n>`; ids are validated.
    """
    d = dialect_of(warehouse)
    ids = sorted(set(record_ids))
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:26]
    result = ApplyResult(batch_id=f"refold-{digest}")
    if not ids:
        return result
    lists = _id_lists(d, ids)
    with in_flight(warehouse, spec.name) as stamp:
        now = now if now is not None else stamp
        for n, id_list in enumerate(lists):
            part = _refold_list(warehouse, spec, id_list, f"{result.batch_id}.{n}", now)
            for name in _COUNTS:
                setattr(result, name, getattr(result, name) + getattr(part, name))
    log.info("%s refold %s: %s", spec.name, result.batch_id, result.as_dict())
    return result


def _refold_list(
    warehouse: Warehouse, spec: ObjectSpec, id_list: str, batch_id: str, now: dt.datetime
) -> ApplyResult:
    """`refold` of one inlined id list: the late path, every record unanchored."""
    d, s = dialect_of(warehouse), warehouse.schema_names
    result = ApplyResult(batch_id=batch_id)
    warehouse.execute(st.refold_apply(d, spec, s, id_list))
    warehouse.execute(st.refold_touched(d, spec, s, id_list))
    records, applied = warehouse.query(st.touched_counts(d))[0]
    if not records:
        return result
    result.records, result.applied = int(records), int(applied or 0)
    result.changes = result.applied
    warehouse.execute(st.fetch_current(d, spec, s, id_list))
    warehouse.execute(st.refold_class(d))
    classified = Classified(
        records=result.records,
        applied=result.applied,
        late=result.records,
        new=0,
        id_filter=id_list,
        late_filter=id_list,
        # Inlined either way (a repair's ids are few); on DuckDB they are index lookups.
        literal_ids=d.point_lookups,
        id_chunks=(id_list,),
        late_chunks=(id_list,),
    )
    folded = _fold(warehouse, spec, classified)
    result.inserted, result.updated, result.deleted, result.noop = folded[:4]
    result.late, result.history_rows = folded[4:]
    plan = _plan(warehouse, spec, classified)
    _write(warehouse, write_statements(d, spec, s, plan, result, now))
    return result

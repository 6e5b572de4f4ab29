"""How landed batches travel from the raw asset to the current/scd2 asset, crash-safely.

The raw asset turns every landed batch part (a Bulk Parquet part, a CDC or REST
micro-batch) into engine change rows, validates them (checks.py), writes the rows that
passed as an immutable Parquet file under `_validated/` in the landing store, appends them
to raw (`append_raw`), quarantines the rest, and records the part in
`sfdc_meta.raw_batches` (`valid` or `rejected`). The current/scd2 asset applies every
`valid`, not yet applied part of its partition window (`apply_batch` with the same label,
so its batch id, a hash of the label and the change ids, equals the raw rows' one) and
stamps `applied_at`.

Nothing travels in memory between the two steps: a crash anywhere is repaired by re-running
(append_raw is an anti-join, apply_batch skips batches in the load log, the validated file
is rewritten with the same content, registering is an upsert of unapplied rows).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import uuid
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from resources.landing import BatchRef, LandingStore, Manifest
from sync_engine.dialect import dialect_of
from sync_engine.warehouse import Warehouse, qualified

LEDGER = "raw_batches"
VALIDATED_DIR = "_validated"
# apply_batch accepts labels up to 128 characters and appends "-" + 32 hex characters.
_MAX_LABEL = 90
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.:\-]")


@dataclass(frozen=True)
class PartRef:
    """One part of one landed batch: the unit that is validated, appended and applied."""

    kind: str
    object: str
    day: dt.date
    batch_id: str
    part: int

    @classmethod
    def of(cls, manifest: Manifest, part: int) -> PartRef:
        """The `part`-th file of a committed batch."""
        return cls(
            manifest.kind,
            manifest.object,
            dt.date.fromisoformat(manifest.day),
            manifest.batch_id,
            part,
        )

    @classmethod
    def parse(cls, key: str) -> PartRef:
        """Inverse of :attr:`key`."""
        path, _, part = key.rpartition("#")
        kind, obj, day, batch_id = path.split("/")
        return cls(kind, obj, dt.date.fromisoformat(day), batch_id, int(part))

    @property
    def key(self) -> str:
        """`kind/object/day/batch_id#part`: the ledger key."""
        return f"{self.kind}/{self.object}/{self.day.isoformat()}/{self.batch_id}#{self.part}"

    @property
    def batch_ref(self) -> BatchRef:
        """The landed batch this part belongs to."""
        return BatchRef(self.kind, self.object, self.day, self.batch_id)

    @property
    def read_id(self) -> str | None:
        """The read this part is one of, when its parts share no change id: a Bulk job's
        (kind `backfill`) returns each record once. None for CDC and REST batches."""
        if self.kind != "backfill":
            return None
        return self.batch_ref.prefix

    @property
    def label(self) -> str:
        """The apply_batch label: readable, unique per part, within the engine's limits."""
        raw = _LABEL_SAFE.sub("_", f"{self.batch_id}-{self.day:%Y%m%d}-p{self.part}")
        if len(raw) <= _MAX_LABEL:
            return raw
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        return f"{raw[: _MAX_LABEL - 17]}-{digest}"


def read_part(landing: LandingStore, manifest: Manifest, part: int) -> pl.DataFrame:
    """One landed part in memory (bounded by the Bulk page size or the micro-batch)."""
    path = f"{landing.root}/{manifest.parts[part].path}"
    with landing.fs.open(path, "rb") as fh:
        return pl.read_parquet(fh.read())


def manifest_of(landing: LandingStore, ref: PartRef) -> Manifest:
    """The committed manifest of a part's batch (a missing one is a clear error)."""
    manifest = landing.manifest(ref.batch_ref)
    if manifest is None:
        raise FileNotFoundError(
            f"landing batch {ref.batch_ref.prefix} has no manifest: it was never committed "
            "(a crashed writer); re-run the sensor tick or the backfill that lands it"
        )
    return manifest


def _validated_path(landing: LandingStore, ref: PartRef) -> str:
    return f"{landing.root}/{VALIDATED_DIR}/{ref.object}/{ref.day.isoformat()}/{ref.label}.parquet"


def write_validated(landing: LandingStore, ref: PartRef, table: pa.Table) -> str:
    """Store the rows that passed validation (what raw appended, what current applies)."""
    import pyarrow.parquet as pq

    path = _validated_path(landing, ref)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    landing.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with landing.fs.open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
    # Same content on a rerun: replacing it is harmless; a local rename is atomic.
    landing.fs.mv(tmp, path)
    return path


def read_validated(landing: LandingStore, ref: PartRef) -> pa.Table:
    """The validated rows of a part."""
    import pyarrow.parquet as pq

    with landing.fs.open(_validated_path(landing, ref), "rb") as fh:
        return pq.read_table(io.BytesIO(fh.read()))


# The ledger, `sfdc_meta.raw_batches`: one row per validated part, what the apply step reads.
def _t(warehouse: Warehouse) -> str:
    return qualified(warehouse, warehouse.schema_names.meta, LEDGER)


def ensure_ledger(warehouse: Warehouse) -> None:
    """Create `sfdc_meta.raw_batches` if absent."""
    d = dialect_of(warehouse)
    q = d.q
    warehouse.ensure_schemas()
    warehouse.execute(
        f"CREATE TABLE IF NOT EXISTS {_t(warehouse)} ("
        f"{q('object_name')} VARCHAR NOT NULL, {q('part_key')} VARCHAR NOT NULL, "
        f"{q('label')} VARCHAR NOT NULL, {q('status')} VARCHAR NOT NULL, "
        f"{q('day_min')} DATE, {q('day_max')} DATE, {q('rows_landed')} BIGINT, "
        f"{q('rows_appended')} BIGINT, {q('rows_quarantined')} BIGINT, {q('source')} VARCHAR, "
        f"{q('run_id')} VARCHAR, {q('validated_at')} {d.timestamp} NOT NULL, "
        f"{q('applied_at')} {d.timestamp}, {q('apply_batch_id')} VARCHAR)"
    )


@dataclass
class LedgerRow:
    """One validated part."""

    object_name: str
    ref: PartRef
    status: str
    day_min: dt.date
    day_max: dt.date
    rows_landed: int
    rows_appended: int
    rows_quarantined: int
    source: str
    run_id: str
    validated_at: dt.datetime


def register(warehouse: Warehouse, row: LedgerRow) -> None:
    """Record a validated part (replaces an unapplied record of it; an applied one stays)."""
    d = dialect_of(warehouse)
    q = d.q
    where = (
        f"{q('object_name')} = {d.string(row.object_name)} "
        f"AND {q('part_key')} = {d.string(row.ref.key)}"
    )
    applied = warehouse.query(
        f"SELECT COUNT(*) FROM {_t(warehouse)} WHERE {where} AND {q('applied_at')} IS NOT NULL"
    )[0][0]
    if applied:
        return
    warehouse.execute(f"DELETE FROM {_t(warehouse)} WHERE {where}")
    warehouse.execute(
        f"INSERT INTO {_t(warehouse)} VALUES ("
        f"{d.string(row.object_name)}, {d.string(row.ref.key)}, "
        f"{d.string(row.ref.label)}, {d.string(row.status)}, {d.date_literal(row.day_min)}, "
        f"{d.date_literal(row.day_max)}, {int(row.rows_landed)}, {int(row.rows_appended)}, "
        f"{int(row.rows_quarantined)}, {d.string(row.source)}, {d.string(row.run_id)}, "
        f"{d.timestamp_literal(row.validated_at)}, NULL, NULL)"
    )


def pending(
    warehouse: Warehouse,
    object_name: str,
    start: dt.date,
    end: dt.date,
    run_id: str | None = None,
) -> list[PartRef]:
    """Valid, unapplied parts whose change days overlap `[start, end)`, oldest first; with
    `run_id`, also every part that run registered whatever its days (a reconciliation's
    repairs carry the versions of the records they repair, from any day)."""
    d = dialect_of(warehouse)
    q = d.q
    days = f"{q('day_min')} < {d.date_literal(end)} AND {q('day_max')} >= {d.date_literal(start)}"
    if run_id is not None:
        days = f"({days}) OR {q('run_id')} = {d.string(run_id)}"
    rows = warehouse.query(
        f"SELECT {q('part_key')} FROM {_t(warehouse)} WHERE {q('object_name')} = "
        f"{d.string(object_name)} AND {q('status')} = 'valid' AND {q('applied_at')} IS NULL "
        f"AND ({days}) ORDER BY {q('validated_at')}, {q('part_key')}"
    )
    return [PartRef.parse(r[0]) for r in rows]


def first_pending_day(warehouse: Warehouse, object_name: str) -> dt.date | None:
    """The first change day of the object's valid parts not applied yet (None: none)."""
    d = dialect_of(warehouse)
    q = d.q
    day = warehouse.query(
        f"SELECT MIN({q('day_min')}) FROM {_t(warehouse)} WHERE {q('object_name')} = "
        f"{d.string(object_name)} AND {q('status')} = 'valid' AND {q('applied_at')} IS NULL"
    )[0][0]
    return day if isinstance(day, dt.date) else None


def mark_applied(
    warehouse: Warehouse, object_name: str, ref: PartRef, batch_id: str, now: dt.datetime
) -> None:
    """Stamp a part as applied to current and scd2."""
    d = dialect_of(warehouse)
    q = d.q
    warehouse.execute(
        f"UPDATE {_t(warehouse)} SET {q('applied_at')} = {d.timestamp_literal(now)}, "
        f"{q('apply_batch_id')} = {d.string(batch_id)} WHERE {q('object_name')} = "
        f"{d.string(object_name)} AND {q('part_key')} = {d.string(ref.key)}"
    )


def quarantine(
    warehouse: Warehouse, table: str, rows: pl.DataFrame, batch_label: str, now: dt.datetime
) -> int:
    """Insert quarantined rows (change_id, record_id, reason, payload); idempotent per batch."""
    if rows.height == 0:
        return 0
    d = dialect_of(warehouse)
    q = d.q
    data = rows.select(
        pl.col("change_id").cast(pl.String),
        pl.col("record_id").cast(pl.String),
        pl.col("reason").cast(pl.String),
        pl.col("payload").cast(pl.String),
    ).with_columns(pl.lit(batch_label).alias("batch_id"))
    warehouse.load_temp_table(
        "sfdc_tmp_quarantine",
        ", ".join(f"{q(c)} VARCHAR" for c in data.columns),
        data.to_arrow(),
    )
    target = qualified(warehouse, warehouse.schema_names.quarantine, table)
    payload = d.try_parse_json(f"s.{q('payload')}")
    return warehouse.execute(
        f"INSERT INTO {target} ({q('change_id')}, {q('record_id')}, {q('reason')}, "
        f"{q('payload')}, {q('batch_id')}, {q('quarantined_at')}) "
        f"SELECT s.{q('change_id')}, s.{q('record_id')}, s.{q('reason')}, {payload}, "
        f"s.{q('batch_id')}, {d.timestamp_literal(now)} FROM {q('sfdc_tmp_quarantine')} s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {target} x WHERE x.{q('batch_id')} = s.{q('batch_id')} "
        f"AND x.{q('change_id')} IS NOT DISTINCT FROM s.{q('change_id')})"
    )

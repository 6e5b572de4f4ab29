"""Records CDC changes before raw ever held a whole image of them: re-read by REST.

A CDC UPDATE carries only the changed fields. A record whose whole image never reached
raw (its last change fell in a backfill's read lag, or it changes faster than the lag so
every lagged Bulk window misses it) would keep null owner, name... in current. The raw
step re-reads such records by Id (REST is not lagged) in the same run, so the apply gets
them whole. After the bootstrap nearly every changed record is known: no call at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sfdc_assets import batches
from sync_engine.statements import WHOLE_CHANGE_TYPES

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from resources.landing import LandingStore, Manifest
    from sync_engine.spec import ObjectSpec
    from sync_engine.warehouse import Warehouse

# Change types that carry a whole record (the ones the apply's `_read_whole` marker counts);
# UPDATE and DELETE events carry only what changed.
WHOLE_CHANGES = WHOLE_CHANGE_TYPES
PARTIAL_CHANGES = ("UPDATE", "DELETE")
# Ids per `IN (...)` lookup: keeps each statement small on both dialects.
IN_LIST_CHUNK = 1000


def carries_partial_changes(manifest: Manifest) -> bool:
    """CDC micro-batches may hold partial changes; Bulk parts and REST re-reads are whole."""
    return manifest.kind != "backfill" and manifest.meta.get("source") != "rest"


def partial_only(frames: Iterable[pl.DataFrame], rereads: Iterable[pl.DataFrame] = ()) -> list[str]:
    """Ids these change frames change only partially (no whole image among them), sorted.

    Ids that are not record ids (a wildcard of a gap event) are left out: nothing to read.
    `rereads` are the run's REST re-reads (the CDC sensor's re-read after CDC, gap
    repairs): a record they hold whole is landed whole by this very run, so it is neither
    looked up in raw nor read again. With `reread_after_cdc` (the default) that is every
    record the events changed, and the raw lookup, whose read grows with raw
    (docs/performance.md), is skipped.
    """
    from sync_engine.warehouse import RECORD_ID_RE

    partial: set[str] = set()
    whole: set[str] = set()
    for frame in frames:
        for kind, rid in zip(frame["change_type"], frame["record_id"], strict=True):
            if kind in WHOLE_CHANGES:
                whole.add(rid)
            elif kind in PARTIAL_CHANGES and RECORD_ID_RE.fullmatch(rid or ""):
                partial.add(rid)
    for frame in rereads:
        whole.update(
            rid
            for kind, rid in zip(frame["change_type"], frame["record_id"], strict=True)
            if kind in WHOLE_CHANGES
        )
    return sorted(partial - whole)


def earliest_whole_day(warehouse: Warehouse, spec: ObjectSpec, ids: list[str]) -> dt.date | None:
    """A day no raw whole image of these records can be older than; None: raw holds none.

    Every applied change of a record is at or after its first scd2 version (the first
    change always opens one), so the earliest `valid_from` of the ids' scd2 rows bounds the
    applied ones; rows appended but not applied yet belong to pending parts of the ledger,
    whose first day bounds those. (Raw rows of neither, from a crash between the append and
    the ledger, are missed: those records are re-read once more, which is only a call.)
    """
    from sync_engine.dialect import dialect_of

    d = dialect_of(warehouse)
    q = d.q
    history = d.table(warehouse.schema_names.history, spec.table)
    days: list[dt.date] = []
    for start in range(0, len(ids), IN_LIST_CHUNK):
        chunk = d.id_list(ids[start : start + IN_LIST_CHUNK])
        first = warehouse.query(
            f"SELECT MIN({q('valid_from')}) FROM {history} WHERE {q('id')} IN ({chunk})"
        )[0][0]
        if first is not None:
            days.append(first.date())
    pending = batches.first_pending_day(warehouse, spec.name)
    if pending is not None:
        days.append(pending)
    return min(days, default=None)


def read_whole_before(warehouse: Warehouse, spec: ObjectSpec, ids: list[str]) -> set[str]:
    """The ids among `ids` that raw already holds a whole image of.

    current's `_read_whole` marker (`statements.READ_WHOLE_COLUMN`, kept by the apply)
    answers by id: TRUE = a whole change of the record was applied, so raw holds it. Raw
    is asked only about the rest, and never from the bootstrap day on for all of them
    (which read nearly all of raw: docs/performance.md):
    - marker NULL (a row written before the marker existed, unknown): raw from
      `earliest_whole_day` of those ids on, as before the marker;
    - marker FALSE or no current row: only a whole image appended but not applied yet can
      be in raw, i.e. in a pending part of the ledger: raw from the first pending day on,
      and no read at all when no part is pending.
    """
    from sync_engine.dialect import dialect_of
    from sync_engine.statements import READ_WHOLE_COLUMN

    d = dialect_of(warehouse)
    q = d.q
    current = d.table(warehouse.schema_names.current, spec.table)
    marked: set[str] = set()
    unknown: set[str] = set()
    for start in range(0, len(ids), IN_LIST_CHUNK):
        chunk = d.id_list(ids[start : start + IN_LIST_CHUNK])
        for rid, whole in warehouse.query(
            f"SELECT {q('id')}, {q(READ_WHOLE_COLUMN)} FROM {current} WHERE {q('id')} IN ({chunk})"
        ):
            if whole is None:
                unknown.add(rid)
            elif whole:
                marked.add(rid)
    rest = sorted(set(ids) - marked - unknown)
    seen = set(marked)
    if unknown:
        legacy = sorted(unknown)
        seen |= _raw_whole(warehouse, spec, legacy, earliest_whole_day(warehouse, spec, legacy))
    if rest:
        seen |= _raw_whole(warehouse, spec, rest, batches.first_pending_day(warehouse, spec.name))
    return seen


def _raw_whole(
    warehouse: Warehouse, spec: ObjectSpec, ids: list[str], since: dt.date | None
) -> set[str]:
    """The ids among `ids` with a whole change in raw on or after `since` (None: none).

    Raw's change_date prunes the read (zone maps on DuckDB, clustering on Snowflake).
    """
    from sync_engine.dialect import dialect_of

    if since is None or not ids:
        return set()
    d = dialect_of(warehouse)
    q = d.q
    raw = d.table(warehouse.schema_names.raw, spec.table)
    kinds = ", ".join(d.string(k) for k in WHOLE_CHANGES)
    seen: set[str] = set()
    for start in range(0, len(ids), IN_LIST_CHUNK):
        chunk = d.id_list(ids[start : start + IN_LIST_CHUNK])
        seen |= {
            row[0]
            for row in warehouse.query(
                f"SELECT DISTINCT {q('record_id')} FROM {raw} "
                f"WHERE {q('change_date')} >= {d.date_literal(since)} "
                f"AND {q('record_id')} IN ({chunk}) AND {q('change_type')} IN ({kinds})"
            )
        }
    return seen


def repair_tag(ids: Iterable[str]) -> str:
    """The batch tag of a re-read: a digest of its ids, so landing it twice is a no-op."""
    return hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:16]


def land_incomplete(
    client: Any,
    landing: LandingStore,
    warehouse: Warehouse,
    name: str,
    spec: ObjectSpec,
    describe: Any,
    manifests: list[Manifest],
) -> list[Manifest]:
    """REST snapshots of the records these micro-batches change that were never read whole."""
    from resources.salesforce.to_changes import land_rest_snapshots

    frames = (
        batches.read_part(landing, manifest, index)
        for manifest in manifests
        if carries_partial_changes(manifest)
        for index in range(len(manifest.parts))
    )
    rereads = (
        batches.read_part(landing, manifest, index)
        for manifest in manifests
        if manifest.meta.get("source") == "rest"
        for index in range(len(manifest.parts))
    )
    candidates = partial_only(frames, rereads)
    if not candidates:
        return []
    missing = set(candidates) - read_whole_before(warehouse, spec, candidates)
    if not missing:
        return []
    return land_rest_snapshots(
        client,
        landing,
        f"incomplete_{name.lower()}",
        {name: missing},
        {name: (spec, describe)},
        repair_tag(missing),
        "records never read whole",
    )

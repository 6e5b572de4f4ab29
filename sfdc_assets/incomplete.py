"""Records CDC changes before raw ever held a whole image of them: re-read by REST.

A CDC UPDATE carries only the changed fields. A record whose whole image never reached
raw (its last change fell in a backfill's read lag, or it changes faster than the lag so
every lagged Bulk window misses it) would keep null owner, name... in current. The raw
step re-reads such records by Id (REST is not lagged) in the same run, so the apply gets
them whole. After the bootstrap nearly every changed record is known: no call at all.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sfdc_assets import batches

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from resources.landing import LandingStore, Manifest
    from sync_engine.spec import ObjectSpec
    from sync_engine.warehouse import Warehouse

# Change types that carry a whole record; UPDATE and DELETE events carry only what changed.
WHOLE_CHANGES = ("SNAPSHOT", "CREATE", "UNDELETE")
PARTIAL_CHANGES = ("UPDATE", "DELETE")
# Ids per `IN (...)` lookup: keeps each statement small on both dialects.
IN_LIST_CHUNK = 1000


def carries_partial_changes(manifest: Manifest) -> bool:
    """CDC micro-batches may hold partial changes; Bulk parts and REST re-reads are whole."""
    return manifest.kind != "backfill" and manifest.meta.get("source") != "rest"


def partial_only(frames: Iterable[pl.DataFrame]) -> list[str]:
    """Ids these change frames change only partially (no whole image among them), sorted.

    Ids that are not record ids (a wildcard of a gap event) are left out: nothing to read.
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
    return sorted(partial - whole)


def read_whole_before(warehouse: Warehouse, spec: ObjectSpec, ids: list[str]) -> set[str]:
    """The ids among `ids` that raw already holds a whole image of."""
    from sync_engine.warehouse import qualified, quote

    q = functools.partial(quote, warehouse)
    raw = qualified(warehouse, warehouse.schema_names.raw, spec.table)
    kinds = ", ".join(f"'{k}'" for k in WHOLE_CHANGES)
    seen: set[str] = set()
    for start in range(0, len(ids), IN_LIST_CHUNK):
        chunk = ", ".join(f"'{r}'" for r in ids[start : start + IN_LIST_CHUNK])
        seen |= {
            row[0]
            for row in warehouse.query(
                f"SELECT DISTINCT {q('record_id')} FROM {raw} WHERE {q('record_id')} IN "
                f"({chunk}) AND {q('change_type')} IN ({kinds})"
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
    candidates = partial_only(frames)
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

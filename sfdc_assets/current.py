"""The current + scd2 step of one object: apply every validated, unapplied raw part.

`apply_pending` walks the ledger (`sfdc_meta.raw_batches`) for the partition window,
applies each part with the engine (current and scd2 in one transaction per part), stamps
it applied, and returns an `ApplyOutcome` the asset turns into the two materializations.
A retried or re-run step finds nothing pending and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sfdc_assets import batches

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from resources.landing import LandingStore
    from sync_engine.spec import ObjectSpec
    from sync_engine.warehouse import Warehouse

# Touched ids a run keeps in memory for its `current_id_unique` count (~60 MB); past it they
# are re-read from the validated parts, if the check is scoped at all.
KEEP_IDS_MAX = 1_000_000

# The engine's per-batch counts (`ApplyResult`) the step sums.
COUNTS = (
    "changes",
    "applied",
    "records",
    "inserted",
    "updated",
    "deleted",
    "noop",
    "late",
    "history_rows",
)


@dataclass
class ApplyOutcome:
    """What the step applied: counts summed over its batches, and the newest CDC commit."""

    batches: int = 0
    changes: int = 0
    applied: int = 0
    records: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    noop: int = 0
    late: int = 0
    history_rows: int = 0
    last_commit: dt.datetime | None = None
    # `current_id_unique` over the ids the applied parts touched (apply_pending(check_ids)).
    id_rows_checked: int = 0
    duplicate_ids: int = 0
    id_check_scope: str = ""

    def add(self, result: Mapping[str, Any], table: pa.Table) -> None:
        """Count in one applied batch: the engine's result counts and the batch's rows."""
        self.batches += 1
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + int(result.get(name, 0)))
        self.last_commit = newest_cdc_commit(table, self.last_commit)

    def common_metadata(self, lag_seconds: float | None) -> dict[str, Any]:
        """Metadata both current and scd2 carry."""
        common: dict[str, Any] = {
            "batches_applied": self.batches,
            "changes": self.changes,
            "changes_applied": self.applied,
            "records_touched": self.records,
            "late_changes": self.late,
        }
        if lag_seconds is not None:
            common["cdc_lag_seconds"] = lag_seconds
        return common

    def current_metadata(self, lag_seconds: float | None) -> dict[str, Any]:
        """The current table's materialization metadata."""
        return {
            **self.common_metadata(lag_seconds),
            "inserts": self.inserted,
            "updates": self.updated,
            "deletes": self.deleted,
            "noop_changes": self.noop,
        }

    def scd2_metadata(self, lag_seconds: float | None) -> dict[str, Any]:
        """The history table's materialization metadata."""
        return {**self.common_metadata(lag_seconds), "history_rows": self.history_rows}


def newest_cdc_commit(table: pa.Table, current: dt.datetime | None) -> dt.datetime | None:
    """The later of `current` and the newest commit time of the table's CDC rows."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return current
    cdc = table.filter(pc.equal(table.column("source"), "cdc"))
    newest = pc.max(cdc.column("commit_ts")).as_py() if cdc.num_rows else None
    if newest is None:
        return current
    return newest if current is None or newest > current else current


def apply_pending(
    warehouse: Warehouse,
    landing: LandingStore,
    spec: ObjectSpec,
    start: dt.date,
    end: dt.date,
    run_id: str | None = None,
    *,
    check_ids: bool = False,
) -> ApplyOutcome:
    """Apply the valid, unapplied parts whose change days overlap `[start, end)`, and
    those the run `run_id` registered (its raw step's, from any day).

    With `check_ids`, once every part is applied current's rows of the parts' record ids
    are counted for duplicates (`current_id_unique`): O(batch), the only ids the writes
    could duplicate; a run that touched a tenth of current or more (a bootstrap) is
    counted over the whole table in one statement (`checks.run_id_counts`).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from sfdc_assets.checks import run_id_counts
    from sync_engine.apply import apply_batch

    outcome = ApplyOutcome()
    batches.ensure_ledger(warehouse)
    applied: list[batches.PartRef] = []
    kept: list[pa.Array] | None = []
    touched = 0
    for ref in batches.pending(warehouse, spec.name, start, end, run_id):
        table = batches.read_validated(landing, ref)
        result = apply_batch(warehouse, spec, table, batch_id=ref.label, read_id=ref.read_id)
        batches.mark_applied(
            warehouse,
            spec.name,
            ref,
            result.batch_id,
            dt.datetime.now(dt.UTC).replace(tzinfo=None),
        )
        outcome.add(result.as_dict(), table)
        if check_ids:
            ids = pc.unique(table.column("record_id").combine_chunks())
            applied.append(ref)
            touched += len(ids)
            if kept is not None:
                kept.append(ids)
                if touched > KEEP_IDS_MAX:
                    kept = None  # re-read from the parts if the check is scoped

    def id_arrays() -> list[pa.Array] | Iterator[pa.Array]:
        if kept is not None:
            return [pc.unique(pa.concat_arrays(kept))] if kept else []
        return (batches.read_validated(landing, ref).column("record_id") for ref in applied)

    if check_ids:
        rows, dupes, scope = run_id_counts(warehouse, spec, touched, id_arrays)
        outcome.id_rows_checked, outcome.duplicate_ids, outcome.id_check_scope = rows, dupes, scope
    return outcome

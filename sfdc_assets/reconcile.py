"""Reconciliation: prove current equal to Salesforce over a window, and repair what is not.

Change Data Capture is blind to what Salesforce documents it does not publish: a hard
delete (emptied Recycle Bin, Bulk hardDelete) has no event, formula fields are in no
event (a cross-object formula changes with its parent and nothing on the child), and
events are "in rare cases" never persisted. A reconciliation run of one object
(`RawRunConfig.reconcile`, requested by the `sfdc_reconcile` sensor) closes those gaps:

- `recent` / `full`: a Bulk `queryAll` listing of `Id, SystemModstamp, IsDeleted` over the
  last `recent_days` or the whole history, compared with current in the warehouse
  (`sync_engine.drift`), plus getDeleted over the last 15 days. Stale and missing records
  are re-read by Id over REST and landed as snapshots; the ones the re-read no longer
  finds were purged and land as `delete_scan` changes (deleted at getDeleted's date when
  it knows one). The `full` run is the ID-set diff of DESIGN §5.
- `formulas`: a listing of `Id` and the formula fields over the whole history; records
  whose formula values differ from current's land as REFRESH changes
  (`sync_engine.changes.formula_change`), so an unchanged record opens no scd2 version.

What lands goes through the ordinary raw -> current -> scd2 path of the same run; a
record that still differs after it (its current or scd2 rows changed outside the
platform: the re-read version is one raw already holds) is rebuilt from raw
(`refold_differing`). The run's report (`ReconcileReport`, a landing checkpoint) is
what the current step's `reconciled_with_salesforce` check re-verifies after the apply,
against the same listing, without another API call (docs/operations.md,
"Reconciliation").
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sfdc_assets import batches
from sfdc_assets.partitions import BEGINNING

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from resources.landing import LandingStore, Manifest
    from sfdc_assets.objects import ReconcileSettings
    from sync_engine.spec import ObjectSpec
    from sync_engine.warehouse import Warehouse

KINDS = ("recent", "full", "formulas")
REPORT_CHECKPOINT = "reconcile/{name}/{run_id}"
# The checkpoint naming the run of the latest Id listing (recent or full).
LATEST = "latest"
# getDeleted answers for the last 15 days only (reference §4.3); a minute of slack keeps
# the start inside what the org still holds when the request arrives.
GETDELETED_DAYS = 15
GETDELETED_SLACK = dt.timedelta(minutes=1)
# The listing reads the whole history up to "now": its end lies ahead and the reader
# clamps it to the org's clock minus the read lag.
OPEN_END = dt.timedelta(days=2)
LISTING_META = "listing"
INVALID_REPLICATION_DATE = "INVALID_REPLICATION_DATE"
# Set when getDeleted's log no longer covers the window (records were physically deleted):
# only a whole-history Id comparison finds those deletes; the sensor requests one.
FULL_DUE = "reconcile/{name}/full-due"


@dataclass(frozen=True)
class ReconcilePlan:
    """What one reconciliation run of one object reads."""

    object_name: str
    kind: str
    # The listing's SystemModstamp window `[start, end)`; start None = whole history.
    start: dt.datetime | None
    end: dt.datetime
    formula_fields: tuple[str, ...]
    max_rereads: int
    # getDeleted's window, for the id-listing kinds.
    deleted_window: tuple[dt.datetime, dt.datetime] | None


def plan_reconcile(
    name: str,
    kind: str,
    settings: ReconcileSettings,
    now: dt.datetime,
    formula_fields: Sequence[str],
) -> ReconcilePlan:
    """Decide what a reconciliation of `kind` reads (`now`: aware UTC). No I/O."""
    if kind not in KINDS:
        raise ValueError(f"reconcile kind {kind!r} is not one of {KINDS}")
    now = now.astimezone(dt.UTC).replace(microsecond=0)
    start = now - dt.timedelta(days=settings.recent_days) if kind == "recent" else None
    deleted = None
    if kind != "formulas":
        deleted = (now - dt.timedelta(days=GETDELETED_DAYS) + GETDELETED_SLACK, now)
    return ReconcilePlan(
        object_name=name,
        kind=kind,
        start=start,
        end=now + OPEN_END,
        formula_fields=tuple(formula_fields) if kind == "formulas" else (),
        max_rereads=settings.max_rereads,
        deleted_window=deleted,
    )


@dataclass
class ReconcileReport:
    """What a reconciliation found and landed; stored for the run's check to verify."""

    object_name: str
    kind: str
    window_start: str | None
    window_end: str
    listing: list[str]
    compared: int = 0
    stale: int = 0
    missing: int = 0
    deleted_reported: int = 0
    formula_differing: int = 0
    reread: int = 0
    purged: int = 0
    refreshed: int = 0
    deferred: int = 0
    deleted_log_complete: bool = True
    formula_fields: list[str] = field(default_factory=list)
    # Records still differing after the repairs were applied, rebuilt from raw
    # (`refold_differing`): rows changed outside the platform.
    refolded: int = 0

    @property
    def differing(self) -> int:
        """Records that disagreed with Salesforce when the run compared them."""
        return self.stale + self.missing + self.deleted_reported + self.formula_differing

    @property
    def repaired(self) -> int:
        """Changes landed to repair them (re-read snapshots, delete scans, refreshes)."""
        return self.reread + self.purged + self.refreshed

    def to_json(self) -> dict[str, Any]:
        """The checkpoint body."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReconcileReport:
        """Back from the checkpoint body."""
        return cls(**data)

    def metadata(self) -> dict[str, Any]:
        """The counts, as check metadata."""
        return {
            "kind": self.kind,
            "window_start": self.window_start or "(whole history)",
            "window_end": self.window_end,
            "compared": self.compared,
            "differing": self.differing,
            "stale": self.stale,
            "missing": self.missing,
            "deleted_reported": self.deleted_reported,
            "formula_differing": self.formula_differing,
            "repaired": self.repaired,
            "reread": self.reread,
            "purged": self.purged,
            "refreshed": self.refreshed,
            "deferred": self.deferred,
            "refolded": self.refolded,
            "deleted_log_complete": self.deleted_log_complete,
        }


def report_name(name: str, run_id: str) -> str:
    """The landing checkpoint of a run's report."""
    return REPORT_CHECKPOINT.format(name=name, run_id=run_id)


def _listing_fields(plan: ReconcilePlan) -> list[str]:
    if plan.kind == "formulas":
        return ["Id", *plan.formula_fields]
    return ["Id", "SystemModstamp", "IsDeleted"]


def land_listing(
    plan: ReconcilePlan, client: Any, landing: LandingStore, describe: Any, lag: dt.timedelta
) -> tuple[list[Manifest], dt.datetime]:
    """The Bulk listing (a few columns of every record in the window), and its clamped end."""
    from resources.salesforce.bulk import BulkOptions

    reader = client.bulk(landing, BulkOptions(lag=lag))
    result = reader.backfill(
        plan.object_name,
        plan.start or BEGINNING,
        plan.end,
        fields=_listing_fields(plan),
        describe=describe,
        meta={LISTING_META: plan.kind},
    )
    end = result.window.end if result.window else (plan.start or BEGINNING)
    return result.manifests, end


def listing_parts(
    landing: LandingStore, spec: ObjectSpec, manifests: Sequence[Manifest], plan_kind: str
) -> Iterator[pa.Table]:
    """The landed listing, part by part, as the columns `sync_engine.drift` loads."""
    import polars as pl

    from sync_engine.snapshots import exact_decimals

    for manifest in manifests:
        for index in range(len(manifest.parts)):
            frame = exact_decimals(spec, batches.read_part(landing, manifest, index))
            renames = {"Id": "id"}
            if plan_kind != "formulas":
                renames |= {"SystemModstamp": "systemmodstamp", "IsDeleted": "is_deleted"}
            else:
                renames |= {f.name: f.column for f in spec.fields if f.name in frame.columns}
            frame = frame.rename({k: v for k, v in renames.items() if k in frame.columns})
            yield (
                frame.select([c for c in renames.values() if c in frame.columns])
                .with_columns(pl.col("id").cast(pl.String))
                .to_arrow()
            )


def _observed_ms(landing: LandingStore, manifests: Sequence[Manifest]) -> int | None:
    import polars as pl

    from resources.salesforce.csv_types import OBSERVED_AT

    observed = []
    for manifest in manifests:
        for index in range(len(manifest.parts)):
            frame = batches.read_part(landing, manifest, index)
            if frame.height and OBSERVED_AT in frame.columns:
                observed.append(min(frame[OBSERVED_AT].cast(pl.Int64).to_list()))
    return min(observed) if observed else None


def _getdeleted(client: Any, plan: ReconcilePlan) -> tuple[dict[str, dt.datetime], bool]:
    """getDeleted over the plan's window: (id -> deletion time, naive UTC; whether the
    delete log covered the whole window).

    Once records were physically deleted (Recycle Bin emptied, hard delete), Salesforce
    keeps the delete log only from then on and refuses an earlier start with
    INVALID_REPLICATION_DATE (SOAP getDeleted(), reference §4.3): the window is then read
    from the date the error names, when it names one, and reported incomplete, so a whole
    history Id comparison is owed (`FULL_DUE`).
    """
    from resources.salesforce.bulk import parse_sf_datetime
    from resources.salesforce.errors import ApiCallError

    if plan.deleted_window is None:
        return {}, True
    start, end = plan.deleted_window
    complete = True
    try:
        body = client.rest.deleted(plan.object_name, start, end)
    except ApiCallError as exc:
        if exc.error_code != INVALID_REPLICATION_DATE:
            raise
        complete = False
        earliest = _named_date(str(exc))
        if earliest is None or not start < earliest < end:
            return {}, complete
        body = client.rest.deleted(plan.object_name, earliest, end)
    out = {}
    for rec in body.get("deletedRecords", []):
        when = parse_sf_datetime(rec["deletedDate"])
        out[rec["id"]] = when.astimezone(dt.UTC).replace(tzinfo=None)
    return out, complete


def _named_date(message: str) -> dt.datetime | None:
    """The latest ISO datetime an error message names (earliestDateAvailable is later
    than the refused startDate), aware UTC; None when it names none."""
    from resources.salesforce.bulk import parse_sf_datetime

    found = re.findall(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?", message
    )
    dates = []
    for text in found:
        try:
            dates.append(parse_sf_datetime(text).astimezone(dt.UTC))
        except ValueError:
            continue
    return max(dates, default=None)


def full_due(landing: LandingStore, name: str) -> bool:
    """Whether a reconciliation found the delete log incomplete: a `full` run is owed now."""
    return landing.read_checkpoint(FULL_DUE.format(name=name)) is not None


def reconcile(
    plan: ReconcilePlan,
    client: Any,
    landing: LandingStore,
    warehouse: Warehouse,
    spec: ObjectSpec,
    describe: Any,
    lag: dt.timedelta,
    run_id: str,
) -> tuple[list[Manifest], ReconcileReport]:
    """List, compare, and land the repairs of one reconciliation; store its report."""
    from sync_engine import drift

    nothing_to_list = plan.kind == "formulas" and not plan.formula_fields
    listing: list[Manifest] = []
    if nothing_to_list:
        end = plan.end
    else:
        listing, end = land_listing(plan, client, landing, describe, lag)
    report = ReconcileReport(
        object_name=plan.object_name,
        kind=plan.kind,
        window_start=plan.start.isoformat() if plan.start else None,
        window_end=end.isoformat(),
        listing=[_ref_text(m) for m in listing],
        formula_fields=list(plan.formula_fields),
    )
    manifests: list[Manifest] = []
    if not nothing_to_list:
        parts = listing_parts(landing, spec, listing, plan.kind)
        report.compared = drift.load_listing(warehouse, spec, parts, plan.formula_fields)
        if plan.kind == "formulas":
            manifests = _land_refreshes(plan, landing, warehouse, spec, listing, report, run_id)
        else:
            manifests = _land_rereads(
                plan, client, landing, warehouse, spec, describe, report, run_id
            )
    landing.write_checkpoint(report_name(plan.object_name, run_id), report.to_json())
    if plan.kind == "full":  # the whole history was compared: nothing is owed any more
        landing.clear_checkpoint(FULL_DUE.format(name=plan.object_name))
    if plan.kind != "formulas":  # a formula listing goes stale with the next record change
        landing.write_checkpoint(report_name(plan.object_name, LATEST), {"run_id": run_id})
    return manifests, report


def _land_rereads(
    plan: ReconcilePlan,
    client: Any,
    landing: LandingStore,
    warehouse: Warehouse,
    spec: ObjectSpec,
    describe: Any,
    report: ReconcileReport,
    run_id: str,
) -> list[Manifest]:
    from resources.salesforce.to_changes import reread_by_id
    from sync_engine import drift
    from sync_engine.warehouse import let_go

    window = drift.Window(
        plan.start.replace(tzinfo=None) if plan.start else None,
        dt.datetime.fromisoformat(report.window_end).astimezone(dt.UTC).replace(tzinfo=None),
    )
    found = drift.find_drift(warehouse, spec, window, report.compared)
    report.stale, report.missing = len(found.stale), len(found.missing)
    # getDeleted and the re-reads wait on Salesforce (minutes of REST calls after a full
    # listing of 10M Tasks found thousands missing): not while holding the DuckDB file.
    let_go(warehouse)
    deleted, report.deleted_log_complete = _getdeleted(client, plan)
    if not report.deleted_log_complete and plan.kind == "recent":
        landing.write_checkpoint(
            FULL_DUE.format(name=plan.object_name), {"since": report.window_end}
        )
    known = set(found.stale) | set(found.missing)
    reported = [i for i in drift.live_ids(warehouse, spec, sorted(deleted)) if i not in known]
    report.deleted_reported = len(reported)
    candidates = sorted(known | set(reported))
    todo, report.deferred = (
        candidates[: plan.max_rereads],
        max(0, len(candidates) - plan.max_rereads),
    )
    if not todo:
        return []
    let_go(warehouse)
    result = reread_by_id(
        client,
        landing,
        f"reconcile-{plan.kind}",
        {plan.object_name: set(todo)},
        {plan.object_name: (spec, describe)},
        run_id,
        f"reconcile {plan.kind}",
        deleted_at=deleted,
    )
    report.reread, report.purged = result.found, result.purged
    return result.manifests


def _land_refreshes(
    plan: ReconcilePlan,
    landing: LandingStore,
    warehouse: Warehouse,
    spec: ObjectSpec,
    listing: Sequence[Manifest],
    report: ReconcileReport,
    run_id: str,
) -> list[Manifest]:
    import polars as pl

    from resources.landing import BatchRef
    from sync_engine import drift
    from sync_engine.changes import build_batch, formula_change, ts_of

    differing = drift.find_formula_drift(warehouse, spec, plan.formula_fields)
    report.formula_differing = differing.num_rows
    observed = _observed_ms(landing, listing)
    if not differing.num_rows or observed is None:
        return []
    by_column = {f.column: f.name for f in spec.fields}
    read = ts_of(observed)
    rows = [
        formula_change(
            spec,
            record_id=rec["id"],
            values={by_column[c]: v for c, v in rec.items() if c != "id"},
            read_started_at=read,
        )
        for rec in differing.to_pylist()
    ]
    changes = pl.from_arrow(build_batch(spec, rows))
    assert isinstance(changes, pl.DataFrame)
    report.refreshed = changes.height
    manifests = []
    for (day,), part in changes.group_by("change_date", maintain_order=True):
        ref = BatchRef("cdc", plan.object_name, day, f"refresh-{run_id}")
        manifests.append(
            landing.write_batch(ref, part, {"source": "bulk", "repair_of": "formulas"})
        )
    return manifests


def _ref_text(manifest: Manifest) -> str:
    return f"{manifest.kind}/{manifest.object}/{manifest.day}/{manifest.batch_id}"


def remaining(
    warehouse: Warehouse, landing: LandingStore, spec: ObjectSpec, report: ReconcileReport
) -> int:
    """After the apply: how many records still disagree with the run's listing.

    The proof of the repair: the same listing, loaded again, compared with current as the
    apply left it. No API call.
    """
    return len(differing_ids(warehouse, landing, spec, report))


def differing_ids(
    warehouse: Warehouse, landing: LandingStore, spec: ObjectSpec, report: ReconcileReport
) -> list[str]:
    """The ids of the records that disagree with the run's listing now (`remaining`)."""
    from sync_engine import drift

    manifests = [batches.manifest_of(landing, _part_ref(text)) for text in report.listing]
    formulas = list(report.formula_fields)
    if report.kind == "formulas" and not formulas:
        return []
    listed = drift.load_listing(
        warehouse, spec, listing_parts(landing, spec, manifests, report.kind), formulas
    )
    if report.kind == "formulas":
        differing = drift.find_formula_drift(warehouse, spec, formulas)
        return sorted(differing.column("id").to_pylist())
    start = report.window_start
    window = drift.Window(
        dt.datetime.fromisoformat(start).astimezone(dt.UTC).replace(tzinfo=None) if start else None,
        dt.datetime.fromisoformat(report.window_end).astimezone(dt.UTC).replace(tzinfo=None),
    )
    found = drift.find_drift(warehouse, spec, window, listed)
    return sorted({*found.stale, *found.missing})


def refold_differing(
    warehouse: Warehouse, landing: LandingStore, spec: ObjectSpec, run_id: str
) -> int:
    """After a reconciliation's repairs are applied: rebuild from raw the records that
    still disagree with its listing (`apply.refold`); returns how many.

    A repair that landed nothing new leaves a record wrong only when its current or scd2
    rows were changed outside the platform (raw already held the re-read version, and a
    raw change is applied once); the refold restores exactly what raw says. A record
    that changed again after its re-read refolds to the state it has, which is harmless,
    and the next run compares it again. Skipped when the run found nothing differing (the
    common case: the listing is not loaded a second time) and while re-reads are deferred
    (more records differed than `max_rereads`: those were never re-read, and a refold
    cannot fix what raw lacks). Recorded in the report (`refolded`).
    """
    from sync_engine.apply import refold

    report = load_report(landing, spec.name, run_id)
    if report is None or not report.differing or report.deferred:
        return 0
    ids = differing_ids(warehouse, landing, spec, report)
    if not ids:
        return 0
    refold(warehouse, spec, ids)
    report.refolded = len(ids)
    landing.write_checkpoint(report_name(spec.name, run_id), report.to_json())
    return len(ids)


def _part_ref(text: str) -> batches.PartRef:
    kind, obj, day, batch_id = text.split("/")
    return batches.PartRef(kind, obj, dt.date.fromisoformat(day), batch_id, 0)


def load_report(landing: LandingStore, name: str, run_id: str) -> ReconcileReport | None:
    """The report a run's raw step stored, if it reconciled."""
    body = landing.read_checkpoint(report_name(name, run_id))
    return ReconcileReport.from_json(body) if body else None


def latest_report(landing: LandingStore, name: str) -> tuple[str, ReconcileReport] | None:
    """(run id, report) of the object's latest Id listing (recent or full), if any ran."""
    pointer = landing.read_checkpoint(report_name(name, LATEST))
    if not pointer:
        return None
    report = load_report(landing, name, pointer["run_id"])
    return (pointer["run_id"], report) if report else None


def dumps(report: ReconcileReport) -> str:
    """The report as JSON text (logs, tests)."""
    return json.dumps(report.to_json(), sort_keys=True)

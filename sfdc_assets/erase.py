"""Audited erase of a data subject's records (DESIGN §6): a Dagster job and a CLI.

`erase_subject(warehouse, landing, request)` removes one object's records (given Ids, or
the records whose field matches a value, e.g. Email) from:

1. the landing store: every landed part (Bulk Parquet parts, CDC/REST micro-batches) and
   every validated part (`_validated/`) holding them is rewritten without those rows, and
   the batch manifest re-committed (rows, bytes, sha256, a `rewrites` note);
2. the warehouse, in one transaction: raw, current, history and quarantine rows, the Ids'
   digests added to the suppression list, and one audit row in `sfdc_meta.erasures`.

Every call writes exactly one audit row (`erased`, `noop` when nothing was left,
`dry_run`, or `failed` with the error class), Ids only as SHA-256 digests. A second call is
a no-op on data. The runbook is docs/security.md#erase-runbook.

    python -m sfdc_assets.erase --object Contact --id 003... --reason "GDPR ticket 123"
    python -m sfdc_assets.erase --object Contact --field Email --reason "GDPR ticket 123"
        (the value is read from stdin, so it stays out of shell history and `ps`)
"""

import argparse
import datetime as dt
import getpass
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from resources.environment import Environment, sfdc_env
from resources.landing import LandingStore
from sfdc_assets.resources import DEFAULT_LANDING_URL, ERASE_WAREHOUSE, LANDING
from sync_engine import erasure
from sync_engine.dialect import dialect_of
from sync_engine.erasure import ErasureAudit, InvalidErasureRequestError
from sync_engine.warehouse import Warehouse, validate_identifier

log = logging.getLogger(__name__)

VALIDATED_DIR = "_validated"  # sfdc_assets.batches writes validated parts there
ID_COLUMNS = ("record_id", "Id")  # change rows (CDC, REST, validated) | Bulk parts
JOB_NAME = "sfdc_erase_subject"
WAREHOUSE_COUNTS = ("raw_rows", "current_rows", "history_rows", "quarantine_rows")


@dataclass(frozen=True)
class ErasureRequest:
    """What to erase and why. `match_value` is never logged nor stored."""

    object_name: str
    reason: str
    requested_by: str
    ids: tuple[str, ...] = ()
    match_field: str | None = None
    match_value: str | None = field(default=None, repr=False)
    suppress: bool = True
    dry_run: bool = False

    def __post_init__(self) -> None:
        validate_identifier(self.object_name)
        for name in ("reason", "requested_by"):
            text = getattr(self, name)
            if not isinstance(text, str) or not text.strip() or len(text) > erasure.MAX_TEXT:
                raise InvalidErasureRequestError(
                    f"{name} is required (1-{erasure.MAX_TEXT} characters): who asked, and why"
                )
        if not self.ids and not self.match_field:
            raise InvalidErasureRequestError("give record Ids or a field and value to match")
        if self.match_field is not None:
            validate_identifier(self.match_field)
            if self.match_value is None:
                raise InvalidErasureRequestError(f"{self.match_field}: a value to match is needed")
        if len(self.ids) > erasure.MAX_IDS:
            raise InvalidErasureRequestError(
                f"{len(self.ids)} Ids in one request (at most {erasure.MAX_IDS}): split it"
            )


@dataclass
class _Sweep:
    rows: int = 0
    files: int = 0


def _id_column(landing: LandingStore, rel: str) -> str | None:
    import pyarrow.parquet as pq

    with landing.fs.open(f"{landing.root}/{rel}", "rb") as fh:
        names = pq.read_schema(fh).names
    return next((c for c in ID_COLUMNS if c in names), None)


def _matches(landing: LandingStore, rel: str, ids: frozenset[str]) -> tuple[int, int, str | None]:
    """(matching rows, total rows, id column) of one file, reading only its id column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = _id_column(landing, rel)
    if column is None:
        return 0, -1, None
    col = landing.read_parquet(rel, columns=[column]).column(column)
    if not ids:
        return 0, len(col), column
    hits = pc.sum(pc.is_in(col, value_set=pa.array(sorted(ids), type=col.type))).as_py() or 0
    return int(hits), len(col), column


def _without(landing: LandingStore, rel: str, column: str, ids: frozenset[str]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = landing.read_parquet(rel)
    col = table.column(column)
    keep = pc.invert(pc.is_in(col, value_set=pa.array(sorted(ids), type=col.type)))
    return table.filter(pc.fill_null(keep, True))


def _landing_names(landing: LandingStore, object_name: str) -> list[str]:
    """The object's folder names in the landing store, matched case-insensitively.

    Landing folders carry the API name (`Contact`); a request for `contact` must still
    find them, or the erase would clean the warehouse and silently miss the files.
    """
    found = {
        rel.rstrip("/").rsplit("/", 1)[-1]
        for pattern in ("_manifests/*/*", f"{VALIDATED_DIR}/*")
        for rel in landing.files(pattern)
    }
    return sorted(n for n in found if n.lower() == object_name.lower())


def sweep_landing(
    landing: LandingStore,
    object_name: str,
    ids: Sequence[str],
    *,
    note: dict[str, Any],
    dry_run: bool = False,
) -> dict[str, int]:
    """Rewrite every landed and validated file of the object without the subject's rows.

    Reads only the id column of each file; rewrites only files with a match (and re-commits
    a manifest whose row count no longer matches its file after a crashed erase). Cost: one
    column of every landed file of the object, O(landing) reads, none of them rewritten in
    the usual case.
    """
    id_set = frozenset(ids)
    landed, validated = _Sweep(), _Sweep()
    names = _landing_names(landing, object_name)
    manifests = [m for name in names for m in landing.manifests(obj=name)]
    for manifest in manifests:
        for index, part in enumerate(manifest.parts):
            hits, total, column = _matches(landing, part.path, id_set)
            if column is None or (not hits and total == part.rows):
                continue
            landed.rows += hits
            landed.files += 1 if hits else 0
            if not dry_run:
                table = _without(landing, part.path, column, id_set)
                manifest = landing.rewrite_part(manifest, index, table, {**note, "rows": hits})
    validated_files = [
        rel for name in names for rel in landing.files(f"{VALIDATED_DIR}/{name}/*/*.parquet")
    ]
    for rel in validated_files:
        hits, _, column = _matches(landing, rel, id_set)
        if column is None or not hits:
            continue
        validated.rows += hits
        validated.files += 1
        if not dry_run:
            landing.replace_parquet(rel, _without(landing, rel, column, id_set))
    return {
        "landed_rows": landed.rows,
        "landed_files": landed.files,
        "validated_rows": validated.rows,
        "validated_files": validated.files,
    }


def erase_subject(
    warehouse: Warehouse,
    landing: LandingStore,
    request: ErasureRequest,
    *,
    run_id: str | None = None,
    now: dt.datetime | None = None,
) -> ErasureAudit:
    """Erase the subject from the landing store and every layer; record one audit row.

    Order: landing first, then the warehouse in one transaction with the audit row and the
    suppressions. A failure anywhere records a `failed` audit row and re-raises; running
    the same request again finishes the job (every step filters by Id, so it is idempotent).
    """
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    table = request.object_name.lower()
    erasure.ensure_tables(warehouse)
    ids = {erasure.canonical_id(i) for i in request.ids}
    if request.match_field is not None and request.match_value is not None:
        if request.match_field.lower() == "id":
            ids.add(erasure.canonical_id(request.match_value))
        else:
            ids.update(
                erasure.resolve_ids(warehouse, table, request.match_field, request.match_value)
            )
    subject = sorted(ids)
    audit = ErasureAudit(
        erasure_id=uuid.uuid4().hex,
        object_name=request.object_name,
        match_field=request.match_field or "Id",
        id_hashes=tuple(erasure.id_hash(i) for i in subject),
        requested_by=request.requested_by,
        reason=request.reason,
        requested_at=now,
        run_id=run_id,
    )
    note = {"erasure_id": audit.erasure_id, "at": now.isoformat()}
    try:
        if request.dry_run:
            audit.counts.update(erasure.count_subject(warehouse, table, subject))
            audit.counts.update(
                sweep_landing(landing, request.object_name, subject, note=note, dry_run=True)
            )
            audit.status = "dry_run"
            erasure.record_erasure(warehouse, audit)
            return audit
        audit.counts.update(sweep_landing(landing, request.object_name, subject, note=note))
        warehouse.begin()
        try:
            audit.counts.update(erasure.delete_subject(warehouse, table, subject))
            if request.suppress and subject:
                erasure.add_suppressions(
                    warehouse, request.object_name, audit.id_hashes, audit.erasure_id, now
                )
            audit.suppressed = request.suppress and bool(subject)
            audit.status = "erased" if audit.changed else "noop"
            audit.finished_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            erasure.record_erasure(warehouse, audit)
            warehouse.commit()
        except BaseException:
            warehouse.rollback()
            # Nothing was deleted from the warehouse: the failed row must not say otherwise.
            audit.counts.update(dict.fromkeys(WAREHOUSE_COUNTS, 0))
            audit.suppressed = False
            raise
    except Exception as exc:
        audit.status = "failed"
        # The class only: messages of database errors can quote values.
        audit.error = type(exc).__name__
        audit.finished_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        try:
            erasure.record_erasure(warehouse, audit)
        except Exception as record_exc:
            log.error(
                "erasure %s: the failed attempt could not be recorded (%s)",
                audit.erasure_id,
                type(record_exc).__name__,
            )
        raise
    if dialect_of(warehouse).checkpoints:
        # Moves the deletes out of the write-ahead log into the file (docs/security.md:
        # freed blocks of a DuckDB file keep old bytes until reused). Committed already: a
        # failure here is not a failed erase.
        try:
            warehouse.execute("CHECKPOINT")
        except Exception as exc:
            log.warning("erasure %s: CHECKPOINT failed (%s)", audit.erasure_id, type(exc).__name__)
    log.info(
        "erasure %s of %s: %s, %d record(s) (hashed in sfdc_meta.erasures), rows removed %s",
        audit.erasure_id,
        request.object_name,
        audit.status,
        len(subject),
        audit.counts,
    )
    return audit


def summary(audit: ErasureAudit) -> dict[str, Any]:
    """What the job and the CLI report: no Ids, no values."""
    return {
        "erasure_id": audit.erasure_id,
        "object": audit.object_name,
        "status": audit.status,
        "records": len(audit.id_hashes),
        "suppressed": audit.suppressed,
        **audit.counts,
    }


class EraseConfig(dg.Config):
    """Launchpad config of the erase job. Dagster keeps run config in its run storage and
    shows it in the UI, so the job takes Ids only; match by Email with the CLI."""

    object_name: str
    ids: list[str]
    reason: str
    requested_by: str
    suppress: bool = True
    dry_run: bool = False


@dg.op(name="erase_subject", required_resource_keys={ERASE_WAREHOUSE, LANDING})
def erase_subject_op(context: dg.OpExecutionContext, config: EraseConfig) -> dg.Output:
    """Erase the configured records everywhere and record the audit row."""
    request = ErasureRequest(
        object_name=config.object_name,
        reason=config.reason,
        requested_by=config.requested_by,
        ids=tuple(config.ids),
        suppress=config.suppress,
        dry_run=config.dry_run,
    )
    audit = erase_subject(
        context.resources.erase_warehouse,
        context.resources.landing.store(),
        request,
        run_id=context.run_id,
    )
    report = summary(audit)
    context.log.info(f"erasure {audit.erasure_id}: {audit.status}")
    return dg.Output(report, metadata={k: v for k, v in report.items() if k != "object"})


@dg.job(
    name=JOB_NAME,
    description=(
        "Audited erase of a data subject's records from raw, current, history, quarantine and "
        "the landing store; one row in sfdc_meta.erasures per run. Runbook: docs/security.md."
    ),
    tags={"sfdc/kind": "erasure"},
)
def erase_job() -> None:
    """One op: erase and audit."""
    erase_subject_op()


def definitions() -> dg.Definitions:
    """The erase job, for the code location."""
    return dg.Definitions(jobs=[erase_job])


def _warehouse_from_env() -> Warehouse:
    if sfdc_env() is Environment.PROD:
        from resources.snowflake_warehouse import SnowflakeWarehouse

        return SnowflakeWarehouse.from_env()
    from resources.duckdb_warehouse import DuckDBWarehouse

    return DuckDBWarehouse.from_env()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sfdc_assets.erase",
        description="Audited erase of a data subject's records (docs/security.md).",
    )
    p.add_argument("--object", required=True, help="API name, e.g. Contact")
    p.add_argument("--id", action="append", default=[], help="record Id (15/18); repeatable")
    p.add_argument("--field", help="erase the records whose FIELD equals a value, e.g. Email")
    p.add_argument(
        "--value", help="the value for --field (default: read from stdin, out of shell history)"
    )
    p.add_argument("--reason", required=True, help="why: the ticket, no personal data")
    p.add_argument("--requested-by", default=None, help="who asked (default: $USER)")
    p.add_argument("--no-suppress", action="store_true", help="do not add to the suppression list")
    p.add_argument("--dry-run", action="store_true", help="count only (still audited)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the audit summary as JSON (no Ids, no values)."""
    args = _parser().parse_args(argv)
    value = args.value
    if args.field and value is None:
        value = sys.stdin.readline().rstrip("\n")
    try:
        request = ErasureRequest(
            object_name=args.object,
            reason=args.reason,
            requested_by=args.requested_by or os.environ.get("USER") or getpass.getuser(),
            ids=tuple(args.id),
            match_field=args.field,
            match_value=value,
            suppress=not args.no_suppress,
            dry_run=args.dry_run,
        )
        warehouse = _warehouse_from_env()
        landing = LandingStore(os.environ.get("LANDING_URL") or DEFAULT_LANDING_URL)
        try:
            audit = erase_subject(warehouse, landing, request)
        finally:
            warehouse.close()
    except (InvalidErasureRequestError, ValueError) as exc:
        # Our validation messages never quote the Ids or values themselves.
        sys.stderr.write(f"erase refused: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(summary(audit)) + "\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())

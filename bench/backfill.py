"""End-to-end backfill through the platform (`make bench-backfill`).

``python -m bench.backfill [--tasks 1000000] [--repeat 2]`` seeds the emulator with
``--tasks`` Task rows in its own process, then runs what `sfdc_bootstrap` launches for an
object: one single-run partition-range materialization of ``salesforce/raw/task`` and
``salesforce/current|scd2/task`` over every partition, in this process, with a real
Dagster instance on disk (SQLite, the local default) and a fresh DuckDB file and landing
folder each run. It reports rows/s from run start to the last event, peak RSS of this
process (the run) and of the emulator, and where the time goes per step: the step's work
(Bulk extraction, landing, validation, raw append; or the apply) versus Dagster writing
its per-partition events after the work is done. With ``--postgres-url`` every repeat
also runs on Postgres run storage with batched event writes (the production setting,
docs/operations.md), alternating with SQLite.

This is the number the project's backfill target is about (>= 250K rows/s end to end,
< 1 GB); `bench.extraction` and `bench.engine` measure the two halves alone. Medians go
to docs/performance.md ("## End-to-end backfill" only).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from bench.extraction import start_emulator
from bench.report import RssSampler, machine, replace_section

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger("bench.backfill")

REPO = Path(__file__).resolve().parent.parent
SECTION = "## End-to-end backfill (make bench-backfill)"
# As `make demo`: partitions from where the emulator's ~2-year history starts.
HISTORY_DAYS = 740
# Events per write when batched (Postgres storage): a range run's materializations.
EVENT_BATCH_SIZE = 500
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _platform(info: Path, workdir: Path) -> tuple[list[Any], dict[str, Any]]:
    from resources.duckdb_warehouse import DuckDBWarehouse
    from resources.salesforce.resource import SalesforceResource
    from sfdc_assets.assets import build_assets
    from sfdc_assets.objects import load_config
    from sfdc_assets.resources import LandingResource

    base = load_config()
    start = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=HISTORY_DAYS)).isoformat()
    # No traffic runs during the benchmark, so the Bulk read lag only delays the window.
    settings = base.settings.model_copy(update={"partitions_start": start, "bulk_lag_seconds": 0})
    task = [o for o in base.objects if o.name == "Task"]
    sync = base.model_copy(update={"settings": settings, "objects": task})
    resources = {
        "warehouse": DuckDBWarehouse(path=str(workdir / "warehouse.duckdb")),
        "salesforce": SalesforceResource(env="local", emulator_info=str(info)),
        "landing": LandingResource(url=str(workdir / "landing")),
    }
    return build_assets(sync), resources


def _step_times(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, float]]:
    """Per step: seconds of work (start to first result) and of event writing after it."""
    marks: dict[str, dict[str, float]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        step = marks.setdefault(event.step_key, {})
        kind = event.event_type_value
        if kind == "STEP_START":
            step["start"] = record.timestamp
        elif kind in ("ASSET_MATERIALIZATION", "STEP_OUTPUT") and "first_result" not in step:
            step["first_result"] = record.timestamp
        elif kind == "STEP_SUCCESS":
            step["end"] = record.timestamp
    out = {}
    for key, m in marks.items():
        if {"start", "first_result", "end"} <= m.keys():
            out[key] = {
                "work_s": m["first_result"] - m["start"],
                "events_s": m["end"] - m["first_result"],
            }
    return out


@contextlib.contextmanager
def _batched_events() -> Iterator[None]:
    before = os.environ.get("DAGSTER_EVENT_BATCH_SIZE")
    os.environ["DAGSTER_EVENT_BATCH_SIZE"] = str(EVENT_BATCH_SIZE)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DAGSTER_EVENT_BATCH_SIZE", None)
        else:
            os.environ["DAGSTER_EVENT_BATCH_SIZE"] = before


@contextlib.contextmanager
def _instance(
    run_dir: Path, storage: str, postgres_url: str | None
) -> Iterator[dg.DagsterInstance]:
    """A fresh instance: `local` (make demo's dagster.yaml: SQLite, events in batches),
    `sqlite` (Dagster's stock SQLite storage, one event at a time) or `postgres` (batched
    event writes, the production setting, docs/operations.md; wiped afterwards)."""
    from scripts.demo import instance_yaml_text

    home = run_dir / "dagster_home"
    if storage == "sqlite":
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            yield instance
        return
    if storage == "local":
        (home / "dagster.yaml").write_text(instance_yaml_text(home))
        with _batched_events(), dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance
        return
    overrides = {"storage": {"postgres": {"postgres_url": postgres_url}}}
    with _batched_events(), dg.instance_for_test(temp_dir=str(home), overrides=overrides) as inst:
        inst.wipe()
        try:
            yield inst
        finally:
            inst.wipe()


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None  # an aggregate without GROUP BY returns one row
    return int(row[0])


def one_run(
    info: Path, workdir: Path, emulator_pid: int, storage: str, postgres_url: str | None = None
) -> dict[str, Any]:
    """One whole-range backfill of Task into a fresh warehouse and instance."""
    import duckdb

    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "dagster_home").mkdir(parents=True)
    assets, resources = _platform(info, run_dir)
    keys = [dg.AssetKey(["salesforce", layer, "task"]) for layer in ("raw", "current", "scd2")]
    partitions = assets[0].partitions_def
    first, last = partitions.get_first_partition_key(), partitions.get_last_partition_key()
    load = os.getloadavg()[0]
    with _instance(run_dir, storage, postgres_url) as instance, RssSampler((emulator_pid,)) as rss:
        started = time.perf_counter()
        result = dg.materialize(
            assets,
            selection=dg.AssetSelection.assets(*keys),
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            },
            run_config=QUIET,
            instance=instance,
            resources=resources,
            raise_on_error=True,
        )
        seconds = time.perf_counter() - started
        steps = _step_times(instance, result.run_id)
        events = len(instance.all_logs(result.run_id))
    with duckdb.connect(str(run_dir / "warehouse.duckdb"), read_only=True) as con:
        rows = _count(con, "sfdc.task")
        history = _count(con, "sfdc_history.task")
    run = {
        "storage": storage,
        "rows": rows,
        "history_rows": history,
        "partitions": partitions.get_num_partitions(),
        "events": events,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": rss.peak[0] / 2**20,
        "emulator_peak_rss_mb": rss.peak[1] / 2**20,
        "load": load,
        "steps": steps,
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    return run


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _step_median(runs: list[dict[str, Any]], step: str, part: str) -> float:
    return statistics.median(r["steps"].get(step, {}).get(part, 0.0) for r in runs)


def render(by_storage: dict[str, list[dict[str, Any]]], header: str, command: str) -> str:
    """The docs/performance.md section: one column per run storage."""
    names = list(by_storage)
    first = next(iter(by_storage.values()))[0]
    steps = list(first["steps"])

    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(by_storage[n]) for n in names) + " |"

    def work(runs: list[dict[str, Any]]) -> float:
        return sum(_step_median(runs, step, "work_s") for step in steps)

    def events(runs: list[dict[str, Any]]) -> float:
        return sum(_step_median(runs, step, "events_s") for step in steps)

    lines = [
        f"Measured by `{command}` ({header}). The emulator runs in its own process; the run",
        "executes in the benchmark's process (in-process executor, as `make demo`'s runs),",
        "with a fresh DuckDB file and landing folder each run. Partitions start",
        f"{HISTORY_DAYS} days back, as in `make demo`. Storages alternate run by run.",
        "",
        "| measure (median of runs) | " + " | ".join(_STORAGE_LABELS[n] for n in names) + " |",
        "|---|" + "---:|" * len(names),
        row("Task rows backfilled into current", lambda r: f"{r[0]['rows']:,}"),
        row(
            "partitions / Dagster events of the run",
            lambda r: f"{r[0]['partitions']:,} / {r[0]['events']:,}",
        ),
        row("wall time, run start to last event", lambda r: f"{_median(r, 'seconds'):.1f} s"),
        row("**rows/s end to end**", lambda r: f"**{_median(r, 'rows_per_s'):,.0f}**"),
        row(
            "the steps' work (extract, land, validate, append, apply)", lambda r: f"{work(r):.1f} s"
        ),
        row("rows/s of the steps' work alone", lambda r: f"{r[0]['rows'] / work(r):,.0f}"),
        row("Dagster writing the per-partition events", lambda r: f"{events(r):.1f} s"),
        row(
            "peak RSS: run process / emulator",
            lambda r: (
                f"{_median(r, 'peak_rss_mb'):,.0f} / {_median(r, 'emulator_peak_rss_mb'):,.0f} MB"
            ),
        ),
        row("every run (rows/s)", lambda r: ", ".join(f"{x['rows_per_s']:,.0f}" for x in r)),
        row("1-min load per run", lambda r: ", ".join(f"{x['load']:.2f}" for x in r)),
        "",
        "| step: work / events after it (s) | "
        + " | ".join(_STORAGE_LABELS[n] for n in names)
        + " |",
        "|---|" + "---:|" * len(names),
    ]
    for step in steps:
        lines.append(
            row(
                f"`{step}`",
                lambda r, s=step: (
                    f"{_step_median(r, s, 'work_s'):.1f} / {_step_median(r, s, 'events_s'):.1f}"
                ),
            )
        )
    lines += [
        "",
        "Reading it: the raw step's work is the Bulk extraction (gzip on), landing each page",
        "as Parquet, building change rows, validating them (Pandera), writing the validated",
        "part and appending it to raw; the current/scd2 step applies the validated parts",
        "(`bench.engine` measures `apply_batch` alone). Dagster then writes one",
        "materialization per partition and asset: a cost per object that does not grow",
        "with its rows. Postgres with `DAGSTER_EVENT_BATCH_SIZE` writes them in batches",
        "(docs/operations.md); SQLite writes each in its own transactions.",
        "The project's target is >= 250K rows/s end to end under 1 GB; docs/engine.md",
        '("The whole backfill through the platform") says where the time goes.',
    ]
    return "\n".join(lines)


_STORAGE_LABELS = {
    "local": f"SQLite, events batched ({EVENT_BATCH_SIZE}; local default)",
    "sqlite": "Dagster's stock SQLite, an event at a time",
    "postgres": f"Postgres, DAGSTER_EVENT_BATCH_SIZE={EVENT_BATCH_SIZE}",
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--postgres-url",
        help="also run on Postgres run storage, e.g. postgresql+psycopg2://user@host:5432/db "
        "(its Dagster tables are wiped before and after each run)",
    )
    parser.add_argument("--workdir", default=str(REPO / "bench" / "out" / "backfill"))
    parser.add_argument("--no-docs", action="store_true", help="do not touch performance.md")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("resources", "sfdc_assets", "sync_engine", "dagster", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
    workdir = Path(ns.workdir) / f"tasks-{ns.tasks}"
    workdir.mkdir(parents=True, exist_ok=True)
    header = machine()
    storages: dict[str, str | None] = {"local": None, "sqlite": None}
    if ns.postgres_url:
        storages["postgres"] = ns.postgres_url
    proc, info = start_emulator(workdir, ns.tasks)
    by_storage: dict[str, list[dict[str, Any]]] = {name: [] for name in storages}
    try:
        for i in range(ns.repeat):
            for name, url in storages.items():
                with tempfile.TemporaryDirectory(dir=workdir) as tmp:
                    run = one_run(info, Path(tmp), proc.pid, name, url)
                by_storage[name].append(run)
                log.info(
                    "run %d %s: %d rows in %.1f s = %.0f rows/s, peak RSS %.0f MB, steps %s",
                    i + 1,
                    name,
                    run["rows"],
                    run["seconds"],
                    run["rows_per_s"],
                    run["peak_rss_mb"],
                    json.dumps(
                        {k: {p: round(v, 1) for p, v in s.items()} for k, s in run["steps"].items()}
                    ),
                )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    (workdir / "results.json").write_text(json.dumps(by_storage, indent=2))
    args = argv if argv is not None else sys.argv[1:]
    # The database URL may carry credentials: the docs name only the storage.
    shown = [a if not a.startswith("postgres") else "<url>" for a in args]
    command = " ".join(["python -m bench.backfill", *shown])
    if not ns.no_docs:
        replace_section(SECTION, render(by_storage, header, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

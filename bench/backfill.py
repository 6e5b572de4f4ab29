"""End-to-end backfill through the platform (`make bench-backfill`).

``python -m bench.backfill [--tasks 1000000] [--repeat 2] [--storages local,sqlite]`` seeds
the emulator with ``--tasks`` Task rows in its own process, then runs what `sfdc_bootstrap`
launches for an object: one single-run partition-range materialization of
``salesforce/raw/task`` and ``salesforce/current|scd2/task`` over every partition, in this
process, with a real Dagster instance on disk and a fresh DuckDB file and landing folder
each run. Instances: ``local`` (make demo's dagster.yaml: SQLite with batched event
writes, resources/event_log.py), ``sqlite`` (Dagster's stock SQLite storage) and, with
``--postgres-url``, Postgres with batched event writes (the production setting,
docs/operations.md).

Each run reports rows/s from run start to the last event, peak RSS of this process (the
run) and of the emulator, and where the time goes per step: the step's work (Bulk
extraction, landing, validation, raw append; or the apply) versus Dagster writing its
per-partition events after the work is done. Then it re-backfills the last 30 partitions
over the populated tables and checks current and scd2 did not change (an order-free hash
of every row). After each run, alternating, the limit: DuckDB's own `read_csv` of the same
rows (the first bootstrap's landed pages, exported once as a CSV) into a fresh file, in
its own process.

This is the number the project's backfill target is about (>= 250K rows/s end to end,
>= 50 % of the limit, < 1 GB); `bench.extraction` and `bench.engine` measure the two
halves alone. Medians go to docs/performance.md ("## End-to-end backfill", one block per
size: a run at another ``--tasks`` keeps the others).
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from bench.extraction import start_emulator
from bench.report import RssSampler, machine, replace_section, section_body

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger("bench.backfill")

REPO = Path(__file__).resolve().parent.parent
SECTION = "## End-to-end backfill (make bench-backfill)"
# As `make demo`: partitions from where the emulator's ~2-year history starts.
HISTORY_DAYS = 740
# Events per write when batched (Postgres storage): a range run's materializations.
EVENT_BATCH_SIZE = 500
# The re-backfill after each bootstrap: the last 30 daily partitions, over populated tables.
REBACKFILL_DAYS = 30
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


def _fingerprint(con: duckdb.DuckDBPyConnection, table: str) -> tuple[int, int]:
    """Rows and an order-free hash of every column: equal iff the table did not change."""
    # hash(t): the whole row as one struct (hash(COLUMNS(*)) would expand to one sum a column).
    row = con.execute(f"SELECT count(*), sum(hash(t))::HUGEINT FROM {table} AS t").fetchone()
    assert row is not None
    return int(row[0]), int(row[1] or 0)


def _materialize_range(
    assets: list[Any],
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    first: str,
    last: str,
) -> tuple[str, float]:
    keys = [dg.AssetKey(["salesforce", layer, "task"]) for layer in ("raw", "current", "scd2")]
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
    return result.run_id, time.perf_counter() - started


def _rows_landed(instance: dg.DagsterInstance, run_id: str) -> int:
    key = dg.AssetKey(["salesforce", "raw", "task"])
    for record in instance.fetch_materializations(key, limit=1).records:
        if record.run_id == run_id and record.asset_materialization is not None:
            return int(record.asset_materialization.metadata["rows_landed"].value)  # type: ignore[arg-type]
    return 0


def export_csv(landing: Path, csv_path: Path) -> None:
    """The landed Bulk pages of Task as one CSV (the limit's input): the same rows and
    columns the bootstrap read (the limit run counts them)."""
    import duckdb

    pages = str(landing / "backfill" / "Task" / "*" / "*" / "part-*.parquet")
    tmp = csv_path.with_suffix(".tmp")
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT * FROM read_parquet('{pages}')) TO '{tmp}' (HEADER)")
    tmp.rename(csv_path)


def one_run(
    info: Path,
    workdir: Path,
    emulator_pid: int,
    storage: str,
    postgres_url: str | None = None,
    csv_path: Path | None = None,
    rebackfill_days: int = REBACKFILL_DAYS,
) -> dict[str, Any]:
    """One whole-range backfill of Task into a fresh warehouse and instance, then a
    re-backfill of its last `rebackfill_days` partitions over the populated tables."""
    import duckdb

    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "dagster_home").mkdir(parents=True)
    assets, resources = _platform(info, run_dir)
    partitions = assets[0].partitions_def
    keys = partitions.get_partition_keys()
    load = os.getloadavg()[0]
    db = run_dir / "warehouse.duckdb"
    with _instance(run_dir, storage, postgres_url) as instance:
        with RssSampler((emulator_pid,)) as rss:
            run_id, seconds = _materialize_range(assets, resources, instance, keys[0], keys[-1])
        steps = _step_times(instance, run_id)
        events = len(instance.all_logs(run_id))
        with duckdb.connect(str(db), read_only=True) as con:
            rows = _count(con, "sfdc.task")
            history = _count(con, "sfdc_history.task")
            before = [_fingerprint(con, t) for t in ("sfdc.task", "sfdc_history.task")]
        if csv_path is not None and not csv_path.exists():
            export_csv(run_dir / "landing", csv_path)
        with RssSampler() as re_rss:
            re_id, re_seconds = _materialize_range(
                assets, resources, instance, keys[-rebackfill_days], keys[-1]
            )
        re_rows = _rows_landed(instance, re_id)
    with duckdb.connect(str(db), read_only=True) as con:
        after = [_fingerprint(con, t) for t in ("sfdc.task", "sfdc_history.task")]
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
        "rebackfill": {
            "days": rebackfill_days,
            "rows": re_rows,
            "seconds": re_seconds,
            "rows_per_s": re_rows / re_seconds,
            "peak_rss_mb": re_rss.peak[0] / 2**20,
            "changed_nothing": before == after,
        },
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    return run


_LIMIT_SCRIPT = """
import json, sys, time
import duckdb
csv, db = sys.argv[1], sys.argv[2]
con = duckdb.connect(db)
con.execute("SET enable_progress_bar = false")
started = time.perf_counter()
con.execute(f"CREATE TABLE task AS SELECT * FROM read_csv('{csv}')")
con.commit()
con.execute("CHECKPOINT")
seconds = time.perf_counter() - started
rows = con.execute("SELECT count(*) FROM task").fetchone()[0]
con.close()
print(json.dumps({"rows": rows, "seconds": seconds}))
"""


def limit_run(csv_path: Path, workdir: Path) -> dict[str, Any]:
    """DuckDB's own load of the same rows from a local CSV into a table of a fresh file
    (the physical limit this machine sets), in its own process; peak RSS is its own."""
    db = workdir / "limit.duckdb"
    db.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    # Sampled from here: the child's own ru_maxrss would count the forked parent's pages.
    proc = subprocess.Popen(
        [sys.executable, "-c", _LIMIT_SCRIPT, str(csv_path), str(db)],
        stdout=subprocess.PIPE,
        text=True,
    )
    with RssSampler((proc.pid,)) as rss:
        out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"the read_csv limit run failed with code {proc.returncode}")
    db.unlink(missing_ok=True)
    run: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    run["rows_per_s"] = run["rows"] / run["seconds"]
    run["peak_rss_mb"] = rss.peak[1] / 2**20
    run["load"] = load
    return run


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _step_median(runs: list[dict[str, Any]], step: str, part: str) -> float:
    return statistics.median(r["steps"].get(step, {}).get(part, 0.0) for r in runs)


def _unchanged(run: dict[str, Any]) -> str:
    return "yes" if run["rebackfill"]["changed_nothing"] else "**NO**"


def render(
    by_storage: dict[str, list[dict[str, Any]]],
    limits: list[dict[str, Any]],
    header: str,
    command: str,
) -> str:
    """This size's part of the docs/performance.md section: the project against the limit,
    the re-backfill, then one column per run storage."""
    names = list(by_storage)
    first = next(iter(by_storage.values()))[0]
    limit_rate = statistics.median(x["rows_per_s"] for x in limits)

    def rb(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r["rebackfill"][key] for r in runs)

    head = [
        f"### {first['rows']:,} Task rows",
        "",
        "| median of runs | "
        + " | ".join(_STORAGE_LABELS[n] for n in names)
        + " | DuckDB `read_csv` of the same rows (the limit) |",
        "|---|" + "---:|" * (len(names) + 1),
        "| **rows/s end to end** | "
        + " | ".join(f"**{_median(by_storage[n], 'rows_per_s'):,.0f}**" for n in names)
        + f" | **{limit_rate:,.0f}** |",
        "| share of the limit | "
        + " | ".join(f"{_median(by_storage[n], 'rows_per_s') / limit_rate:.1%}" for n in names)
        + " | 100% |",
        "| seconds | "
        + " | ".join(f"{_median(by_storage[n], 'seconds'):.1f}" for n in names)
        + f" | {statistics.median(x['seconds'] for x in limits):.1f} |",
        "| peak RSS | "
        + " | ".join(f"{_median(by_storage[n], 'peak_rss_mb'):,.0f} MB" for n in names)
        + f" | {statistics.median(x['peak_rss_mb'] for x in limits):,.0f} MB |",
        "| every run (rows/s) | "
        + " | ".join(", ".join(f"{x['rows_per_s']:,.0f}" for x in by_storage[n]) for n in names)
        + " | "
        + ", ".join(f"{x['rows_per_s']:,.0f}" for x in limits)
        + " |",
        "",
        f"Re-backfill of the last {first['rebackfill']['days']} daily partitions over the "
        "populated tables (the same run shape, run config empty: a Bulk read of the window):",
        "",
        "| median of runs | " + " | ".join(_STORAGE_LABELS[n] for n in names) + " |",
        "|---|" + "---:|" * len(names),
        "| rows read | " + " | ".join(f"{rb(by_storage[n], 'rows'):,.0f}" for n in names) + " |",
        "| seconds | " + " | ".join(f"{rb(by_storage[n], 'seconds'):.1f}" for n in names) + " |",
        "| rows/s | " + " | ".join(f"{rb(by_storage[n], 'rows_per_s'):,.0f}" for n in names) + " |",
        "| peak RSS | "
        + " | ".join(f"{rb(by_storage[n], 'peak_rss_mb'):,.0f} MB" for n in names)
        + " |",
        "| current and scd2 unchanged (every run) | "
        + " | ".join(", ".join(_unchanged(r) for r in by_storage[n]) for n in names)
        + " |",
        "",
    ]
    steps = list(first["steps"])

    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(by_storage[n]) for n in names) + " |"

    def work(runs: list[dict[str, Any]]) -> float:
        return sum(_step_median(runs, step, "work_s") for step in steps)

    def events(runs: list[dict[str, Any]]) -> float:
        return sum(_step_median(runs, step, "events_s") for step in steps)

    lines = [
        *head,
        f"Measured by `{command}` ({header}). The emulator runs in its own process; the run",
        "executes in the benchmark's process (in-process executor, as `make demo`'s runs),",
        "with a fresh DuckDB file and landing folder each run. Partitions start",
        f"{HISTORY_DAYS} days back, as in `make demo`. Storages alternate run by run, each",
        "followed by the limit: DuckDB loading the same rows (the bootstrap's landed Bulk",
        "pages, exported once as one CSV) with `CREATE TABLE ... AS SELECT * FROM read_csv`",
        "into a fresh file, in its own process.",
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
        "with its rows. With `DAGSTER_EVENT_BATCH_SIZE`, the local instance's event log",
        "(resources/event_log.py) and Postgres write them in batches (docs/operations.md);",
        "Dagster's stock SQLite storage writes each in its own transactions.",
        "The project's target is >= 250K rows/s end to end (>= 50 % of the limit) under",
        '1 GB; docs/engine.md ("The whole backfill through the platform") says where the',
        "time goes and what the redesign that would close the gap is.",
    ]
    return "\n".join(lines)


_STORAGE_LABELS = {
    "local": f"SQLite, events batched ({EVENT_BATCH_SIZE}; local default)",
    "sqlite": "Dagster's stock SQLite, an event at a time",
    "postgres": f"Postgres, DAGSTER_EVENT_BATCH_SIZE={EVENT_BATCH_SIZE}",
}


def merge_sizes(existing: str, part: str) -> str:
    """The section with `part` (one size's `### N Task rows` block) in place of that size's
    block, other sizes' blocks kept, ordered by size; text outside blocks is dropped."""
    blocks: dict[int, str] = {}
    for chunk in [*("\n" + existing).split("\n### ")[1:], part.removeprefix("### ")]:
        title = chunk.split("\n", 1)[0]
        blocks[int(title.split(" ")[0].replace(",", ""))] = "### " + chunk.strip()
    return "\n\n".join(blocks[k] for k in sorted(blocks))


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
    parser.add_argument(
        "--storages",
        default="local,sqlite",
        help="instances to alternate: local (make demo's), sqlite (Dagster's stock SQLite)",
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
    storages: dict[str, str | None] = {name: None for name in ns.storages.split(",")}
    if ns.postgres_url:
        storages["postgres"] = ns.postgres_url
    proc, info = start_emulator(workdir, ns.tasks)
    csv_path = workdir / "tasks.csv"
    by_storage: dict[str, list[dict[str, Any]]] = {name: [] for name in storages}
    limits: list[dict[str, Any]] = []
    try:
        for i in range(ns.repeat):
            for name, url in storages.items():
                with tempfile.TemporaryDirectory(dir=workdir) as tmp:
                    run = one_run(info, Path(tmp), proc.pid, name, url, csv_path)
                by_storage[name].append(run)
                log.info(
                    "run %d %s: %d rows in %.1f s = %.0f rows/s, peak RSS %.0f MB, steps %s; "
                    "re-backfill %s",
                    i + 1,
                    name,
                    run["rows"],
                    run["seconds"],
                    run["rows_per_s"],
                    run["peak_rss_mb"],
                    json.dumps(
                        {k: {p: round(v, 1) for p, v in s.items()} for k, s in run["steps"].items()}
                    ),
                    json.dumps(run["rebackfill"]),
                )
                # The limit, alternating with the project's runs.
                limit = limit_run(csv_path, workdir)
                limits.append(limit)
                log.info(
                    "limit %d: read_csv of %d rows in %.1f s = %.0f rows/s, peak RSS %.0f MB",
                    len(limits),
                    limit["rows"],
                    limit["seconds"],
                    limit["rows_per_s"],
                    limit["peak_rss_mb"],
                )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    (workdir / "results.json").write_text(json.dumps({**by_storage, "limit": limits}, indent=2))
    args = argv if argv is not None else sys.argv[1:]
    # The database URL may carry credentials: the docs name only the storage.
    shown = [a if not a.startswith("postgres") else "<url>" for a in args]
    command = " ".join(["python -m bench.backfill", *shown])
    if not ns.no_docs:
        body = render(by_storage, limits, header, command)
        replace_section(SECTION, merge_sizes(section_body(SECTION), body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

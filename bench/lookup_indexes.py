"""What objects.yaml `lookup_fields` cost on DuckDB: Task's WhatId/WhoId indexes at scale.

    .venv/bin/python -m bench.lookup_indexes [--rows 10000000] [--batch 5000]

Side by side, each in its own process: a Task current + scd2 of `--rows` records (loaded
in SQL, one version each) without lookup indexes, and the same with them created after
the load the way the platform does (`ensure_lookups`, by the first run after the
bootstrap). For each: load and index time; then in a fresh process (as every Dagster run
is) one poll-sized batch of `--batch` snapshot updates through the real `apply_batch`
(time, peak RSS, DuckDB's ART memory); and the rows a dbt-style lookup of 20 `WhatId`s
reads (`total_rows_scanned`). Prints a markdown table and writes it to the "## Lookup
indexes" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from bench.report import machine, replace_section
from resources.duckdb_warehouse import DuckDBWarehouse
from sync_engine import changes as ch
from sync_engine import registry
from sync_engine.apply import apply_batch
from tests.dbt.harness import object_spec

LOOKUPS = ("WhatId", "WhoId")
CHUNK = 1_000_000
ANCHOR = dt.datetime(2026, 1, 1)


def _id(prefix: str, n: int) -> str:
    return f"{prefix}{n:015d}"


def build(path: Path, rows: int, lookups: bool) -> dict[str, float]:
    """Task's tables with `rows` records; the lookup indexes after the load if asked."""
    spec = object_spec("Task")
    wh = DuckDBWarehouse(path=str(path))
    try:
        registry.sync_schema(wh, spec)
        started = time.perf_counter()
        for first in range(0, rows, CHUNK):
            last = min(first + CHUNK, rows)
            values = (
                "'00T' || lpad(cast(i as varchar), 15, '0'), "
                "'006' || lpad(cast(hash(i) % 1000000 as varchar), 15, '0'), "
                "'003' || lpad(cast(hash(i + 1) % 500000 as varchar), 15, '0'), "
                "'Call ' || cast(i % 100 as varchar)"
            )
            wh.execute(
                "INSERT INTO sfdc.task (id, whatid, whoid, subject, is_deleted, _version, "
                f"_source, _synced_at, _read_whole) SELECT {values}, false, '1', 'bulk', "
                f"TIMESTAMP '{ANCHOR}', true FROM range({first}, {last}) r(i)"
            )
            wh.execute(
                "INSERT INTO sfdc_history.task (id, whatid, whoid, subject, is_deleted, "
                "_version, _source, valid_from, valid_to, is_current, _synced_at) "
                f"SELECT {values}, false, '1', 'bulk', TIMESTAMP '{ANCHOR}', NULL, true, "
                f"TIMESTAMP '{ANCHOR}' FROM range({first}, {last}) r(i)"
            )
        wh.execute("CHECKPOINT")
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        if lookups:
            registry.ensure_lookups(wh, spec, LOOKUPS)
            wh.execute("CHECKPOINT")
        return {"load_s": loaded, "index_s": time.perf_counter() - started}
    finally:
        wh.close()


def apply_poll(path: Path, rows: int, batch: int) -> dict[str, float]:
    """One poll-sized batch of snapshot updates, in this (fresh) process."""
    spec = object_spec("Task")
    step = max(rows // batch, 1)
    changes = [
        ch.snapshot_change(
            spec,
            record_id=_id("00T", n),
            values={
                "Subject": "Follow up",
                "WhatId": _id("006", n % 1000),
                "WhoId": _id("003", n % 500),
            },
            system_modstamp=ANCHOR + dt.timedelta(days=1),
            read_started_at=ANCHOR + dt.timedelta(days=1, minutes=5),
        )
        for n in range(0, step * batch, step)
    ]
    wh = DuckDBWarehouse(path=str(path))
    try:
        started = time.perf_counter()
        apply_batch(wh, spec, ch.build_batch(spec, changes))
        took = time.perf_counter() - started
        art = wh.query(
            "SELECT COALESCE(SUM(memory_usage_bytes), 0) FROM duckdb_memory() "
            "WHERE tag = 'ART_INDEX'"
        )[0][0]
    finally:
        wh.close()
    return {
        "apply_s": took,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "art_mb": art / 2**20,
    }


def lookup_rows(path: Path) -> int:
    """Rows read by `whatid in (<20 literals>)`, as dbt's inlined keys read them."""
    keys = ", ".join(f"'{_id('006', n)}'" for n in range(20))
    con = duckdb.connect(str(path), read_only=True)
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        con.execute("pragma enable_profiling = 'json'")
        con.execute(f"pragma profiling_output = '{out}'")
        con.execute(f"SELECT id FROM sfdc.task WHERE whatid IN ({keys})").fetchall()
        con.execute("pragma disable_profiling")
    finally:
        con.close()
    rows = int(json.loads(out.read_text())["query"]["total_rows_scanned"])
    out.unlink()
    return rows


def worker(step: str, path: Path, rows: int, batch: int, lookups: bool) -> None:
    if step == "build":
        result: dict[str, Any] = build(path, rows, lookups)
    else:
        result = {**apply_poll(path, rows, batch), "lookup_rows": lookup_rows(path)}
    sys.stdout.write(json.dumps(result) + "\n")


def _run(step: str, path: Path, args: argparse.Namespace, lookups: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.lookup_indexes", "--worker", step, "--path", str(path)]
    cmd += ["--rows", str(args.rows), "--batch", str(args.batch)]
    cmd += ["--lookups"] if lookups else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--worker", choices=["build", "apply"])
    parser.add_argument("--path", type=Path)
    parser.add_argument("--lookups", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.path, args.rows, args.batch, args.lookups)
        return
    lines = [
        "## Lookup indexes (DuckDB, `python -m bench.lookup_indexes`)",
        "",
        f"Machine: {machine()}.",
        "",
        f"Command: `python -m bench.lookup_indexes --rows {args.rows} --batch {args.batch}`.",
        "",
        "| Task current + scd2 | load s | create lookup indexes s | apply of a poll batch s "
        "| its peak RSS MB | ART in memory MB | rows read by `whatid in (20 ids)` |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for lookups in (False, True):
            path = Path(tmp) / f"task-{lookups}.duckdb"
            b = _run("build", path, args, lookups)
            a = _run("apply", path, args, lookups)
            label = "with WhatId/WhoId indexes" if lookups else "without (PRIMARY KEY, scd2 id)"
            lines.append(
                f"| {args.rows:,} rows, {label} | {b['load_s']:.1f} | {b['index_s']:.1f} "
                f"| {a['apply_s']:.2f} | {a['rss_mb']:.0f} | {a['art_mb']:.0f} "
                f"| {a['lookup_rows']:,} |"
            )
            path.unlink()
    lines += [
        "",
        "Each row's build and apply run in their own processes; the apply is one batch of "
        "snapshot updates through `apply_batch` in a fresh process, as a Dagster run does. "
        'What the indexes are for and what they cost: docs/engine.md, "Lookup columns".',
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    replace_section(lines[0], "\n".join(lines[1:]))


if __name__ == "__main__":
    main()

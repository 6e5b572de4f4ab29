"""Rows scanned per recurring statement at two table sizes (`make bench-scale-statements`).

Issue 11 asks that no recurring statement read more when the table grows: rows scanned at
10M Opportunity-shaped rows over rows scanned at 1M must be <= 1.5 for every statement a
recurring run issues. Tables are `bench.engine`'s (`build_tables`: current, scd2 and raw
with one version per record), in a DuckDB file; the warehouse is `ProfiledDuckDB`, a
`DuckDBWarehouse` whose connection profiles every statement (`enable_profiling = json`,
`total_rows_scanned`: rows its scans read after zone-map pruning and index lookups) and
labels it by the engine function that sent it and its shape (`bench.statements.label`).

Recurring runs, in the order production issues them (sfdc_assets/raw.py, current.py):
- `incomplete`: the CDC raw step's lookup of records never read whole
  (`incomplete.read_whole_before` over the batch's partial-only ids);
- `cdc`: `append_raw` then `apply_batch` of one CDC micro-batch (1,000 and 10,000 changes:
  95 % partial UPDATEs of random existing records, 5 % CREATEs);
- `check`: the run's scoped `current_id_unique` (`checks.touched_id_counts`);
- `poll`: a polling re-read (Task/Event `mode: polling`, every 15 min) of ~50K recent
  records, 90 % of them existing, overlapping the previous poll's window (so the raw
  anti-join runs): `append_raw`, `apply_batch`, then its scoped check.

Each size runs in its own process. Writes docs/performance.md's section
"## Rows scanned per recurring statement (make bench-scale-statements)".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from pydantic import PrivateAttr

from bench.engine import BATCH_MS, SPEC, build_tables, make_backfill, make_batch
from bench.report import REPO, machine, replace_section
from bench.statements import label
from resources.duckdb_warehouse import DuckDBWarehouse
from sfdc_assets import batches
from sfdc_assets.checks import touched_id_counts
from sfdc_assets.incomplete import partial_only, read_whole_before
from sync_engine.apply import append_raw, apply_batch

log = logging.getLogger("bench.scale_statements")

TABLE_SIZES = (1_000_000, 10_000_000)
CDC_SIZES = (1_000, 10_000)
POLL_ROWS = 50_000
# Records of a poll new to the table (the others exist: changed since they were read).
POLL_NEW = 5_000
# Records of the poll window read by the previous poll as well (20 min window every 15).
POLL_OVERLAP = 12_500
BAR = 1.5
SECTION = "## Rows scanned per recurring statement (make bench-scale-statements)"
DBT_SECTION = "## Rows read per recurring build (measured)"


def _finish(result: Any) -> list[tuple]:
    """Fetch a statement's whole result: DuckDB writes its profile only then."""
    try:
        return result.fetchall()
    except duckdb.InvalidInputException:  # a statement without a result set
        return []


class _ProfiledConnection:
    """A DuckDB connection whose own `execute` calls are profiled by its warehouse.

    The resource calls the connection directly for its bulk loads, transactions and view
    registrations; their results are never read, so each is fetched here to finish it.
    """

    def __init__(self, con: Any, owner: ProfiledDuckDB) -> None:
        self.raw = con
        self._owner = owner

    def execute(self, sql: str, params: Any = None) -> Any:
        """Run, finish and record one statement."""
        self._owner.before()
        out = self.raw.execute(sql, params)
        _finish(out)
        self._owner.after(sql)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class ProfiledDuckDB(DuckDBWarehouse):
    """DuckDBWarehouse recording rows scanned per statement while `recording(run)` is open."""

    _wrapped: Any = PrivateAttr(default=None)
    _profile: Any = PrivateAttr(default=None)
    _run: Any = PrivateAttr(default=None)
    _stats: Any = PrivateAttr(default_factory=dict)
    _unprofiled: int = PrivateAttr(default=0)

    @property
    def connection(self) -> Any:
        """The resource's connection, wrapped so every `execute` is profiled."""
        con = super().connection
        if self._wrapped is None or self._wrapped.raw is not con:
            self._wrapped = _ProfiledConnection(con, self)
        return self._wrapped

    def execute(self, sql: str, params: list | tuple | None = None) -> int:
        """As the base (the affected row count, -1 when none), profiled."""
        self.before()
        rows = _finish(super().connection.execute(sql, params))
        self.after(sql)
        return int(rows[0][0]) if rows and rows[0] and isinstance(rows[0][0], int) else -1

    def query(self, sql: str, params: list | tuple | None = None) -> list[tuple]:
        """As the base, profiled."""
        self.before()
        rows = super().connection.execute(sql, params).fetchall()
        self.after(sql)
        return rows

    def query_arrow(self, sql: str) -> Any:
        """As the base (it reads the whole result), profiled."""
        self.before()
        out = super().query_arrow(sql)
        self.after(sql)
        return out

    @contextlib.contextmanager
    def recording(self, run: str) -> Iterator[None]:
        """Profile every statement until the block ends, under the run name `run`."""
        raw = super().connection
        fd, name = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        self._profile = Path(name)
        raw.execute("PRAGMA enable_profiling = 'json'")
        raw.execute(f"PRAGMA profiling_output = '{self._profile}'")
        self._run = run
        started = time.perf_counter()
        try:
            yield
        finally:
            raw.execute("PRAGMA disable_profiling")
            self._stats.setdefault(run, {})["(run wall seconds)"] = [
                0,
                0,
                time.perf_counter() - started,
            ]
            self._run = None
            self._profile.unlink(missing_ok=True)
            self._profile = None

    def before(self) -> None:
        """Remove the last profile, so a statement that writes none is not misread."""
        if self._run is not None:
            self._profile.unlink(missing_ok=True)

    def after(self, sql: str) -> None:
        """Add the finished statement's rows scanned and latency to its label."""
        if self._run is None:
            return
        rows, secs = 0, 0.0
        if self._profile.exists() and self._profile.stat().st_size:
            query = json.loads(self._profile.read_text())["query"]
            rows, secs = int(query["total_rows_scanned"]), float(query["total_time"])
        else:
            self._unprofiled += 1
        entry = self._stats.setdefault(self._run, {}).setdefault(label(sql), [0, 0, 0.0])
        entry[0] += 1
        entry[1] += rows
        entry[2] += secs

    @property
    def unprofiled(self) -> int:
        """Statements recorded without a profile (counted as 0 rows)."""
        return self._unprofiled

    @property
    def stats(self) -> dict[str, dict[str, list]]:
        """run -> label -> [statements, rows scanned, seconds]."""
        return self._stats


def cdc_run(wh: ProfiledDuckDB, batch: pl.DataFrame, name: str, batch_id: str) -> None:
    """One CDC run's statements: incomplete lookup, raw append, apply, scoped check."""
    candidates = partial_only([batch])
    with wh.recording(f"incomplete {name}"):
        read_whole_before(wh, SPEC, candidates)
    with wh.recording(f"cdc {name}"):
        append_raw(wh, SPEC, batch, batch_id=batch_id)
        result = apply_batch(wh, SPEC, batch, batch_id=batch_id)
    assert result.applied == batch.height, result
    with wh.recording(f"check {name}"):
        rows, dupes = touched_id_counts(wh, SPEC, batch.to_arrow().column("record_id"))
    assert dupes == 0 and rows > 0


def poll_part(first_idx: int, first_ms: int, tag: str) -> pl.DataFrame:
    """A poll's snapshot part: POLL_ROWS records from `first_idx`, change ids tagged."""
    part = make_backfill(POLL_ROWS, first_idx, first_ms)
    return part.with_columns((pl.lit(tag) + pl.col("record_id")).alias("change_id"))


def worker(rows: int, path: str) -> dict:
    """Build one table size, then profile every recurring run on it."""
    wh = ProfiledDuckDB(path=path)
    started_on = machine()
    started = time.perf_counter()
    build_tables(wh, rows)
    batches.ensure_ledger(wh)
    out: dict[str, Any] = {"rows": rows, "build_s": time.perf_counter() - started}
    out["machine"] = started_on
    out["load_avg"] = os.getloadavg()[0]
    next_ms, seed = BATCH_MS, 1
    # One unprofiled run first: the meta tables' first rows, DuckDB's first-use caches.
    warm = make_batch(CDC_SIZES[0], rows, seed, next_ms)
    append_raw(wh, SPEC, warm, batch_id="warm")
    apply_batch(wh, SPEC, warm, batch_id="warm")
    next_ms, seed = next_ms + warm.height, seed + 1
    for size in CDC_SIZES:
        batch = make_batch(size, rows, seed, next_ms)
        cdc_run(wh, batch, f"{size:,}", f"cdc-{seed}")
        log.info("%s rows: CDC run of %s changes profiled", rows, size)
        next_ms, seed = next_ms + size, seed + 1
    # The previous poll (not profiled), then the one profiled: the most recent records
    # (the top of the id range), the last POLL_NEW of them new, POLL_OVERLAP of them read
    # by both polls, so the ledger sends the second part to raw's anti-join.
    first = rows + POLL_NEW - POLL_ROWS
    before = poll_part(first - POLL_ROWS + POLL_OVERLAP, next_ms, "p1")
    append_raw(wh, SPEC, before, batch_id="poll-1", read_id="poll-job-1")
    apply_batch(wh, SPEC, before, batch_id="poll-1", read_id="poll-job-1")
    part = poll_part(first, next_ms + POLL_ROWS, "p2")
    with wh.recording(f"poll {POLL_ROWS:,}"):
        append_raw(wh, SPEC, part, batch_id="poll-2", read_id="poll-job-2")
        result = apply_batch(wh, SPEC, part, batch_id="poll-2", read_id="poll-job-2")
    assert result.applied == part.height, result
    with wh.recording(f"check poll {POLL_ROWS:,}"):
        touched_id_counts(wh, SPEC, part.to_arrow().column("record_id"))
    out["stats"] = wh.stats
    # Statements DuckDB wrote no profile for (none expected: each is fetched whole).
    out["unprofiled"] = wh.unprofiled
    wh.close()
    return out


def _ratio(small: int, large: int) -> str:
    if small == 0:
        return "n/a (0 rows)" if large == 0 else "inf"
    return f"{large / small:.2f}"


def _meets(small: int, large: int) -> bool:
    return large <= BAR * small if small else large == 0


def dbt_quote() -> list[str]:
    """The dbt statements' table from docs/dbt.md (`bench.dbt_rows_scanned`), as it is."""
    text = (REPO / "docs" / "dbt.md").read_text()
    start = text.find(DBT_SECTION)
    if start == -1:
        return ["(docs/dbt.md has no measured dbt table)"]
    body = text[start:].split("\n## ", 1)[0].splitlines()
    return [line for line in body if line.startswith("|")]


def render(small: dict, large: dict) -> str:
    """The markdown section's body."""
    s, big = small["rows"], large["rows"]
    lines = [
        f"Command: `make bench-scale-statements` (`python -m bench.scale_statements`) on "
        f"{small.get('machine') or machine()}. Table build load: "
        f"{small['load_avg']:.2f} / {large['load_avg']:.2f} "
        "(1-min, at each size's first run); rows scanned are counted, so load does not "
        "change them.",
        "",
        f"Opportunity-shaped tables of {s:,} and {big:,} records (`bench.engine.build_tables`: "
        "current, scd2 and raw, one version each), DuckDB file, the warehouse resource's "
        "settings. Every statement the runs issue is profiled (DuckDB JSON profile, "
        "`total_rows_scanned`: rows the plan's scans read after zone-map pruning and "
        "ART-index lookups, temp tables and the registered batch included) and labelled "
        "`<module.function that sent it>: <first keywords> <target or first FROM table>` "
        "(`bench/statements.py`); n is the statements under that label in one run (inlined "
        "id lists are sent in chunks). Bar: rows at 10M / rows at 1M <= "
        f"{BAR} for every recurring statement.",
        "",
        f"| run | statement | n | rows scanned, {s:,} | rows scanned, {big:,} | ratio | <= {BAR} |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    failing: list[str] = []
    for run, labels in small["stats"].items():
        other = large["stats"].get(run, {})
        for name in sorted(set(labels) | set(other)):
            if name.startswith("("):
                continue
            n, a, _ = labels.get(name, [0, 0, 0.0])
            _, b, _ = other.get(name, [0, 0, 0.0])
            ok = _meets(a, b)
            if not ok:
                failing.append(f"{run} / {name}")
            lines.append(
                f"| {run} | `{name}` | {n} | {a:,} | {b:,} | {_ratio(a, b)} "
                f"| {'yes' if ok else '**no**'} |"
            )
    lines += [
        "",
        f"| run | statements | rows scanned, {s:,} | rows scanned, {big:,} | ratio "
        f"| wall s, {s:,} | wall s, {big:,} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run, labels in small["stats"].items():
        other = large["stats"].get(run, {})
        n = sum(v[0] for k, v in labels.items() if not k.startswith("("))
        a = sum(v[1] for k, v in labels.items() if not k.startswith("("))
        b = sum(v[1] for k, v in other.items() if not k.startswith("("))
        lines.append(
            f"| {run} | {n} | {a:,} | {b:,} | {_ratio(a, b)} "
            f"| {labels['(run wall seconds)'][2]:.2f} | {other['(run wall seconds)'][2]:.2f} |"
        )
    lines += [
        "",
        f"Statements over the bar in this run: {len(failing)}"
        + (": " + "; ".join(f"`{f}`" for f in failing) if failing else "")
        + ".",
        "",
        "Reading it. Every statement of the CDC runs and of the scoped checks reads the same "
        "rows at both sizes (ratio <= 1.00), except:",
        "",
        "- `incomplete.read_whole_before` reads current's `_read_whole` marker of the "
        "candidates by id (one statement per 1,000 ids, PRIMARY KEY index) and sends raw "
        "only the ids it does not settle: NULL (rows from before the marker) from their "
        "first scd2 version on, unmarked ones from the first pending ledger day on (none "
        "pending here, so no raw read). The tables are built as this engine's bootstrap "
        "leaves them (every record read whole: marker TRUE); a current table migrated from "
        "before the marker pays the old O(raw) read for its NULL rows until their next "
        "whole change (docs/engine.md).",
        f"- the polling part ({POLL_ROWS:,} records): above `LITERAL_ID_LIMIT` (20,000) "
        "touched ids, while current holds >= `LIST_MIN_ROWS_PER_ID` (10) rows per touched "
        "id, the ids stay inlined in lists of 20,000, one fetch, close and DELETE per list "
        "(index lookups, scd2 closed by index); before, DuckDB hash-joined the touched-id "
        "temp table and read current and scd2 whole. Index lookups cost ~25-65 us per id "
        "per statement at any size, the join ~0.1 us per table row, so the part is slower "
        "in wall time at these sizes than with the join (docs/engine.md) and faster from a "
        "few hundred rows per id on. Snowflake is unchanged: every size joins the temp "
        "table, pruned by search optimization on `id`.",
        "- `cdc 10,000 / UPDATE sfdc_history` is lower at 10M: with scd2 under 600 rows per "
        "touched id DuckDB closes versions by a scan, which is faster there "
        "(`INDEX_CLOSE_ROWS_PER_ID`); its rows are bounded by 600 x the touched ids.",
        "",
        f"Statements DuckDB wrote no profile for (counted as 0 rows): {small['unprofiled']} "
        f"at {s:,}, {large['unprofiled']} at {big:,}.",
        "",
        "dbt: the frequent domain build's statements, quoted from docs/dbt.md ("
        "`python -m bench.dbt_rows_scanned --small 1000 --large 10000`, the emulator's org "
        "copied 1,000 and 10,000 times; not re-run here):",
        "",
        *dbt_quote(),
    ]
    return "\n".join(lines)


def _run(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bench.scale_statements", *args]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Each size in its own process, then write docs/performance.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(str(s) for s in TABLE_SIZES))
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    parser.add_argument("--render-from", help=argparse.SUPPRESS)  # a log of a previous run
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.worker:
        sys.stdout.write(json.dumps(worker(args.worker, args.path)) + "\n")
        return
    if args.render_from:  # re-render the section from a previous run's log
        lines = Path(args.render_from).read_text().splitlines()
        found = [json.loads(x.split("done: ", 1)[1]) for x in lines if "done: {" in x]
        body = render(found[0], found[-1])
        if not args.no_write:
            replace_section(SECTION, body)
        sys.stdout.write(body + "\n")
        return
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        for rows in (int(x) for x in args.sizes.split(",")):
            path = str(Path(tmp) / f"scale_{rows}.duckdb")
            results.append(_run(["--worker", str(rows), "--path", path]))
            log.info("table of %s rows done: %s", rows, json.dumps(results[-1]))
            Path(path).unlink(missing_ok=True)
    body = render(results[0], results[-1])
    if not args.no_write:
        replace_section(SECTION, body)
    sys.stdout.write(body + "\n")


if __name__ == "__main__":
    main()

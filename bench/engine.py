"""Benchmark of the sync engine on DuckDB (`make bench-engine`).

Measures apply_batch throughput (changes/s) for batches of 1K, 100K and 1M changes into
tables of 1M and 10M rows, and the same 10K-change batch into the 1M- and the 10M-row
table: the ratio shows whether a batch's cost grows with the table (target <= 1.5).
Each table size runs in its own process so its peak RSS is its own. Tables are built
with DuckDB range() (current, scd2 and raw all hold one version per record); batches
are built with polars, vectorised, in the exact change-batch format.

Writes its results table into docs/performance.md under "## Sync engine (make
bench-engine)", replacing only that section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

from resources.duckdb_warehouse import DuckDBWarehouse
from sync_engine import registry
from sync_engine.apply import apply_batch
from sync_engine.changes import batch_schema
from sync_engine.spec import ObjectSpec

log = logging.getLogger("bench.engine")

SPEC = ObjectSpec.of(
    "Opportunity",
    [
        ("Name", "string"),
        ("StageName", "picklist"),
        ("Amount", "currency", 2),
        ("Probability", "percent", 0),
        ("CloseDate", "date"),
        ("IsWon", "boolean"),
        ("IsClosed", "boolean"),
        ("Type", "picklist"),
        ("LeadSource", "picklist"),
        ("AccountId", "reference"),
        ("OwnerId", "reference"),
        ("LastModifiedDate", "datetime"),
    ],
)
TABLE_SIZES = (1_000_000, 10_000_000)
BATCH_SIZES = (1_000, 100_000, 1_000_000)
RATIO_BATCH = 10_000
RATIO_REPEATS = 5
BACKFILL_ROWS = 1_000_000
# Table rows carry versions from 2024-01-01; batches come after, one ms apart.
TABLE_MS = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
BATCH_MS = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
SECTION = "## Sync engine (make bench-engine)"


def _rid(col: str) -> pl.Expr:
    return pl.lit("006") + pl.col(col).cast(pl.String).str.zfill(15)


def build_tables(wh: DuckDBWarehouse, rows: int) -> None:
    """current, scd2 and raw with `rows` records, one version each, built inside DuckDB."""
    registry.sync_schema(wh, SPEC)
    version = (
        f"lpad(({TABLE_MS} + i)::VARCHAR, 15, '0') || '1' || lpad(to_hex(i), 16, '0') "
        "|| lpad(to_hex(i), 8, '0')"
    )
    fields = (
        "'Opportunity ' || i, 'Prospecting', (i % 100000)::DECIMAL(18,2), 10::DECIMAL(18,0), "
        "DATE '2024-06-30' + (i % 365)::INTEGER, FALSE, FALSE, 'New Business', 'Web', "
        "'001' || lpad((i % 100000)::VARCHAR, 15, '0'), "
        "'005' || lpad((i % 500)::VARCHAR, 15, '0'), "
        "TIMESTAMP '2024-01-01'"
    )
    ts = f"make_timestamp(({TABLE_MS} + i) * 1000)"
    rid = "'006' || lpad(i::VARCHAR, 15, '0')"
    con = wh.connection
    con.execute(
        f"INSERT INTO sfdc.opportunity SELECT {rid}, {fields}, FALSE, {version}, 'bulk', "
        f"TIMESTAMP '2024-01-02' FROM range({rows}) r(i)"
    )
    con.execute(
        f"INSERT INTO sfdc_history.opportunity SELECT {rid}, {fields}, FALSE, {version}, 'bulk', "
        f"{ts}, NULL, TRUE, TIMESTAMP '2024-01-02' FROM range({rows}) r(i)"
    )
    set_fields = [f.name for f in SPEC.fields] + ["IsDeleted"]
    con.execute(
        f"INSERT INTO sfdc_raw.opportunity SELECT md5(i::VARCHAR)[:32], {rid}, 'bulk', "
        f"'SNAPSHOT', {version}, {ts}, NULL, {ts}, NULL, NULL, NULL, NULL, ?, '{{}}', 'init', "
        f"TIMESTAMP '2024-01-02', {ts}::DATE, FALSE, {fields} FROM range({rows}) r(i)",
        [set_fields],
    )
    con.execute("CHECKPOINT")


def make_batch(n: int, table_rows: int, seed: int, first_ms: int) -> pl.DataFrame:
    """n in-order changes: 95 % partial UPDATEs of existing records, 5 % CREATEs."""
    rng = np.random.default_rng(seed)
    is_create = rng.random(n) < 0.05
    idx = np.where(
        is_create, table_rows + seed * 10_000_000 + np.arange(n), rng.integers(0, table_rows, n)
    )
    df = pl.DataFrame(
        {
            "idx": idx,
            "n": np.arange(n),
            "create": is_create,
            "amount": rng.integers(0, 10_000_000, n),
        }
    )
    ms = pl.col("n") + first_ms
    cid = pl.lit(f"{seed:08x}") + pl.col("n").cast(pl.String).str.zfill(24)
    all_fields = [f.name for f in SPEC.fields] + ["IsDeleted"]
    created_at = dt.datetime(2025, 1, 1)
    out = df.select(
        cid.alias("change_id"),
        _rid("idx").alias("record_id"),
        pl.lit("cdc").alias("source"),
        pl.when(pl.col("create"))
        .then(pl.lit("CREATE"))
        .otherwise(pl.lit("UPDATE"))
        .alias("change_type"),
        (
            ms.cast(pl.String).str.zfill(15)
            + pl.lit("0" + "0" * 16)
            + pl.lit("1".zfill(10))
            + pl.col("n").cast(pl.String).str.zfill(32)
            + cid.str.slice(0, 8)
        ).alias("version"),
        pl.from_epoch(ms, time_unit="ms").alias("version_ts"),
        pl.from_epoch(ms, time_unit="ms").alias("commit_ts"),
        pl.lit(None, pl.Datetime("us")).alias("system_modstamp"),
        pl.lit("tx").alias("transaction_key"),
        pl.lit(1, pl.Int64).alias("sequence_number"),
        pl.col("n").cast(pl.String).alias("replay_id"),
        pl.lit(None, pl.String).alias("schema_id"),
        pl.when(pl.col("create"))
        .then(pl.lit(all_fields, pl.List(pl.String)))
        .otherwise(pl.lit(["Amount", "StageName"], pl.List(pl.String)))
        .alias("set_fields"),
        pl.lit('{"Amount": "1.00"}').alias("payload"),
        pl.lit(None, pl.String).alias("batch_id"),
        pl.lit(None, pl.Datetime("us")).alias("ingested_at"),
        pl.from_epoch(ms, time_unit="ms").dt.date().alias("change_date"),
        pl.when(pl.col("create")).then(False).otherwise(None).alias("is_deleted"),
        pl.when(pl.col("create")).then(pl.lit("New deal")).alias("name"),
        pl.lit("Negotiation").alias("stagename"),
        (pl.col("amount").cast(pl.Decimal(18, 2)) / 100).cast(pl.Decimal(18, 2)).alias("amount"),
        pl.when(pl.col("create")).then(pl.lit(10)).cast(pl.Decimal(18, 0)).alias("probability"),
        pl.when(pl.col("create")).then(pl.lit(dt.date(2025, 6, 30))).alias("closedate"),
        pl.when(pl.col("create")).then(False).alias("iswon"),
        pl.when(pl.col("create")).then(False).alias("isclosed"),
        pl.when(pl.col("create")).then(pl.lit("New Business")).alias("type"),
        pl.when(pl.col("create")).then(pl.lit("Web")).alias("leadsource"),
        pl.when(pl.col("create")).then(pl.lit("001000000000000001")).alias("accountid"),
        pl.when(pl.col("create")).then(pl.lit("005000000000000001")).alias("ownerid"),
        pl.when(pl.col("create")).then(pl.lit(created_at)).alias("lastmodifieddate"),
    )
    assert out.columns == batch_schema(SPEC).names
    return out


def make_backfill(n: int, first_idx: int, first_ms: int) -> pl.DataFrame:
    """n snapshot rows (Bulk backfill shape) of records `first_idx`.. , all fields set."""
    df = make_batch(n, 1, 1, first_ms).with_columns(
        _rid_from(first_idx, n).alias("record_id"),
        pl.lit("bulk").alias("source"),
        pl.lit("SNAPSHOT").alias("change_type"),
        pl.lit([f.name for f in SPEC.fields] + ["IsDeleted"], pl.List(pl.String)).alias(
            "set_fields"
        ),
        pl.lit(False).alias("is_deleted"),
        pl.lit("Backfilled deal").alias("name"),
        pl.lit(10, pl.Decimal(18, 0)).alias("probability"),
        pl.lit(dt.date(2025, 6, 30)).alias("closedate"),
        pl.lit(False).alias("iswon"),
        pl.lit(False).alias("isclosed"),
        pl.lit("New Business").alias("type"),
        pl.lit("Web").alias("leadsource"),
        pl.lit("001000000000000001").alias("accountid"),
        pl.lit("005000000000000001").alias("ownerid"),
        pl.lit(dt.datetime(2025, 1, 1)).alias("lastmodifieddate"),
    )
    # A snapshot's version has priority 1 (DESIGN §4); distinct change ids per run.
    return df.with_columns(
        (pl.col("version").str.slice(0, 15) + pl.lit("1") + pl.col("version").str.slice(16)).alias(
            "version"
        ),
        (pl.lit("bf") + pl.col("change_id")).alias("change_id"),
    )


def _rid_from(first_idx: int, n: int) -> pl.Series:
    idx = pl.DataFrame({"i": np.arange(first_idx, first_idx + n)})
    return idx.select(_rid("i")).to_series()


def _timed_apply(wh: DuckDBWarehouse, batch: pl.DataFrame) -> float:
    started = time.perf_counter()
    result = apply_batch(wh, SPEC, batch)
    elapsed = time.perf_counter() - started
    assert result.applied == batch.height, result
    return elapsed


def worker(rows: int, path: str) -> dict:
    """Build one table size and run every measurement on it."""
    wh = DuckDBWarehouse(path=path)
    started = time.perf_counter()
    build_tables(wh, rows)
    out: dict = {"rows": rows, "build_s": time.perf_counter() - started}
    out["load_avg"] = os.getloadavg()[0]
    next_ms = BATCH_MS
    seed = 1
    ratio_times = []
    for _ in range(RATIO_REPEATS):
        batch = make_batch(RATIO_BATCH, rows, seed, next_ms)
        ratio_times.append(_timed_apply(wh, batch))
        seed, next_ms = seed + 1, next_ms + RATIO_BATCH
    out["ratio_s"] = ratio_times
    out["batches"] = {}
    for size in BATCH_SIZES:
        batch = make_batch(size, rows, seed, next_ms)
        elapsed = _timed_apply(wh, batch)
        out["batches"][size] = elapsed
        log.info("%s rows, %s changes: %.2f s", rows, size, elapsed)
        seed, next_ms = seed + 1, next_ms + size
    # Backfill shape: BACKFILL_ROWS snapshot rows of records new to the table.
    backfill = make_backfill(BACKFILL_ROWS, rows + 900_000_000, next_ms)
    out["backfill_s"] = _timed_apply(wh, backfill)
    log.info("%s rows, backfill of %s: %.2f s", rows, BACKFILL_ROWS, out["backfill_s"])
    started = time.perf_counter()
    wh.execute("CHECKPOINT")
    out["checkpoint_s"] = time.perf_counter() - started
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wh.close()
    return out


def empty_worker(path: str) -> dict:
    """The backfill batch into an empty table (its own process: its own peak RSS)."""
    wh = DuckDBWarehouse(path=path)
    registry.sync_schema(wh, SPEC)
    backfill = make_backfill(BACKFILL_ROWS, 0, BATCH_MS)
    elapsed = _timed_apply(wh, backfill)
    wh.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": 0, "backfill_s": elapsed, "peak_rss_mb": rss}


def render(results: list[dict], empty: dict | None = None) -> str:
    """The markdown section."""
    cpu = psutil.cpu_count()
    mem = psutil.virtual_memory().total / 2**30
    lines = [
        SECTION,
        "",
        f"Measured by `python -m bench.engine` on {dt.date.today()} ({platform.machine()}, "
        f"{cpu} CPUs, {mem:.0f} GiB RAM, Python {platform.python_version()}, DuckDB file on "
        "local disk). Changes are in-order CDC rows: 95 % partial UPDATEs (Amount, StageName) "
        "of random existing records, 5 % CREATEs; every apply covers raw append, current "
        "and scd2 in one call. Each table size runs in its own process.",
        "",
        "| table rows | batch changes | apply time (s) | changes/s |",
        "|---:|---:|---:|---:|",
    ]
    for r in results:
        for size, secs in r["batches"].items():
            lines.append(
                f"| {r['rows']:,} | {int(size):,} | {secs:.2f} | {int(size) / secs:,.0f} |"
            )
    small, big = results[0], results[-1]
    med_small = statistics.median(small["ratio_s"])
    med_big = statistics.median(big["ratio_s"])
    ratio = med_big / med_small
    verdict = "met" if ratio <= 1.5 else "NOT met"
    lines += [
        "",
        f"Same-size batch ({RATIO_BATCH:,} changes, median of {RATIO_REPEATS}) into "
        f"{small['rows']:,} vs {big['rows']:,} rows: **{med_small:.2f} s vs {med_big:.2f} s, "
        f"ratio {ratio:.2f}** (target <= 1.5: {verdict} in this run; samples "
        f"{min(small['ratio_s']):.2f}-{max(small['ratio_s']):.2f} s vs "
        f"{min(big['ratio_s']):.2f}-{max(big['ratio_s']):.2f} s).",
        "",
        f"Backfill shape: {BACKFILL_ROWS:,} snapshot rows of new records in one apply "
        "(raw + current + scd2, the fast path):",
        "",
        "| into a table of | seconds | rows/s |",
        "|---:|---:|---:|",
    ]
    targets = ([empty] if empty else []) + list(results)
    for r in targets:
        if r.get("backfill_s"):
            label = f"{r['rows']:,} rows" if r["rows"] else "empty table"
            lines.append(
                f"| {label} | {r['backfill_s']:.1f} | {BACKFILL_ROWS / r['backfill_s']:,.0f} |"
            )
    lines += [
        "",
        "| table rows | peak RSS (MB) | CHECKPOINT after the run (s) | table build (s) "
        "| 1-min load at start |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['peak_rss_mb']:,.0f} | {r['checkpoint_s']:.1f} "
            f"| {r['build_s']:.1f} | {r['load_avg']:.1f} |"
        )
    lines += [
        "",
        "Reading the ratio: batches up to 20,000 touched records reach current and scd2 "
        "through the ART index (`id IN (...)` index scans, then DELETE + INSERT/UPDATE of "
        "just those rows), ~100 us per record at either size; raw's anti-join reads only the "
        "batch's change_date days. What still grows from 1M to 10M rows is the number of "
        "storage vectors (2,048 rows each) a random 10K batch lands in: ~490 (all of them) at "
        "1M, ~4,300 at 10M; DuckDB updates, deletes and commits per touched vector. Past "
        "~20M rows nearly every change has a vector of its own, so the cost should stop "
        "growing there (an argument, not measured here). Real CDC batches touch recently "
        "active records, whose ids cluster, so they touch fewer vectors than this uniform "
        "draw. A DuckDB CHECKPOINT rewrites the ART indexes whole and does grow with the "
        "table: the warehouse resource raises `checkpoint_threshold` to 1 GB of WAL so one "
        "comes every ~100+ batches of 10K changes instead of after each (with DuckDB's "
        "16 MB default the ratio was 1.76); its cost is shown above, once per run, outside "
        "the per-batch times. Peak RSS is set by the 1M-change batch (the fold sorts it in "
        "memory); the 1K batches are dominated by the ~15 statements' fixed cost. The "
        "machine is shared: note the load column. See docs/engine.md.",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str, path: Path = Path("docs/performance.md")) -> None:
    """Replace (or append) this benchmark's section, leaving the others as they are."""
    doc = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text + "\n", doc)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> None:
    """Run each table size in a subprocess, then write docs/performance.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--empty-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(str(s) for s in TABLE_SIZES))
    parser.add_argument("--render-from", help=argparse.SUPPRESS)  # a log of a previous run
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.empty_worker:
        sys.stdout.write(json.dumps(empty_worker(args.path)) + "\n")
        return
    if args.worker:
        sys.stdout.write(json.dumps(worker(args.worker, args.path)) + "\n")
        return
    if args.render_from:  # re-render the section from a previous run's log
        lines = Path(args.render_from).read_text().splitlines()
        found = [json.loads(x.split("done: ", 1)[1]) for x in lines if "done: {" in x]
        empties = [r for r in found if not r["rows"]]
        write_section(render([r for r in found if r["rows"]], empties[0] if empties else None))
        return
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        path = str(Path(tmp) / "bench_empty.duckdb")
        cmd = [sys.executable, "-m", "bench.engine", "--empty-worker", "--path", path]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        empty = json.loads(proc.stdout.strip().splitlines()[-1])
        log.info("empty-table backfill done: %s", json.dumps(empty))
        for rows in (int(s) for s in args.sizes.split(",")):
            path = str(Path(tmp) / f"bench_{rows}.duckdb")
            cmd = [sys.executable, "-m", "bench.engine", "--worker", str(rows), "--path", path]
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            log.info("table of %s rows done: %s", rows, json.dumps(results[-1]))
            Path(path).unlink(missing_ok=True)
    text = render(results, empty)
    write_section(text)
    log.info("\n%s", text)


if __name__ == "__main__":
    main()

"""Benchmark of the sync engine on DuckDB (`make bench-engine`).

Measures, side by side in one run: backfills of new records (1M as one batch and as
100K-row parts, 5M as 1M-row parts) into an empty table, rows/s and peak RSS (target
>= 250K rows/s, < 1 GB whatever the object's size); apply_batch throughput for CDC
batches of 1K, 100K and 1M changes and a 1M-record backfill into tables of 1M and 10M
rows; and the same 10K-change batch into the 1M- and the 10M-row table: the ratio shows
whether a batch's cost grows with the table (target <= 1.5). Every measurement runs in
its own process so its peak RSS is its own. Tables are built
with DuckDB range() (current, scd2 and raw all hold one version per record); batches
are built with polars, vectorised, in the exact change-batch format.

Writes its results into docs/performance.md under "## Sync engine (make bench-engine)"
(bench.report.replace_section), with the machine facts, replacing only that section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from bench.report import RssSampler, machine, replace_section
from resources.duckdb_warehouse import DEFAULT_MEMORY_LIMIT, DuckDBWarehouse
from sync_engine import registry
from sync_engine.apply import CHUNK_ROWS, apply_batch
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
# (records, rows per apply_batch call) backfilled into an empty table: 1M as one batch, as
# landed parts of 100K rows, and 5M as 1M-row parts (does memory grow with the object?).
BACKFILLS = ((1_000_000, 1_000_000), (1_000_000, 100_000), (5_000_000, 1_000_000))
# Table rows carry versions from 2024-01-01; batches come after, one ms apart.
TABLE_MS = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
BATCH_MS = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
SECTION = "## Sync engine (make bench-engine)"


def _rid(col: str) -> pl.Expr:
    return pl.lit("006") + pl.col(col).cast(pl.String).str.zfill(15)


def build_tables(wh: DuckDBWarehouse, rows: int) -> None:
    """current, scd2 and raw with `rows` records, one version each, built inside DuckDB.

    As a bootstrap applied by this engine leaves them: every record read whole once (its
    snapshot in raw), so current's `_read_whole` marker is TRUE.
    """
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
        f"TIMESTAMP '2024-01-02', TRUE FROM range({rows}) r(i)"
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
        # One snapshot per record: the record id makes the change id unique across parts.
        (pl.lit("bf") + pl.col("record_id")).alias("change_id"),
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


def backfill_worker(path: str, records: int, part: int) -> dict:
    """`records` new records backfilled into an empty table, `part` rows per apply_batch.

    Its own process, so its peak RSS (sampled while applying) is the backfill's own. Each
    part is generated just before its apply, as landed Parquet parts are read one at a time.
    """
    wh = DuckDBWarehouse(path=path)
    registry.sync_schema(wh, SPEC)
    out: dict = {"records": records, "part": part, "load_avg": os.getloadavg()[0]}
    elapsed = 0.0
    with RssSampler() as rss:
        for first in range(0, records, part):
            backfill = make_backfill(min(part, records - first), first, BATCH_MS + first)
            elapsed += _timed_apply(wh, backfill)
            del backfill
    wh.close()
    out["backfill_s"] = elapsed
    out["peak_rss_mb"] = rss.peak[0] / 2**20
    return out


def render(results: list[dict], backfills: list[dict]) -> str:
    """The markdown section's body."""
    lines = [
        f"Measured by `make bench-engine` (`python -m bench.engine`) on {machine()}; DuckDB "
        f"file on local disk, the warehouse resource's settings ({DEFAULT_MEMORY_LIMIT} "
        "memory_limit). Every apply covers raw append, current and scd2; every measurement "
        "runs in its own process, so each peak RSS is its own.",
        "",
        "**Backfill** (Bulk snapshot rows of records new to the table, the all-new path: "
        "no fold, plain INSERTs; batches above "
        f"{CHUNK_ROWS:,} rows are applied in chunks of whole records):",
        "",
        "| backfill | into | apply_batch calls | seconds | rows/s | peak RSS (MB) | 1-min load |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for b in backfills:
        calls = -(-b["records"] // b["part"])
        shape = "one batch" if calls == 1 else f"{calls} parts of {b['part']:,}"
        lines.append(
            f"| {b['records']:,} new records, {shape} | empty table | {calls} "
            f"| {b['backfill_s']:.1f} | {b['records'] / b['backfill_s']:,.0f} "
            f"| {b['peak_rss_mb']:,.0f} | {b['load_avg']:.1f} |"
        )
    for r in results:
        lines.append(
            f"| {BACKFILL_ROWS:,} new records, one batch | {r['rows']:,} rows | 1 "
            f"| {r['backfill_s']:.1f} | {BACKFILL_ROWS / r['backfill_s']:,.0f} "
            f"| (below) | {r['load_avg']:.1f} |"
        )
    small, big = results[0], results[-1]
    med_small = statistics.median(small["ratio_s"])
    med_big = statistics.median(big["ratio_s"])
    ratio = med_big / med_small
    verdict = "met" if ratio <= 1.5 else "NOT met"
    lines += [
        "",
        "**CDC batches** (in-order CDC rows: 95 % partial UPDATEs of Amount and StageName of "
        "random existing records, 5 % CREATEs):",
        "",
        "| table rows | batch changes | apply time (s) | changes/s |",
        "|---:|---:|---:|---:|",
    ]
    for r in results:
        for size, secs in r["batches"].items():
            lines.append(
                f"| {r['rows']:,} | {int(size):,} | {secs:.2f} | {int(size) / secs:,.0f} |"
            )
    lines += [
        "",
        f"Same-size batch ({RATIO_BATCH:,} changes, median of {RATIO_REPEATS}) into "
        f"{small['rows']:,} vs {big['rows']:,} rows: **{med_small:.2f} s vs {med_big:.2f} s, "
        f"ratio {ratio:.2f}** (target <= 1.5: {verdict} in this run; samples "
        f"{min(small['ratio_s']):.2f}-{max(small['ratio_s']):.2f} s vs "
        f"{min(big['ratio_s']):.2f}-{max(big['ratio_s']):.2f} s).",
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
        "Reading the backfill rows: a part is generated right before its apply and dropped "
        "after, like a landed Parquet part. Within one apply_batch, memory follows the "
        f"{CHUNK_ROWS:,}-row chunk (each is converted from the caller's frame, staged, "
        "written and committed before the next); the one-batch rows include the caller's "
        "own 1M-row polars frame (~570 MB). What still grows with the object is DuckDB's: "
        "its ART indexes (current's PRIMARY KEY and scd2's id index, ~80 MB per million "
        "records, not evictable), its cache of written blocks (evictable, up to "
        "memory_limit) and, for parts smaller than a row group (122,880 rows), the rows "
        "kept in memory until a checkpoint (the resource's 1 GB checkpoint_threshold): "
        "compare the 1M and the 5M rows, and the 100K-row parts. Time is mostly raw's append (30 "
        "columns with payload and set_fields), the current and scd2 INSERTs (ART inserts "
        "included), the Arrow loads and the commits (docs/engine.md, backfill throughput).",
        "",
        "Reading the ratio: batches up to 20,000 touched records reach current and scd2 "
        "through the ART index (`id IN (...)` index scans, then DELETE + INSERT/UPDATE of "
        "just those rows), ~100 us per record at either size; raw's anti-join reads only the "
        "batch's change_date days. What still grows from 1M to 10M rows is the number of "
        "storage vectors (2,048 rows each) a random 10K batch lands in: ~490 (all of them) at "
        "1M, ~4,300 at 10M; DuckDB updates, deletes and commits per touched vector. Real CDC "
        "batches touch recently active records, whose ids cluster, so they touch fewer "
        "vectors than this uniform draw. A DuckDB CHECKPOINT rewrites the ART indexes whole "
        "and does grow with the table: the warehouse resource raises `checkpoint_threshold` "
        "to 1 GB of WAL so one comes every ~100+ batches of 10K changes instead of after "
        "each; its cost is shown above, once per run, outside the per-batch times. The "
        "table-size workers' peak RSS includes building the table and the 1M-change CDC "
        "batch. The machine is shared: note the load columns. See docs/engine.md.",
    ]
    return "\n".join(lines)


def _run(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bench.engine", *args]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Run each measurement in a subprocess, then write docs/performance.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backfill-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(str(s) for s in TABLE_SIZES))
    parser.add_argument(
        "--backfills",
        default=",".join(f"{r}:{p}" for r, p in BACKFILLS),
        help="records:rows-per-apply, comma-separated",
    )
    parser.add_argument("--render-from", help=argparse.SUPPRESS)  # a log of a previous run
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.backfill_worker:
        records, part = args.backfill_worker
        sys.stdout.write(json.dumps(backfill_worker(args.path, records, part)) + "\n")
        return
    if args.worker:
        sys.stdout.write(json.dumps(worker(args.worker, args.path)) + "\n")
        return
    if args.render_from:  # re-render the section from a previous run's log
        lines = Path(args.render_from).read_text().splitlines()
        found = [json.loads(x.split("done: ", 1)[1]) for x in lines if "done: {" in x]
        body = render(
            [r for r in found if "records" not in r], [r for r in found if "records" in r]
        )
        replace_section(SECTION, body)
        return
    results, backfills = [], []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        for spec in args.backfills.split(","):
            records, part = (int(x) for x in spec.split(":"))
            path = str(Path(tmp) / f"bench_backfill_{records}.duckdb")
            backfills.append(_run(["--backfill-worker", str(records), str(part), "--path", path]))
            log.info("backfill done: %s", json.dumps(backfills[-1]))
            Path(path).unlink(missing_ok=True)
        for rows in (int(s) for s in args.sizes.split(",")):
            path = str(Path(tmp) / f"bench_{rows}.duckdb")
            results.append(_run(["--worker", str(rows), "--path", path]))
            log.info("table of %s rows done: %s", rows, json.dumps(results[-1]))
            Path(path).unlink(missing_ok=True)
    body = render(results, backfills)
    replace_section(SECTION, body)
    log.info("\n%s", body)


if __name__ == "__main__":
    main()

"""What appending one whole-history Bulk part to raw costs as raw grows (issue 11 item 3).

`python -m bench.raw_append [rows ...]` builds, per raw size, a DuckDB file whose raw holds
that many rows spread over five years of change dates, as the earlier 50K-row parts of one
Bulk job leave it (and, when the engine has one, its raw-append ledger says so), then
times `append_raw` of: the next 50K-row part of the same job (its change dates span the
whole history, as a bootstrap part's do), the same part appended again (a retried run),
and a part of another read over records raw holds (a re-backfill: it must still be
compared with raw). Prints one JSON line per size. Not a unit test: the numbers depend
on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from bench.engine import BATCH_MS, SPEC, make_backfill
from resources.duckdb_warehouse import DuckDBWarehouse
from sync_engine import registry
from sync_engine.apply import append_raw

log = logging.getLogger("bench.raw_append")

PART_ROWS = 50_000
HISTORY_DAYS = 5 * 365
FIRST_DAY = dt.date(2021, 1, 1)
JOB = "bulk-750000000000001"
READ = f"backfill/Opportunity/{FIRST_DAY}/{JOB}"
DEFAULT_SIZES = (2_000_000, 8_000_000, 32_000_000)


def build_raw(wh: DuckDBWarehouse, rows: int) -> None:
    """`rows` raw snapshot rows, change dates over HISTORY_DAYS, as earlier parts of JOB."""
    registry.sync_schema(wh, SPEC)
    con = wh.connection
    set_fields = [f.name for f in SPEC.fields] + ["IsDeleted"]
    day = f"(DATE '{FIRST_DAY}' + (i % {HISTORY_DAYS})::INTEGER)"
    ts = f"{day}::TIMESTAMP"
    label = f"'{JOB}-{FIRST_DAY:%Y%m%d}-p' || (i // {PART_ROWS})::VARCHAR"
    nulls = ", ".join(["NULL"] * len(SPEC.fields))
    con.execute(
        f"INSERT INTO sfdc_raw.opportunity SELECT md5(i::VARCHAR)[:32], "
        f"'006' || lpad(i::VARCHAR, 15, '0'), 'bulk', 'SNAPSHOT', lpad(i::VARCHAR, 40, '0'), "
        f"{ts}, NULL, {ts}, NULL, NULL, NULL, NULL, ?, '{{}}', {label} || '-x', "
        f"TIMESTAMP '2026-01-02', {day}, FALSE, {nulls} FROM range({rows}) r(i)",
        [set_fields],
    )
    ledger = con.execute(
        "SELECT COUNT(*) FROM duckdb_tables() WHERE schema_name = 'sfdc_meta' "
        "AND table_name = 'raw_appends'"
    ).fetchone()
    if ledger and ledger[0]:
        # What the parts' appends recorded: their read, label, rows and ranges.
        con.execute("DELETE FROM sfdc_meta.raw_appends")
        con.execute(
            "INSERT INTO sfdc_meta.raw_appends SELECT 'Opportunity', batch_id, ?, "
            "regexp_replace(batch_id, '-x$', ''), 'bulk', COUNT(*), MIN(change_date), "
            "MAX(change_date), MIN(record_id), MAX(record_id), TIMESTAMP '2026-01-02' "
            "FROM sfdc_raw.opportunity GROUP BY batch_id",
            [READ],
        )
    con.execute("CHECKPOINT")


def whole_history_part(first_idx: int, change_prefix: str) -> pl.DataFrame:
    """A 50K-row Bulk part of new records whose change dates span the whole history."""
    part = make_backfill(PART_ROWS, first_idx, BATCH_MS)
    days = pl.int_range(0, pl.len()) % HISTORY_DAYS
    return part.with_columns(
        (pl.lit(FIRST_DAY) + pl.duration(days=days)).alias("change_date"),
        (pl.lit(change_prefix) + pl.col("record_id")).alias("change_id"),
    )


def _append(wh: DuckDBWarehouse, part: pl.DataFrame, label: str, read: str | None) -> float:
    kwargs: dict[str, Any] = {}
    if "read_id" in inspect.signature(append_raw).parameters:
        kwargs["read_id"] = read
    started = time.perf_counter()
    append_raw(wh, SPEC, part, batch_id=label, **kwargs)
    return time.perf_counter() - started


def measure(rows: int, directory: Path) -> dict[str, Any]:
    """One raw size: build it, then time the three appends."""
    wh = DuckDBWarehouse(path=str(directory / f"raw{rows}.duckdb"))
    started = time.perf_counter()
    build_raw(wh, rows)
    out: dict[str, Any] = {"raw_rows": rows, "build_s": round(time.perf_counter() - started, 1)}
    label = f"{JOB}-{FIRST_DAY:%Y%m%d}-p{rows // PART_ROWS}"
    part = whole_history_part(rows, "bf")
    out["next_part_same_read_s"] = round(_append(wh, part, label, READ), 3)
    out["same_part_again_s"] = round(_append(wh, part, label, READ), 3)
    # A re-backfill of records raw holds (new states: other change ids): compared.
    other = whole_history_part(0, "rb")
    other_read = f"backfill/Opportunity/{FIRST_DAY}/bulk-750000000000002"
    out["part_of_another_read_s"] = round(
        _append(wh, other, f"bulk-750000000000002-{FIRST_DAY:%Y%m%d}-p0", other_read), 3
    )
    held = wh.query("SELECT COUNT(*), COUNT(DISTINCT change_id) FROM sfdc_raw.opportunity")[0]
    assert held[0] == held[1] == rows + 2 * PART_ROWS, held
    out["load_avg"] = round(os.getloadavg()[0], 1)
    wh.close()
    return out


def warm_up(directory: Path) -> None:
    """One append into a scratch file first: the first call imports pandas (~1.6 s here)."""
    wh = DuckDBWarehouse(path=str(directory / "warm.duckdb"))
    registry.sync_schema(wh, SPEC)
    _append(wh, whole_history_part(0, "warm"), "warm-up", None)
    wh.close()


def main(argv: list[str] | None = None) -> None:
    """Measure each raw size given (default 2M, 8M, 32M) and log one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", nargs="*", type=int, default=list(DEFAULT_SIZES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-raw-append-") as tmp:
        warm_up(Path(tmp))
        for rows in args.rows:
            log.info(json.dumps(measure(rows, Path(tmp))))
            for leftover in Path(tmp).glob("*.duckdb*"):
                leftover.unlink()


if __name__ == "__main__":
    main()

"""How long one landed poll part holds the DuckDB file, and where that time goes.

    .venv/bin/python -m bench.poll_hold --warehouse W.duckdb --part P.parquet [--object Task]

Locally one process at a time can write the warehouse file, so a run that applies a poll
of Task (tens of thousands of snapshots into a 10M-row table) stops every revenue CDC
apply for as long as it holds the file (issue 11, docs/performance.md). This replays one
validated part (`landing/_validated/<Object>/<day>/<label>.parquet`, from a bench-scale
run's landing) on copies of a warehouse taken before that part was applied, as the poll's
run does: `append_raw` (the raw step), `apply_batch` (the apply step), then closing the
connection, which makes DuckDB checkpoint the WAL (rewriting the changed tables' ART
indexes). Side by side, each in its own process on a fresh copy: as the warehouse is, and
with the object's lookup indexes (`objects.yaml` `lookup_fields`) dropped first.
Prints a markdown table: seconds per phase and the slowest statements.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("as is", "lookup indexes dropped")
TOP = 4


def _replay(warehouse: str, part: str, obj: str, drop_lookups: bool) -> dict[str, Any]:
    import duckdb
    import pyarrow.parquet as pq

    from bench.statements import label
    from resources.duckdb_warehouse import DuckDBWarehouse
    from sfdc_assets.describe import registry_spec
    from sync_engine import in_flight
    from sync_engine.apply import append_raw, apply_batch

    if drop_lookups:
        con = duckdb.connect(warehouse)
        indexes = con.execute(
            "SELECT schema_name, index_name FROM duckdb_indexes() "
            "WHERE table_name = ? AND index_name LIKE '%lookup_idx'",
            [obj.lower()],
        ).fetchall()
        for schema, name in indexes:
            con.execute(f'DROP INDEX "{schema}"."{name}"')
        con.close()

    spent: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])

    class Timed(DuckDBWarehouse):
        def execute(self, sql: str, params: list | tuple | None = None) -> int:
            start = time.perf_counter()
            try:
                return super().execute(sql, params)
            finally:
                entry = spent[label(sql)]
                entry[0] += 1
                entry[1] += time.perf_counter() - start

    wh = Timed(path=warehouse)
    spec = registry_spec(wh, obj)
    if spec is None:
        raise SystemExit(f"{warehouse} has no schema registry entry for {obj}")
    # A warehouse from before sfdc_meta.apply_in_flight (the run's schema step creates it).
    in_flight.ensure(wh)
    table = pq.read_table(part)
    batch_id = Path(part).stem
    out: dict[str, Any] = {"rows": table.num_rows}
    start = time.perf_counter()
    append_raw(wh, spec, table, batch_id=batch_id)
    out["append_raw"] = time.perf_counter() - start
    spent.clear()
    start = time.perf_counter()
    apply_batch(wh, spec, table, batch_id=batch_id)
    out["apply_batch"] = time.perf_counter() - start
    start = time.perf_counter()
    wh.close()
    out["close"] = time.perf_counter() - start
    slowest = sorted(spent.items(), key=lambda kv: -kv[1][1])[:TOP]
    out["slowest"] = [(name, n, s) for name, (n, s) in slowest]
    return out


def main(argv: list[str] | None = None) -> None:
    """Replay the part on fresh copies, one process per variant; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", required=True, help="DuckDB file the part is new to")
    parser.add_argument("--part", required=True, help="a validated part (.parquet)")
    parser.add_argument("--object", default="Task")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = _replay(args.warehouse, args.part, args.object, args.child == VARIANTS[1])
        sys.stdout.write(json.dumps(result) + "\n")
        return
    rows = []
    with tempfile.TemporaryDirectory(dir=Path(args.warehouse).parent) as tmp:
        for variant in VARIANTS:
            copy = str(Path(tmp) / "copy.duckdb")
            shutil.copyfile(args.warehouse, copy)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.poll_hold",
                    "--warehouse",
                    copy,
                    "--part",
                    args.part,
                    "--object",
                    args.object,
                    "--child",
                    variant,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append((variant, json.loads(done.stdout.strip().splitlines()[-1])))
            Path(copy).unlink()
    lines = [
        f"| {args.object} part | rows | append_raw s | apply_batch s | close (checkpoint) s "
        "| held in all s | slowest statements of the apply (s) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for variant, r in rows:
        held = r["append_raw"] + r["apply_batch"] + r["close"]
        slow = "; ".join(f"`{name}` {s:.2f}" for name, _, s in r["slowest"])
        lines.append(
            f"| {variant} | {r['rows']:,} | {r['append_raw']:.2f} | {r['apply_batch']:.2f} "
            f"| {r['close']:.2f} | {held:.2f} | {slow} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

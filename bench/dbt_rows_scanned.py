"""Rows each recurring dbt statement reads, at two table sizes (issue 11: ratio <= 1.5).

    .venv/bin/python -m bench.dbt_rows_scanned [--small 1000] [--large 10000]

For each size: the emulator's tiny org, backfilled by the real engine, is copied `factor`
times in SQL (ids rewritten per copy, references too, so the graph stays whole), every
row stamped 20 days old; `dbt build` (full), mart rows aged 10 days; then one fixed change
set through the engine (the same absolute size at both scales); then the statements a
frequent domain build runs are profiled with DuckDB (`enable_profiling = json`,
`total_rows_scanned`: rows its scans read after zone-map pruning): the incremental marts'
batch queries (compiled with is_incremental() true) plus the affected-keys queries dbt
runs first to inline the keys (macros/incremental.sql `inlined_keys`), and, after that
incremental build, every test compiled with `recent_days: 2`. DuckDB's zone maps skip
row groups whose `_synced_at` range is outside a filter (and, for a literal key list or
the join filters DuckDB derives from a small build side, whose key range is), the
analogue of Snowflake's micro-partition pruning. Prints a markdown table; writes nothing
to the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from sync_engine import changes as ch
from sync_engine.warehouse import Warehouse
from tests.dbt.harness import ANCHOR, apply, build_org_warehouse, engine, run_dbt

AGED = dt.timedelta(days=20)
MART_AGE = dt.timedelta(days=10)
# The marts a build writes (commission_preview is a view: no rows read at build time).
TABLE_MARTS = ("fct_opportunity_history", "dim_account", "fct_account_activity", "fct_pipeline")


def _id_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[str]:
    rows = con.execute(
        "select column_name from information_schema.columns where table_schema = ? "
        "and table_name = ? and data_type = 'VARCHAR' and (column_name = 'id' "
        "or column_name like '%id')",
        [schema, table],
    ).fetchall()
    return [r[0] for r in rows]


def scale(path: Path, factor: int) -> None:
    """Copy every current/scd2 row `factor - 1` times with per-copy ids; age everything."""
    con = duckdb.connect(str(path))
    try:
        # Copying is faster without the indexes; they are rebuilt after, as the engine has
        # them (current's PRIMARY KEY is part of the table and stays).
        indexes = con.execute(
            "select schema_name, index_name, sql from duckdb_indexes() "
            "where schema_name in ('sfdc', 'sfdc_history') and sql is not null"
        ).fetchall()
        for schema, index, _ in indexes:
            con.execute(f'drop index "{schema}"."{index}"')
        old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - AGED
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('sfdc', 'sfdc_history') and table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in tables:
            ids = _id_columns(con, schema, table)
            t = f'"{schema}"."{table}"'
            replace = ", ".join(
                f'case when "{c}" is null or length("{c}") <> 18 then "{c}" else '
                f'left("{c}", 5) || lpad(cast(copy as varchar), 7, \'0\') || right("{c}", 6) '
                f'end as "{c}"'
                for c in ids
            )
            con.execute(
                f"insert into {t} select * exclude (copy) replace ({replace}) "
                f"from {t}, range(1, {factor}) as r(copy)"
            )
            con.execute(f"update {t} set _synced_at = ?", [old])
        for _, _, sql in indexes:
            con.execute(sql)
    finally:
        con.close()


def _cdc(spec, record_id: str, change_type: str, values: dict | None = None) -> Any:
    values = values or {}
    at = ANCHOR + dt.timedelta(minutes=30)
    return ch.cdc_change(
        spec,
        event_uuid=f"{change_type}-{record_id}",
        record_id=record_id,
        change_type=change_type,
        commit_ms=ch.ms_of(at),
        transaction_key=f"tx-{record_id}",
        sequence_number=1,
        values=values,
        changed_fields=list(values),
    )


def change_set(path: Path, built: dict) -> None:
    """The same absolute changes at every size: 20 opportunity updates, 5 deletes,
    40 task updates, 10 task deletes, 5 contact moves."""
    with engine(path) as wh:
        apply_change_set(wh, built)


def apply_change_set(wh: Warehouse, built: dict) -> None:
    """`change_set`'s changes through the engine on any warehouse resource (DuckDB or
    Snowflake; bench.dbt_snowflake_statements applies them on fakesnow)."""
    specs, truth = built["specs"], built["truth"]
    opps = [o for o in truth["Opportunity"] if not o["IsDeleted"]]
    tasks = [t for t in truth["Task"] if not t["IsDeleted"]]
    contacts = [c for c in truth["Contact"] if not c["IsDeleted"] and c["AccountId"]]
    accounts = [a["Id"] for a in truth["Account"] if not a["IsDeleted"]]
    o, t, c = specs["Opportunity"], specs["Task"], specs["Contact"]
    apply(
        wh,
        o,
        [_cdc(o, x["Id"], "UPDATE", {"Amount": Decimal("1000.00")}) for x in opps[:20]]
        + [_cdc(o, x["Id"], "DELETE") for x in opps[20:25]],
    )
    apply(
        wh,
        t,
        [_cdc(t, x["Id"], "UPDATE", {"Subject": "changed"}) for x in tasks[:40]]
        + [_cdc(t, x["Id"], "DELETE") for x in tasks[40:50]],
    )
    apply(
        wh,
        c,
        [_cdc(c, x["Id"], "UPDATE", {"AccountId": accounts[-1]}) for x in contacts[:5]],
    )


def rows_scanned(path: Path, sql: str) -> int:
    """Rows the plan's table scans read (DuckDB JSON profile, `total_rows_scanned`)."""
    con = duckdb.connect(str(path), read_only=True)
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        con.execute("pragma enable_profiling = 'json'")
        con.execute(f"pragma profiling_output = '{out}'")
        con.execute(sql).fetchall()
        con.execute("pragma disable_profiling")
    finally:
        con.close()
    profile = json.loads(out.read_text())
    out.unlink()
    return int(profile["query"]["total_rows_scanned"])


def compiled(work: Path) -> dict[str, tuple[str, str]]:
    """unique_id -> (resource type, compiled SQL) of the last `dbt compile` in `work`."""
    manifest = json.loads((work / "target" / "manifest.json").read_text())
    return {
        uid: (node["resource_type"], node.get("compiled_code") or "")
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] in ("model", "test") and node.get("compiled_code")
    }


# A statement dbt ran while compiling a model: "On model.sfdc_sync.<name>: <sql>" up to the
# next log line (dbt's file log is at debug level: every query it sends).
_LOGGED = re.compile(r"On model\.sfdc_sync\.(\w+): (.*?)(?=\n\S*\d\d:\d\d:\d\d\.\d+ \[|\Z)", re.S)
# What macros/incremental.sql inlined_keys() marks its query with.
_PRE_QUERY = "-- sfdc_sync inlined_keys:"


def pre_queries(work: Path) -> dict[str, list[str]]:
    """model -> the affected-keys queries dbt ran before compiling it (inlined_keys):
    part of what an incremental build reads, though not in the compiled SQL."""
    out: dict[str, list[str]] = {}
    for model, sql in _LOGGED.findall((work / "logs" / "dbt.log").read_text()):
        if _PRE_QUERY in sql:
            out.setdefault(model, []).append(sql)
    return out


def measure(factor: int, base: Path) -> dict[str, int]:
    """Rows scanned per recurring statement at `factor` copies of the tiny org."""
    path = base / "warehouse.duckdb"
    built = build_org_warehouse(path, base / "org")
    scale(path, factor)
    full = run_dbt(["build"], path, base / "full")
    assert full.returncode == 0, full.stdout[-3000:]
    con = duckdb.connect(str(path))
    try:
        aged = dt.datetime.now(dt.UTC).replace(tzinfo=None) - MART_AGE
        for mart in TABLE_MARTS:
            con.execute(f"update marts.{mart} set built_at = ?", [aged])
    finally:
        con.close()
    change_set(path, built)
    result: dict[str, int] = {}
    run = run_dbt(["compile", "--select", "marts"], path, base / "compile_marts")
    assert run.returncode == 0, run.stdout[-3000:]
    first = pre_queries(base / "compile_marts")
    for uid, (kind, sql) in compiled(base / "compile_marts").items():
        name = uid.split(".")[-1]
        if kind == "model" and name in TABLE_MARTS:
            result[name] = rows_scanned(path, sql) + sum(
                rows_scanned(path, q) for q in first.get(name, [])
            )
    run = run_dbt(["run", "--select", "marts"], path, base / "incremental")
    assert run.returncode == 0, run.stdout[-3000:]
    recent = ["compile", "--vars", "{recent_days: 2}", "--select", "resource_type:test"]
    run = run_dbt(recent, path, base / "compile_tests")
    assert run.returncode == 0, run.stdout[-3000:]
    for uid, (kind, sql) in compiled(base / "compile_tests").items():
        if kind == "test":
            result["test " + uid.split(".")[2]] = rows_scanned(path, sql)
    return result


def main() -> None:
    """Measure at both sizes and print one markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = measure(args.small, Path(tmp) / "small")
        large = measure(args.large, Path(tmp) / "large")
    lines = [
        f"| statement | rows read x{args.small} | rows read x{args.large} | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name in sorted(small):
        ratio = large[name] / small[name] if small[name] else float("nan")
        lines.append(f"| {name} | {small[name]} | {large[name]} | {ratio:.2f} |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

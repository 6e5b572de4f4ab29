"""A DuckDB warehouse built by the real sync engine, and the real dbt run against it.

The org comes from the emulator's deterministic generator; every record goes through
`apply_batch` as a Bulk snapshot row built by `sync_engine.changes`, exactly as a backfill
would land it. dbt runs as a subprocess (as dagster-dbt runs it), with its own target and
log folders so parallel test workers never share dbt/target.
"""

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from resources.duckdb_warehouse import DuckDBWarehouse
from sfdc_assets.objects import load_config
from sfdc_emulator.describe import default_catalog
from sfdc_emulator.generator import generate
from sfdc_emulator.store import OrgStore
from sync_engine import changes as ch
from sync_engine import registry
from sync_engine.apply import ApplyResult, apply_batch
from sync_engine.spec import ObjectSpec
from sync_engine.warehouse import Warehouse

_BUILT: dict[str, Any] = {}

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"
DBT = str(Path(sys.executable).with_name("dbt"))
OBJECTS = tuple(default_catalog())
# "Now" of the generated org: every generated SystemModstamp is before it.
ANCHOR = dt.datetime(2025, 1, 15)
READ_STARTED_AT = ANCHOR + dt.timedelta(hours=1)


def once(key: str, build: Callable[[], Any]) -> Any:
    """`build()` once per test process.

    Module fixtures are not enough: an xdist worker whose queue runs dry tears every
    fixture down and sets it up again for the next test, rebuilding a warehouse and
    re-running dbt (seconds each).
    """
    if key not in _BUILT:
        _BUILT[key] = build()
    return _BUILT[key]


def object_spec(name: str) -> ObjectSpec:
    """The engine spec of an emulator object, from its describe (as the sync would)."""
    describe = default_catalog()[name].describe_json("66.0")
    return ObjectSpec.from_describe(describe)


def create_tables(wh: Warehouse) -> dict[str, ObjectSpec]:
    """Every object's raw/current/scd2 tables, with objects.yaml's lookup fields indexed as
    the platform's runs index them; returns the merge specs."""
    lookups = {o.name: o.lookup_fields for o in load_config().objects}
    specs = {}
    for name in OBJECTS:
        specs[name] = registry.sync_schema(wh, object_spec(name)).spec
        registry.ensure_lookups(wh, specs[name], lookups.get(name, ()))
    return specs


def _typed(spec: ObjectSpec, row: Mapping[str, Any]) -> dict[str, Any]:
    """Emulator values -> the engine's Python types (numbers are exact decimals)."""
    fields = {f.name: f for f in spec.fields}
    out = {}
    for name, value in row.items():
        f = fields.get(name)
        if value is not None and f is not None and f.wtype.kind == "decimal":
            value = Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-f.wtype.scale))
        out[name] = value
    return out


def snapshot_rows(spec: ObjectSpec, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Bulk snapshot change rows of full records (emulator `truth` rows)."""
    return [
        ch.snapshot_change(
            spec,
            record_id=row["Id"],
            values=_typed(spec, row),
            system_modstamp=row["SystemModstamp"],
            read_started_at=READ_STARTED_AT,
            is_deleted=bool(row.get("IsDeleted")),
        )
        for row in rows
    ]


def apply(
    wh: Warehouse,
    spec: ObjectSpec,
    rows: Sequence[Mapping[str, Any]],
    now: dt.datetime | None = None,
) -> ApplyResult:
    """One batch through the engine."""
    return apply_batch(wh, spec, ch.build_batch(spec, rows), now=now)


def build_org_warehouse(path: Path, state_dir: Path, seed: int = 7) -> dict[str, Any]:
    """Generate a tiny org and backfill it into a DuckDB warehouse at `path`.

    Returns `{"specs": {object: spec}, "truth": {object: [row, ...]}}`.
    """
    truth = generate_org(state_dir, seed)
    wh = DuckDBWarehouse(path=str(path))
    try:
        specs = backfill(wh, truth)
    finally:
        wh.close()
    return {"specs": specs, "truth": truth}


def generate_org(state_dir: Path, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """The emulator's tiny org: `{object: [row, ...]}` (deterministic per seed)."""
    with OrgStore(state_dir) as store:
        generate(store, "tiny", seed, anchor=ANCHOR.replace(tzinfo=dt.UTC))
        return {name: store.truth(name).to_pylist() for name in OBJECTS}


def backfill(
    wh: Warehouse, truth: Mapping[str, Sequence[Mapping[str, Any]]], now: dt.datetime | None = None
) -> dict[str, ObjectSpec]:
    """Every object's tables, then its rows as one Bulk snapshot batch; the merge specs."""
    specs = create_tables(wh)
    for name in OBJECTS:
        apply(wh, specs[name], snapshot_rows(specs[name], truth[name]), now=now)
    return specs


@contextmanager
def engine(path: Path):
    """The engine's warehouse resource on `path`, closed afterwards (dbt needs the lock)."""
    wh = DuckDBWarehouse(path=str(path))
    try:
        yield wh
    finally:
        wh.close()


def query(path: Path, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
    """Rows of one query on a short-lived read-only connection."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def columns(path: Path, relation: str) -> list[str]:
    """Column names of a relation, as the warehouse reports them."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return list(con.sql(f"select * from {relation} limit 0").columns)
    finally:
        con.close()


class DbtRun:
    """One finished dbt invocation: exit code, output and run_results.json."""

    def __init__(self, proc: subprocess.CompletedProcess, target_path: Path) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        results = target_path / "run_results.json"
        self.results = json.loads(results.read_text())["results"] if results.exists() else []

    def by_status(self, resource_type: str) -> dict[str, str]:
        """unique_id -> status, for models (`model.`) or tests (`test.`)."""
        return {
            r["unique_id"]: r["status"]
            for r in self.results
            if r["unique_id"].startswith(resource_type + ".")
        }

    def failures(self, test_name_prefix: str) -> tuple[str, int]:
        """(status, failing rows) of the one test whose name starts with the prefix."""
        hits = [
            r for r in self.results if r["unique_id"].split(".")[2].startswith(test_name_prefix)
        ]
        assert len(hits) == 1, [r["unique_id"] for r in hits]
        return hits[0]["status"], hits[0]["failures"]


def run_dbt(args: Sequence[str], warehouse: Path, work_dir: Path) -> DbtRun:
    """Run the real dbt CLI on the project against `warehouse` (target local)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    target_path = work_dir / "target"
    env = {
        **os.environ,
        "WAREHOUSE_DUCKDB_PATH": str(warehouse),
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "SFDC_ENV": "local",
    }
    proc = subprocess.run(
        [
            DBT,
            *args,
            "--target",
            "local",
            "--target-path",
            str(target_path),
            "--log-path",
            str(work_dir / "logs"),
        ],
        cwd=DBT_PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return DbtRun(proc, target_path)

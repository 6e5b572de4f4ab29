"""Statements per dbt refresh on the Snowflake path, and the tables each scans (fakesnow).

    .venv/bin/python -m bench.dbt_snowflake_statements [--no-write]

The project's real `dbt build` with the dbt-snowflake adapter, in process
(`dbt.cli.main.dbtRunner`) inside fakesnow 0.12.1's patch mode, against a warehouse the
real `SnowflakeWarehouse` filled: the emulator's tiny org backfilled by the engine
(stamped 20 days ago), as tests/dbt/harness.py builds it on DuckDB. dbt runs on a copy
of dbt/ with one test-only macro file (tests/dbt/fakesnow_macros/fakesnow_shims.sql) and
a temporary profile whose target `fake` is type snowflake (dbt/profiles.yml untouched).

Every statement dbt sends reaches fakesnow's cursor (`FakeSnowflakeCursor.execute`,
wrapped here while a run is captured); dbt's query comment names the node that sent it.
Each statement is classified (compute: needs the warehouse running; metadata and DDL:
cloud services) and parsed by sqlglot (dialect snowflake, `bench.statements.tables`) for
the tables it reads and writes; reads of a view are resolved to the tables under it (the
views the full build created), since on Snowflake scanning a view scans those.

Runs, in order: the first full build; the engine's small change set
(`bench.dbt_rows_scanned.apply_change_set`); each frequent domain build
(`dbt build --select tag:<domain> --vars '{recent_days: 2}'`, sfdc_assets/dbt_schedules.py);
the nightly build (`--vars '{recent_days: 0}'`, incremental marts not fully refreshed:
objects.yaml `nightly_full_refresh: false`).

Writes docs/performance.md's section "## dbt statements per refresh (fakesnow)".
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import re
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlglot
import yaml
from sqlglot import exp

from bench.dbt_rows_scanned import _cdc, apply_change_set
from bench.report import REPO, machine, replace_section
from bench.statements import tables
from resources.snowflake_warehouse import SnowflakeWarehouse
from sfdc_assets.dbt_assets import DbtBuildConfig, dbt_build_args
from sfdc_assets.objects import load_config
from sync_engine.warehouse import Warehouse
from tests.dbt.harness import apply, backfill, generate_org

SECTION = "## dbt statements per refresh (fakesnow)"
SHIMS = REPO / "tests" / "dbt" / "fakesnow_macros" / "fakesnow_shims.sql"
# Not SFDC: fakesnow (DuckDB) calls a schema named like its database (SFDC.SFDC)
# ambiguous, which Snowflake allows; the engine's current schema is `sfdc`.
DATABASE = "SFDCDBT"
FAKE_TARGET = "fake"
# Engine rows are this old, so an incremental build picks up only the change set.
SEEDED_AGO = dt.timedelta(days=20)
_COMMENT = re.compile(r"/\*\s*(\{.*?\})\s*\*/", re.DOTALL)


def fake_profile(threads: int = 1) -> dict[str, Any]:
    """The test-only profile: target `fake`, dbt-snowflake on fakesnow (patch mode).

    One thread: fakesnow's connections share one DuckDB connection. Production uses 8
    (dbt/profiles.yml `prod`); the statements sent are the same, in another order.
    """
    return {
        "sfdc_sync": {
            "target": FAKE_TARGET,
            "outputs": {
                FAKE_TARGET: {
                    "type": "snowflake",
                    "account": "fakesnow",
                    "user": "fake",
                    "password": "fake",
                    "database": DATABASE,
                    "schema": "analytics",
                    "threads": threads,
                    "query_tag": "sfdc_sync_dbt",
                    "connect_retries": 0,
                }
            },
        }
    }


def fake_project(work: Path) -> tuple[Path, Path]:
    """A copy of dbt/ with the fakesnow shims in its macros, and a profiles dir.

    Returns (project dir, profiles dir), both under `work`.
    """
    project = work / "dbt"
    shutil.copytree(
        REPO / "dbt",
        project,
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml"),
    )
    shutil.copy(SHIMS, project / "macros" / SHIMS.name)
    profiles = work / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "profiles.yml").write_text(yaml.safe_dump(fake_profile()))
    return project, profiles


def fake_warehouse() -> SnowflakeWarehouse:
    """The engine's warehouse resource on the fake database (inside `fakesnow.patch`)."""
    return SnowflakeWarehouse(account="fakesnow", user="fake", password="fake", database=DATABASE)


@contextmanager
def quiet() -> Iterator[None]:
    """fakesnow's Arrow notices and sqlglot's transpile warnings (TRANSIENT, CLUSTER BY)."""
    log = logging.getLogger("sqlglot")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


@dataclass
class DbtResult:
    """One dbt invocation: success, and resource type / materialization per node."""

    success: bool
    nodes: dict[str, str]
    error: str


def run_dbt(project: Path, profiles: Path, args: Sequence[str]) -> DbtResult:
    """`dbt <args> --target fake` in process (call inside `fakesnow.patch`)."""
    from dbt.cli.main import dbtRunner

    res = dbtRunner().invoke(
        [
            *args,
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(profiles),
            "--target",
            FAKE_TARGET,
            "--log-level",
            "error",
        ]
    )
    nodes: dict[str, str] = {}
    errors = []
    for r in getattr(res.result, "results", None) or []:
        node = r.node
        kind = node.config.materialized if node.resource_type == "model" else node.resource_type
        nodes[node.unique_id] = str(kind)
        if str(r.status) in ("error", "fail"):
            errors.append(f"{node.unique_id}: {r.message}")
    if res.exception is not None:
        errors.append(repr(res.exception))
    return DbtResult(bool(res.success), nodes, "\n".join(errors))


@dataclass(frozen=True)
class Statement:
    """One statement dbt sent: the run, the node whose query comment it carries, the SQL."""

    run: str
    node: str
    sql: str


class Capture:
    """Records every statement fakesnow's cursor executes while `run(name)` is open."""

    def __init__(self) -> None:
        self.statements: list[Statement] = []
        self._run: str | None = None
        self._node = "(run)"

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Wrap `FakeSnowflakeCursor.execute` (every statement of every connection)."""
        from fakesnow.cursor import FakeSnowflakeCursor

        original = FakeSnowflakeCursor.execute
        capture = self

        def execute(cursor: Any, command: str, *args: Any, **kwargs: Any) -> Any:
            capture.record(command)
            return original(cursor, command, *args, **kwargs)

        FakeSnowflakeCursor.execute = execute  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            FakeSnowflakeCursor.execute = original  # type: ignore[method-assign]

    def record(self, sql: str) -> None:
        """Statement under the current run; its node from dbt's query comment."""
        if self._run is None:
            return
        found = _COMMENT.search(sql)
        if found:
            with suppress(json.JSONDecodeError):
                self._node = json.loads(found.group(1)).get("node_id") or "(run)"
        self.statements.append(Statement(self._run, self._node, sql))

    @contextmanager
    def run(self, name: str) -> Iterator[None]:
        """Record under `name` until the block ends."""
        self._run, self._node = name, "(run)"
        try:
            yield
        finally:
            self._run = None


def change_set(wh: Warehouse, built: dict) -> None:
    """`apply_change_set`, plus the deletes Salesforce cascades: the line items of the
    5 deleted opportunities (else the nightly build's relationship test fails on them)."""
    apply_change_set(wh, built)
    opps = [o for o in built["truth"]["Opportunity"] if not o["IsDeleted"]]
    deleted = {o["Id"] for o in opps[20:25]}
    spec = built["specs"]["OpportunityLineItem"]
    items = [
        x["Id"]
        for x in built["truth"]["OpportunityLineItem"]
        if x["OpportunityId"] in deleted and not x["IsDeleted"]
    ]
    apply(wh, spec, [_cdc(spec, i, "DELETE") for i in items])


def build_args(config: DbtBuildConfig, select: str | None = None) -> list[str]:
    """The Dagster job's `dbt build` arguments (dbt_assets.dbt_build_args), selected."""
    args = dbt_build_args(config)
    return [*args, "--select", select] if select else args


def measure(work: Path) -> tuple[list[Statement], dict[str, str]]:
    """Every statement of the full build, each domain build and the nightly build."""
    import fakesnow

    settings = load_config().settings.dbt
    project, profiles = fake_project(work)
    capture = Capture()
    nodes: dict[str, str] = {}
    with quiet(), fakesnow.patch(), capture.installed():
        truth = generate_org(work / "org")
        wh = fake_warehouse()
        seeded = dt.datetime.now(dt.UTC).replace(tzinfo=None) - SEEDED_AGO
        built = {"specs": backfill(wh, truth, now=seeded), "truth": truth}
        wh.close()
        runs: list[tuple[str, list[str], bool]] = [("full build (first)", ["build"], False)]
        for i, domain in enumerate(settings.domains):
            config = DbtBuildConfig(recent_days=settings.recent_days)
            runs.append((f"domain {domain}", build_args(config, f"tag:{domain}"), i == 0))
        nightly = DbtBuildConfig(recent_days=0, full_refresh=settings.nightly_full_refresh)
        runs.append(("nightly", build_args(nightly), False))
        for name, args, after_changes in runs:
            if after_changes:
                wh = fake_warehouse()
                change_set(wh, built)
                wh.close()
            with capture.run(name):
                result = run_dbt(project, profiles, args)
            assert result.success, f"{name}: {result.error}"
            nodes.update(result.nodes)
    return capture.statements, nodes


# --- classification --------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def parse(sql: str) -> exp.Expr | None:
    """sqlglot's tree (dialect snowflake), or None for what it cannot parse."""
    try:
        return sqlglot.parse_one(sql, read="snowflake")
    except sqlglot.errors.ParseError:
        return None


@functools.lru_cache(maxsize=4096)
def kind(sql: str) -> str:
    """`compute` (runs on the warehouse: queries, DML, CREATE ... AS SELECT),
    `transaction` (BEGIN / COMMIT), `ddl` (views, DROP) or `metadata` (SHOW, DESCRIBE,
    CREATE SCHEMA): the last three are cloud-services work."""
    tree = parse(sql)
    if isinstance(tree, exp.Transaction | exp.Commit | exp.Rollback):
        return "transaction"
    if isinstance(tree, exp.Create):
        table_kind = str(tree.args.get("kind") or "").upper()
        if table_kind == "TABLE" and tree.expression is not None:
            return "compute"
        return "metadata" if table_kind == "SCHEMA" else "ddl"
    if isinstance(tree, exp.Drop):
        return "ddl"
    if isinstance(tree, exp.Query | exp.Insert | exp.Delete | exp.Update | exp.Merge):
        return "compute"
    return "metadata"


def view_sources(statements: Sequence[Statement]) -> dict[str, frozenset[str]]:
    """View -> the relations its CREATE VIEW reads, from the captured statements."""
    out: dict[str, frozenset[str]] = {}
    for s in statements:
        tree = parse(s.sql)
        if isinstance(tree, exp.Create) and str(tree.args.get("kind")).upper() == "VIEW":
            found = tables(s.sql)
            for view in found.writes:
                out[view] = found.reads
    return out


def resolve(names: frozenset[str], views: dict[str, frozenset[str]]) -> frozenset[str]:
    """Views replaced by the tables under them, recursively."""
    out: set[str] = set()
    todo = list(names)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in views:
            todo.extend(views[name])
        else:
            out.add(name)
    return frozenset(out)


def is_dbt_temp(name: str) -> bool:
    """dbt's per-model intermediate relation (`<model>__dbt_tmp`)."""
    return name.endswith("__dbt_tmp")


def scanned(statements: Sequence[Statement], views: dict[str, frozenset[str]]) -> frozenset[str]:
    """Tables the compute statements read, views resolved, dbt temp tables left out."""
    reads: set[str] = set()
    for s in statements:
        if kind(s.sql) == "compute":
            reads |= resolve(tables(s.sql).reads, views)
    return frozenset(t for t in reads if not is_dbt_temp(t))


def written(statements: Sequence[Statement]) -> frozenset[str]:
    """Tables the compute statements write (CTAS, DELETE, INSERT), dbt temp tables left out."""
    out: set[str] = set()
    for s in statements:
        if kind(s.sql) == "compute":
            out |= tables(s.sql).writes
    return frozenset(t for t in out if not is_dbt_temp(t))


def _names(found: frozenset[str]) -> str:
    return ", ".join(sorted(found)) or "-"


_GROUPS = ("(run)", "view", "table", "incremental", "test")
_GROUP_NAMES = {
    "(run)": "run setup (no node)",
    "view": "view models",
    "table": "table models",
    "incremental": "incremental models",
    "test": "data tests",
}


def _group(node: str, nodes: dict[str, str]) -> str:
    return nodes.get(node, "(run)") if node != "(run)" else "(run)"


def _step(sql: str) -> str:
    tree = parse(sql)
    verb = kind(sql)
    if isinstance(tree, exp.Describe):
        return "DESCRIBE"
    if isinstance(tree, exp.Transaction):
        return "BEGIN"
    if isinstance(tree, exp.Commit):
        return "COMMIT"
    found = tables(sql)
    target = next(iter(found.writes), "")
    suffix = " tmp" if is_dbt_temp(target) else ""
    if isinstance(tree, exp.Create):
        return ("CTAS" if verb == "compute" else "CREATE VIEW") + suffix
    if isinstance(tree, exp.Drop):
        return "DROP" + (" tmp" if "__dbt_tmp" in sql else "")
    if isinstance(tree, exp.Query):
        return "SELECT"
    return type(tree).__name__.upper() + suffix if tree is not None else "?"


def _steps(sqls: Sequence[str]) -> str:
    out: list[str] = []
    for step in (_step(s) for s in sqls):
        if out and out[-1].split(" x")[0] == step:
            head, _, n = out[-1].partition(" x")
            out[-1] = f"{head} x{int(n or 1) + 1}"
        else:
            out.append(step)
    return ", ".join(out)


def render(statements: list[Statement], nodes: dict[str, str]) -> str:
    """The markdown section's body."""
    views = view_sources(statements)
    runs = list(dict.fromkeys(s.run for s in statements))
    lines = [
        "Command: `python -m bench.dbt_snowflake_statements` (also run by `make "
        f"bench-scale-statements`) on {machine()}: the project's real `dbt build` with "
        "dbt-snowflake 1.12 (in process, `dbtRunner`) on fakesnow 0.12.1 (patch mode), "
        "target `fake` (a temporary profile: type snowflake, database "
        f"`{DATABASE}`, one thread), over the emulator's tiny org backfilled by the real "
        "`SnowflakeWarehouse` 20 days ago. Statements are captured where fakesnow's cursor "
        "executes them (`FakeSnowflakeCursor.execute`), so this is everything dbt sent, "
        "attributed to a node by dbt's query comment. Runs in order: the first full build "
        "(empty marts), then the engine's small change set "
        "(`bench.dbt_rows_scanned.apply_change_set`: 20 opportunity updates, 5 deletes "
        "with their line items, 40 task updates, 10 task deletes, 5 contact moves), each "
        "domain's frequent build (`dbt build --vars '{recent_days: 2}' --select tag:<domain>`, "
        "sfdc_assets/dbt_schedules.py), then the nightly build "
        "(`--vars '{recent_days: 0}'`, incremental). *Compute* statements need the "
        "warehouse running (queries, DELETE/INSERT, CREATE TABLE ... AS SELECT); "
        "*metadata* (SHOW, DESCRIBE, CREATE SCHEMA IF NOT EXISTS), *DDL* (CREATE VIEW, "
        "DROP) and BEGIN/COMMIT are cloud-services work. Tables scanned: what the compute "
        "statements read (sqlglot, dialect snowflake), each view resolved to the tables "
        "under it, dbt's `__dbt_tmp` relations left out.",
        "",
        "| run | nodes | statements | compute | metadata | DDL | BEGIN/COMMIT "
        "| tables scanned | tables written |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        mine = [s for s in statements if s.run == run]
        kinds = Counter(kind(s.sql) for s in mine)
        n_nodes = len({s.node for s in mine} - {"(run)"})
        lines.append(
            f"| {run} | {n_nodes} | {len(mine)} | {kinds['compute']} | {kinds['metadata']} "
            f"| {kinds['ddl']} | {kinds['transaction']} | {len(scanned(mine, views))} "
            f"| {_names(written(mine))} |"
        )
    lines += [
        "",
        "Per run and kind of node (statements per node are the same at any table size):",
        "",
        "| run | nodes | count | statements | compute | tables scanned |",
        "|---|---|---:|---:|---:|---|",
    ]
    for run in runs:
        mine = [s for s in statements if s.run == run]
        for group in _GROUPS:
            part = [s for s in mine if _group(s.node, nodes) == group]
            if not part:
                continue
            n_nodes = len({s.node for s in part} - {"(run)"})
            compute = sum(kind(s.sql) == "compute" for s in part)
            lines.append(
                f"| {run} | {_GROUP_NAMES[group]} | {n_nodes or '-'} | {len(part)} "
                f"| {compute} | {_names(scanned(part, views))} |"
            )
    lines += [
        "",
        "Per table or incremental model, in each run (the statements in the order sent):",
        "",
        "| run | model | statements | sequence | tables scanned |",
        "|---|---|---:|---|---|",
    ]
    for run in runs:
        mine = [s for s in statements if s.run == run]
        models = sorted({s.node for s in mine if nodes.get(s.node) in ("table", "incremental")})
        for node in models:
            part = [s for s in mine if s.node == node]
            lines.append(
                f"| {run} | {node.split('.')[-1]} | {len(part)} "
                f"| {_steps([s.sql for s in part])} | {_names(scanned(part, views))} |"
            )
    lines += [
        "",
        "Reading it. A view model over a source costs a DESCRIBE of it (macros/"
        "custom_fields.sql `column_names`: which custom fields the engine's table has) and "
        "a CREATE OR REPLACE VIEW; every data test one SELECT (a domain build with "
        "`recent_days > 0` adds a DESCRIBE per test: macros/test_scope.sql looks for "
        "`built_at` / `synced_at`); each incremental mart reads `max(built_at)`, builds its "
        "batch into "
        "`__dbt_tmp` (CTAS), describes both (3 DESCRIBEs), and replaces the batch's keys in "
        "BEGIN / DELETE / INSERT / COMMIT; each run starts with SHOW SCHEMAS / SHOW "
        "OBJECTS per schema. These counts depend on the project's nodes, not on table "
        "sizes; rows scanned per statement are `bench.dbt_rows_scanned`'s (docs/dbt.md).",
        "",
        "What fakesnow cannot verify: statement seconds, bytes scanned, credits and "
        "micro-partition pruning (clustering, search optimization: the `_synced_at` "
        "filters of the incremental marts and `recent_days` tests prune on Snowflake only "
        "if the data is clustered that way); temporary tables (the incremental marts' "
        "`__dbt_tmp` is `CREATE TEMPORARY TABLE` in production, a plain table here: "
        "tests/dbt/fakesnow_macros/fakesnow_shims.sql, target `fake` only, one statement "
        "either way, so the counts are production's); transaction "
        "isolation and locking (BEGIN/COMMIT run, on DuckDB's semantics: readers between "
        "the DELETE and the INSERT, and concurrent engine applies, are not exercised); "
        "TRANSIENT and CLUSTER BY are accepted and ignored; several threads (one here, "
        "eight in production: the same statements in another order). Temporary views "
        "are not used by this project (no merge or snapshot).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure, then write docs/performance.md (or only print with --no-write)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        statements, nodes = measure(Path(tmp))
    with quiet():
        body = render(statements, nodes)
    if not args.no_write:
        replace_section(SECTION, body)
    sys.stdout.write(body + "\n")


if __name__ == "__main__":
    main()

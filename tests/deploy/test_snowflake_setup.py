"""deploy/snowflake/setup.sql and `python -m resources.snowflake_setup` (issue 13).

What runs where: every statement of setup.sql goes through sqlglot's Snowflake parser
(most role, grant and warehouse DDL falls back to a generic Command there, so each is
also matched against the statement shapes below, and the grants are read into a model
the least-privilege rules are asserted on); the database, schema and table statements
run on fakesnow, and the loader then syncs into that database with
SNOWFLAKE_CREATE_SCHEMAS=false. fakesnow cannot run roles, grants, warehouses or policy
DDL (reference/snowflake.md B2): those are captured, not executed, and what Snowflake
does with them (privilege checks, future grants, policy evaluation) is not verified here
(docs/security.md, "What is verified").
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import fakesnow
import pytest
import sqlglot
import yaml
from sqlglot import exp

from resources import snowflake_setup
from resources.snowflake_warehouse import SchemaSetupError, SnowflakeWarehouse
from sync_engine import erasure, masking, registry
from sync_engine.spec import ObjectSpec
from sync_engine.warehouse import SchemaNames

REPO = Path(__file__).resolve().parents[2]
SETUP_SQL = REPO / "deploy" / "snowflake" / "setup.sql"
_numbers = itertools.count()
CONTACT = ObjectSpec.of(
    "Contact",
    [("Id", "id"), ("Email", "email"), ("Birthdate", "date"), ("SystemModstamp", "datetime")],
)
ACCOUNT = ObjectSpec.of(
    "Account", [("Id", "id"), ("BillingCountry", "string"), ("SystemModstamp", "datetime")]
)

# The shapes every statement must have (a typo in a keyword fails here).
SHAPES = [
    r"USE ROLE \w+",
    r"CREATE ROLE IF NOT EXISTS \w+",
    r"CREATE WAREHOUSE IF NOT EXISTS \w+ (\w+ = ('[^']*'|\w+) ?)+",
    r"CREATE DATABASE IF NOT EXISTS \w+",
    r"CREATE SCHEMA IF NOT EXISTS \w+\.\w+",
    r"CREATE TABLE IF NOT EXISTS \w+\.\w+\.\w+ \(.*\)",
    r"CREATE USER IF NOT EXISTS \w+ (\w+ = ('[^']*'|\w+) ?)+",
    r"GRANT ROLE \w+ TO (ROLE|USER) \w+",
    r"GRANT [A-Z ,]+ ON (ACCOUNT|WAREHOUSE \w+|DATABASE \w+|SCHEMA \w+\.\w+|TABLE \w+\.\w+\.\w+"
    r"|FUTURE (TABLES|VIEWS) IN SCHEMA \w+\.\w+|ALL SCHEMAS IN DATABASE \w+) TO ROLE \w+"
    r"( COPY CURRENT GRANTS)?",
]


def _statements() -> list[str]:
    text = "\n".join(
        line for line in SETUP_SQL.read_text().splitlines() if not line.lstrip().startswith("--")
    )
    return [" ".join(s.split()) for s in text.split(";") if s.strip()]


def _grants() -> set[tuple[str, str, str]]:
    """(grantee role, privilege, object) of every GRANT ... TO ROLE."""
    out = set()
    for s in _statements():
        m = re.fullmatch(r"GRANT (?!ROLE )([A-Z ,]+?) ON (.+?) TO ROLE (\w+)( COPY.*)?", s)
        if m:
            for priv in m.group(1).split(","):
                out.add((m.group(3), priv.strip(), m.group(2)))
    return out


def _role_graph() -> dict[str, set[str]]:
    """grantee (role or user) -> roles granted to it directly."""
    graph: dict[str, set[str]] = {}
    for s in _statements():
        m = re.fullmatch(r"GRANT ROLE (\w+) TO (?:ROLE|USER) (\w+)", s)
        if m:
            graph.setdefault(m.group(2), set()).add(m.group(1))
    return graph


def _roles_of(grantee: str) -> set[str]:
    graph, seen, todo = _role_graph(), {grantee}, [grantee]
    while todo:
        for r in graph.get(todo.pop(), set()) - seen:
            seen.add(r)
            todo.append(r)
    return seen


def test_every_statement_parses_and_has_a_known_shape() -> None:
    statements = _statements()
    assert len(statements) > 80
    for s in statements:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = sqlglot.parse_one(s, read="snowflake")
        assert parsed is not None, s
        assert any(re.fullmatch(p, s) for p in SHAPES), f"unknown statement shape: {s}"
    # The tables are real DDL to sqlglot, not a fallback.
    tables = [s for s in statements if s.startswith("CREATE TABLE")]
    assert tables and all(
        isinstance(sqlglot.parse_one(s, read="snowflake"), exp.Create) for s in tables
    )


def test_the_loader_cannot_create_schemas_own_policies_or_write_the_audit_trail() -> None:
    grants = _grants()
    loader_roles = _roles_of("SFDC_LOADER") | _roles_of("SFDC_LOADER_SVC")
    assert "SFDC_POLICY_ADMIN" not in loader_roles and "SFDC_ERASER" not in loader_roles
    loader = {(p, o) for r, p, o in grants if r in loader_roles}
    assert loader, "the loader has grants"
    assert not [g for g in loader if g[0] in ("CREATE SCHEMA", "OWNERSHIP")]
    assert not [g for g in loader if "POLICY" in g[0]]
    assert {p for p, o in loader if "ERASURE" in o} == {"SELECT"}
    assert not [o for p, o in loader if o.endswith(".ERASURES")]
    # Only the eraser writes the audit and suppression tables.
    writers = {r for r, p, o in grants if "ERASURE" in o and p in ("INSERT", "UPDATE", "DELETE")}
    assert writers == {"SFDC_ERASER"}
    # Only the policy owner creates policies.
    assert {r for r, p, _ in grants if p.startswith("CREATE") and "POLICY" in p} == {
        "SFDC_POLICY_ADMIN"
    }
    # Nobody but the owner may create a schema.
    assert not [g for g in grants if g[1] == "CREATE SCHEMA"]


def test_warehouses_are_xs_suspend_after_60s_and_dbt_has_its_own() -> None:
    warehouses = {}
    for s in _statements():
        m = re.match(r"CREATE WAREHOUSE IF NOT EXISTS (\w+) (.*)", s)
        if m:
            warehouses[m.group(1)] = dict(re.findall(r"(\w+) = ('[^']*'|\w+)", m.group(2)))
    assert len(warehouses) == 3
    for props in warehouses.values():
        assert props["WAREHOUSE_SIZE"] == "XSMALL" and props["AUTO_SUSPEND"] == "60"
        assert props["AUTO_RESUME"] == "TRUE"
    usage = {(r, o) for r, p, o in _grants() if p == "USAGE" and o.startswith("WAREHOUSE")}
    dbt = {o for r, o in usage if r == "SFDC_DBT"}
    loader = {o for r, o in usage if r == "SFDC_LOADER"}
    assert dbt == {"WAREHOUSE SFDC_DBT_WH"} and loader == {"WAREHOUSE SFDC_LOAD_WH"}
    values = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    env = values["dagster-user-deployments"]["deployments"][0]["env"]
    assert env["SNOWFLAKE_DBT_WAREHOUSE"] == "SFDC_DBT_WH"
    assert env["SNOWFLAKE_WAREHOUSE"] == "SFDC_LOAD_WH"
    assert env["SNOWFLAKE_ROLE"] == "SFDC_LOADER" and env["SNOWFLAKE_DBT_ROLE"] == "SFDC_DBT"


def test_the_script_creates_the_platform_schemas_and_dbts() -> None:
    created = {
        s.split(".")[-1] for s in _statements() if s.startswith("CREATE SCHEMA IF NOT EXISTS")
    }
    engine = {s.upper() for s in SchemaNames().all()}
    project = yaml.safe_load((REPO / "dbt" / "dbt_project.yml").read_text())
    dbt = {m["+schema"].upper() for m in project["models"]["sfdc_sync"].values()}
    profile = yaml.safe_load((REPO / "dbt" / "profiles.yml").read_text())
    dbt.add(profile["sfdc_sync"]["outputs"]["prod"]["schema"].upper())
    assert created == engine | dbt


@pytest.fixture
def fake_snowflake() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with fakesnow.patch():
            yield


class CapturingSnowflake(SnowflakeWarehouse):
    """fakesnow for what it runs; grants and policy DDL recorded instead (parse errors)."""

    def execute(self, sql: str, params: list | tuple | None = None) -> int:
        if sql.startswith("GRANT ") or "MASKING POLICY" in sql or "ROW ACCESS POLICY" in sql:
            self.__dict__.setdefault("_captured", []).append(sql)
            return 0
        return super().execute(sql, params)

    @property
    def captured(self) -> list[str]:
        return self.__dict__.setdefault("_captured", [])


def _columns(wh: SnowflakeWarehouse, table: str) -> list[tuple]:
    return wh.query(
        "SELECT UPPER(column_name), data_type, is_nullable FROM information_schema.columns "
        "WHERE UPPER(table_schema) = 'SFDC_META' AND UPPER(table_name) = %s "
        "ORDER BY ordinal_position",
        [table],
    )


def test_script_objects_run_on_fakesnow_and_the_loader_syncs_without_create_schema(
    fake_snowflake: None,
) -> None:
    import snowflake.connector

    # fakesnow (DuckDB) calls a schema named like its database ambiguous (SFDC.SFDC), which
    # Snowflake allows: the database is renamed for this run only.
    db = f"SFDCSETUP{next(_numbers)}"
    con = snowflake.connector.connect(account="fake", user="admin", password="x")
    for s in _statements():
        if s.startswith(("CREATE DATABASE", "CREATE SCHEMA", "CREATE TABLE")):
            con.cursor().execute(re.sub(r"\bSFDC\b(?=\.|$)", db, s, count=1))
    con.close()

    loader = SnowflakeWarehouse(
        account="fake",
        user="fake",
        password="x",
        database=db,
        role="SFDC_LOADER",
        create_schemas=False,
    )
    registry.sync_schema(loader, CONTACT)
    assert erasure.suppressed_hashes(loader, "Contact") is not None
    # The audit tables the script creates are the ones the erase writes.
    script_cols = {t: _columns(loader, t) for t in ("ERASURES", "ERASURE_SUPPRESSIONS")}
    loader.close()

    fresh = SnowflakeWarehouse(
        account="fake",
        user="fake",
        password="x",
        database=f"ERASECOLS{next(_numbers)}",
        create_schemas=True,
    )
    erasure.ensure_tables(fresh)
    assert {t: _columns(fresh, t) for t in script_cols} == script_cols
    assert len(script_cols["ERASURES"]) == 21
    fresh.close()


def test_erase_and_masking_tables_leave_schema_creation_to_the_adapter(
    fake_snowflake: None,
) -> None:
    import snowflake.connector

    db = f"NOSCHEMAS{next(_numbers)}"
    con = snowflake.connector.connect(account="fake", user="admin", password="x")
    con.cursor().execute(f"CREATE DATABASE {db}")
    con.close()
    loader = SnowflakeWarehouse(
        account="fake", user="fake", password="x", database=db, create_schemas=False
    )
    # Under least privilege a missing schema is an error naming the setup command, from
    # every helper that needs the meta schema, and nothing is created on the way.
    for ensure in (erasure.ensure_tables, masking.ensure_ledger):
        with pytest.raises(SchemaSetupError, match=r"resources\.snowflake_setup schemas"):
            ensure(loader)
        loader._schemas_checked = False
    schemas = loader.query(
        "SELECT UPPER(schema_name) FROM information_schema.schemata WHERE catalog_name = UPPER(%s)",
        [db],
    )
    assert "SFDC_META" not in {r[0] for r in schemas}
    loader.close()


def _wh(cls: type[SnowflakeWarehouse] = CapturingSnowflake, **kw: object) -> SnowflakeWarehouse:
    return cls(
        account="fake",
        user="fake",
        password="x",
        database=f"SETUP{next(_numbers)}",
        create_schemas=True,
        **kw,
    )


def test_policies_command_makes_the_loaders_runs_issue_no_policy_ddl(
    fake_snowflake: None,
) -> None:
    admin = _wh(role="SFDC_POLICY_ADMIN")
    result = snowflake_setup.policies(admin, loader_role="SFDC_LOADER", reader_role="PII_READER")
    assert result["policies"] == 27  # 7 simple kinds, NUMBER(18, 0..18), variant
    creates = [s for s in admin.captured if s.startswith("CREATE MASKING POLICY")]
    applies = [s for s in admin.captured if s.startswith("GRANT APPLY ON MASKING POLICY")]
    assert len(creates) == len(applies) == 27
    assert all(s.endswith('TO ROLE "SFDC_LOADER"') for s in applies)
    assert any("ON TABLE" in s and '"MASKING"' in s for s in admin.captured)
    for s in creates:
        body = sqlglot.parse_one(s.split("->", 1)[1], read="snowflake")
        assert isinstance(body, exp.Case)
        assert "IS_ROLE_IN_SESSION('SFDC_LOADER')" in s and "IS_ROLE_IN_SESSION('PII_READER')" in s
    database = admin.database
    admin.close()

    # The loader's run: same database, its own role; only column SETs, no policy DDL.
    loader = CapturingSnowflake(
        account="fake",
        user="fake",
        password="x",
        database=database,
        role="SFDC_LOADER",
        create_schemas=True,
    )
    spec = registry.sync_schema(loader, CONTACT).spec
    masking.apply_masking(loader, spec, ["Email", "Birthdate"], reader_role="PII_READER")
    issued = loader.captured
    assert issued, "the loader sets the policies on its columns"
    assert all(s.startswith("ALTER TABLE") and "SET MASKING POLICY" in s for s in issued)
    loader.close()


def _config(tmp_path: Path, body: str, objects: list[str]) -> Path:
    path = tmp_path / "row_access.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "row_access_policies": [
                    {
                        "name": "sfdc_region_rows",
                        "arg": "BillingCountry",
                        "body": body,
                        "objects": objects,
                    }
                ]
            }
            if objects
            else {"row_access_policies": []}
        )
    )
    return path


def test_row_access_from_configuration_is_applied_once_updated_and_removed(
    fake_snowflake: None, tmp_path: Path
) -> None:
    wh = _wh(role="SFDC_POLICY_ADMIN")
    registry.sync_schema(wh, ACCOUNT)
    exempt = ["SFDC_LOADER", "SFDC_ERASER"]
    path = _config(tmp_path, "billingcountry = 'France'", ["Account"])

    first = snowflake_setup.row_access(wh, path, exempt=exempt)
    assert first == {"row_access_policies": 1, "tables": 2, "statements": 4}
    create, alter, *attach = wh.captured
    assert create.startswith(
        'CREATE ROW ACCESS POLICY IF NOT EXISTS "SFDC_META"."SFDC_REGION_ROWS"'
    )
    body = sqlglot.parse_one(alter.split("->", 1)[1], read="snowflake")
    assert isinstance(body, exp.Or)  # exempt roles OR (the configured body)
    assert "IS_ROLE_IN_SESSION('SFDC_LOADER') OR IS_ROLE_IN_SESSION('SFDC_ERASER') OR (" in alter
    assert sorted(attach) == [
        'ALTER TABLE "SFDC"."ACCOUNT" ADD ROW ACCESS POLICY "SFDC_META"."SFDC_REGION_ROWS" '
        'ON ("BILLINGCOUNTRY")',
        'ALTER TABLE "SFDC_HISTORY"."ACCOUNT" ADD ROW ACCESS POLICY "SFDC_META"."SFDC_REGION_ROWS" '
        'ON ("BILLINGCOUNTRY")',
    ]

    wh.captured.clear()
    assert snowflake_setup.row_access(wh, path, exempt=exempt)["statements"] == 0
    assert wh.captured == []

    # A changed body: the policy is updated in place, nothing re-attached.
    path = _config(tmp_path, "billingcountry IN ('France', 'Spain')", ["Account"])
    assert snowflake_setup.row_access(wh, path, exempt=exempt)["statements"] == 2
    assert all("ADD ROW ACCESS POLICY" not in s for s in wh.captured)

    # Removed from the configuration: detached from both tables.
    wh.captured.clear()
    snowflake_setup.row_access(wh, _config(tmp_path, "", []), exempt=exempt)
    assert sorted(wh.captured) == [
        'ALTER TABLE "SFDC"."ACCOUNT" DROP ROW ACCESS POLICY "SFDC_META"."SFDC_REGION_ROWS"',
        'ALTER TABLE "SFDC_HISTORY"."ACCOUNT" DROP ROW ACCESS POLICY '
        '"SFDC_META"."SFDC_REGION_ROWS"',
    ]
    wh.close()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "r", "arg": "X", "body": "true"}, "needs name, arg, body and objects"),
        ({"name": "r; drop", "arg": "X", "body": "true", "objects": ["Account"]}, "identifier"),
        ({"name": "r", "arg": "X", "body": "true; drop table t", "objects": ["A"]}, "without ';'"),
        ({"name": "r", "arg": "X", "body": "true", "objects": ["A"], "layers": ["gold"]}, "gold"),
    ],
)
def test_a_bad_row_access_entry_is_refused_with_the_reason(
    tmp_path: Path, entry: dict, message: str
) -> None:
    path = tmp_path / "ra.yaml"
    path.write_text(yaml.safe_dump({"row_access_policies": [entry]}))
    with pytest.raises(ValueError, match=re.escape(message)):
        snowflake_setup.load_row_access(path, ["SFDC_LOADER"])


def test_the_shipped_row_access_file_is_valid_and_applies_nothing_by_default() -> None:
    assert snowflake_setup.load_row_access(snowflake_setup.DEFAULT_ROW_ACCESS_FILE, ["X"]) == []

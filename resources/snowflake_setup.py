"""One-time Snowflake setup under least privilege, run by an administrator, never by a run.

    python -m resources.snowflake_setup schemas      # as the schema owner (SFDC_ADMIN)
    python -m resources.snowflake_setup policies     # as the policy owner (SFDC_POLICY_ADMIN)
    python -m resources.snowflake_setup row-access   # as the policy owner, after the tables exist

Connection settings are the platform's `SNOWFLAKE_*` variables with `SNOWFLAKE_ROLE` set
to the administering role (deploy/README.md). deploy/snowflake/setup.sql creates the
roles, warehouses, database and the default schemas; these commands do what depends on
the platform's own names and code:

- `schemas`: the layer schemas the warehouse resource is configured with (the runs, with
  `SNOWFLAKE_CREATE_SCHEMAS=false`, then never issue `CREATE SCHEMA`).
- `policies`: every masking policy the engine can ask for (`sfdc_pii_<kind>`, the same
  bodies `sync_engine.masking` computes, exempting the PII reader and the loader), owned by
  this role; `APPLY` on each granted to the loader, and recorded in the masking ledger, so
  a loader run only sets and unsets them on columns: it cannot change what they return.
- `row-access`: the row access policies of the configuration file
  (`SFDC_ROW_ACCESS_FILE`, default deploy/snowflake/row_access.yaml), created, updated and
  attached to the configured objects' tables, once each (ledger `sfdc_meta.row_access`).

Prints one JSON line of counts; never values, keys or tokens.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from resources.snowflake_warehouse import SnowflakeWarehouse
from sync_engine import masking
from sync_engine.dialect import SNOWFLAKE
from sync_engine.types import NUMBER_PRECISION, WarehouseType
from sync_engine.warehouse import Warehouse, validate_identifier

LOADER_ROLE_VAR = "SNOWFLAKE_LOADER_ROLE"
ERASER_ROLE_VAR = "SNOWFLAKE_ERASER_ROLE"
ROW_ACCESS_FILE_VAR = "SFDC_ROW_ACCESS_FILE"
DEFAULT_LOADER_ROLE = "SFDC_LOADER"
DEFAULT_ERASER_ROLE = "SFDC_ERASER"
DEFAULT_ROW_ACCESS_FILE = (
    Path(__file__).resolve().parent.parent / "deploy" / "snowflake" / ("row_access.yaml")
)
ROW_ACCESS_LEDGER = "row_access"
# Which layers a rule restricts by default: what consumers read (current, history). Raw
# and quarantine are read only by the loader, the eraser and PII readers.
DEFAULT_LAYERS = ("current", "history")
_SIMPLE_KINDS = ("text", "id", "date", "timestamp", "integer", "boolean", "time")


def _role(var: str, default: str) -> str:
    return masking.role_name(os.environ.get(var) or default)


def schemas(warehouse: SnowflakeWarehouse) -> dict[str, Any]:
    """Create the configured layer schemas (as their owner); idempotent."""
    q = SNOWFLAKE.q
    names = warehouse.schema_names.all()
    for schema in names:
        warehouse.connection.cursor().execute(f"CREATE SCHEMA IF NOT EXISTS {q(schema)}")
    return {"schemas": list(names)}


def all_policies(roles: Sequence[str]) -> list[masking.MaskingPolicy]:
    """Every masking policy `sync_engine.masking` can ask for, exempting `roles`."""
    types = [WarehouseType(k) for k in _SIMPLE_KINDS]
    types += [WarehouseType("decimal", s) for s in range(NUMBER_PRECISION + 1)]
    policies = {p.name: p for p in [masking.policy_for(t, roles) for t in types]}
    policies.setdefault("variant", masking.policy_for(None, roles))
    return sorted(policies.values(), key=lambda p: p.name)


def policy_statements(
    warehouse: Warehouse, loader_role: str, reader_role: str
) -> tuple[list[str], list[masking.MaskingPolicy]]:
    """The DDL and grants of `policies` (pure but for the schema names: what tests see)."""
    q = SNOWFLAKE.q
    meta = warehouse.schema_names.meta
    loader = masking.role_name(loader_role)
    # The same role list the loader's runs compute (masking.snowflake_roles): equal
    # digests, so those runs issue no policy DDL.
    roles = sorted({masking.role_name(reader_role), loader})
    policies = all_policies(roles)
    statements: list[str] = []
    for policy in policies:
        statements += masking.policy_statements(policy, meta)
        statements.append(
            f"GRANT APPLY ON MASKING POLICY {q(meta)}.{q(policy.name)} TO ROLE {q(loader)}"
        )
    return statements, policies


def policies(
    warehouse: Warehouse,
    *,
    loader_role: str | None = None,
    reader_role: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Create or update every masking policy, grant APPLY to the loader, record them."""
    q, lit = SNOWFLAKE.q, SNOWFLAKE.string
    loader = loader_role or _role(LOADER_ROLE_VAR, DEFAULT_LOADER_ROLE)
    reader = reader_role or masking.reader_role_from_env()
    statements, made = policy_statements(warehouse, loader, reader)
    for statement in statements:
        warehouse.execute(statement)
    ledger = masking.ensure_ledger(warehouse)
    # The loader's runs record the columns they set: they write this table, this role
    # owns it (created here, before any run).
    warehouse.execute(f"GRANT SELECT, INSERT, DELETE ON TABLE {ledger} TO ROLE {q(loader)}")
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    targets = ", ".join(lit(f"policy:{p.name}") for p in made)
    warehouse.execute(f"DELETE FROM {ledger} WHERE {q('target')} IN ({targets})")
    rows = ", ".join(
        f"({lit('policy:' + p.name)}, {lit(p.name)}, {lit(p.body_sha)}, "
        f"{SNOWFLAKE.timestamp_literal(now)})"
        for p in made
    )
    warehouse.execute(f"INSERT INTO {ledger} VALUES {rows}")
    return {"policies": len(made), "statements": len(statements), "loader_role": loader}


@dataclass(frozen=True)
class RowAccessConfig:
    """One configured row access policy and where it applies."""

    rule: masking.RowAccessRule
    objects: tuple[str, ...]
    layers: tuple[str, ...]


def load_row_access(path: Path, exempt: Sequence[str]) -> list[RowAccessConfig]:
    """Read the row access configuration; every body gets the `exempt` roles prepended.

    The loader and the eraser must see every row: a loader that saw fewer rows would
    re-insert what it could not see, and an erase would miss records.
    """
    doc = yaml.safe_load(path.read_text()) or {}
    out = []
    for i, raw in enumerate(doc.get("row_access_policies") or []):
        where = f"{path}: row_access_policies[{i}]"
        try:
            name, arg, body = raw["name"], raw["arg"], raw["body"]
            objects = tuple(validate_identifier(o) for o in raw["objects"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where} needs name, arg, body and objects: {e}") from None
        layers = tuple(raw.get("layers") or DEFAULT_LAYERS)
        unknown = set(layers) - {"raw", "current", "history", "quarantine"}
        if unknown:
            raise ValueError(f"{where}: unknown layers {sorted(unknown)}")
        if ";" in body:
            raise ValueError(f"{where}: the body is one boolean expression, without ';'")
        roles = " OR ".join(f"IS_ROLE_IN_SESSION('{masking.role_name(r)}')" for r in exempt)
        rule = masking.RowAccessRule(
            validate_identifier(name),
            validate_identifier(arg),
            str(raw.get("arg_type") or "VARCHAR"),
            f"{roles} OR ({body})",
        )
        out.append(RowAccessConfig(rule, objects, layers))
    return out


def _layer_schema(warehouse: Warehouse, layer: str) -> str:
    s = warehouse.schema_names
    return {"raw": s.raw, "current": s.current, "history": s.history, "quarantine": s.quarantine}[
        layer
    ]


def row_access_statements(
    warehouse: Warehouse,
    configs: Sequence[RowAccessConfig],
    applied: dict[str, tuple[str, str]],
) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """The DDL from the ledger `applied` (target -> policy, body digest) to `configs`.

    Targets: `policy:<name>` for a policy's body, `<schema>.<table>` for an attachment
    (Snowflake allows one row access policy per table). Returns (statements, new ledger).
    """
    q = SNOWFLAKE.q
    meta = warehouse.schema_names.meta
    statements: list[str] = []
    wanted: dict[str, tuple[str, str]] = {}
    for c in configs:
        sha = hashlib.sha256(f"{c.rule.arg_type}|{c.rule.body}".encode()).hexdigest()[:16]
        wanted[f"policy:{c.rule.name}"] = (c.rule.name, sha)
        if applied.get(f"policy:{c.rule.name}") != (c.rule.name, sha):
            # Create if absent + set the body; the third statement (attach) is per table,
            # below, against the ledger (Snowflake refuses a second ADD on a table).
            statements += masking.row_access_statements(c.rule, meta, meta, ROW_ACCESS_LEDGER)[:2]
        for obj in c.objects:
            for layer in c.layers:
                target = f"{_layer_schema(warehouse, layer)}.{obj.lower()}"
                if target in wanted:
                    raise ValueError(f"{target}: two row access policies configured")
                wanted[target] = (c.rule.name, c.rule.arg)
    for target, (name, arg) in sorted(wanted.items()):
        if target.startswith("policy:"):
            continue
        schema, table = target.split(".")
        ref = f"{q(schema)}.{q(table)}"
        old = applied.get(target)
        if old == (name, arg):
            continue
        if old is not None:
            statements.append(
                f"ALTER TABLE {ref} DROP ROW ACCESS POLICY {q(meta)}.{q(old[0])}, "
                f"ADD ROW ACCESS POLICY {q(meta)}.{q(name)} ON ({q(arg)})"
            )
        else:
            statements.append(
                f"ALTER TABLE {ref} ADD ROW ACCESS POLICY {q(meta)}.{q(name)} ON ({q(arg)})"
            )
    for target, (name, _arg) in sorted(applied.items()):
        if not target.startswith("policy:") and target not in wanted:
            schema, table = target.split(".")
            statements.append(
                f"ALTER TABLE {q(schema)}.{q(table)} DROP ROW ACCESS POLICY {q(meta)}.{q(name)}"
            )
    return statements, wanted


def _ensure_row_access_ledger(warehouse: Warehouse) -> str:
    q = SNOWFLAKE.q
    table = f"{q(warehouse.schema_names.meta)}.{q(ROW_ACCESS_LEDGER)}"
    warehouse.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ({q('target')} VARCHAR NOT NULL, "
        f"{q('policy_name')} VARCHAR NOT NULL, {q('detail')} VARCHAR NOT NULL, "
        f"{q('applied_at')} TIMESTAMP NOT NULL)"
    )
    return table


def row_access(
    warehouse: Warehouse,
    path: Path | None = None,
    *,
    exempt: Sequence[str] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Apply the configured row access policies; a second call with no change issues none."""
    q, lit = SNOWFLAKE.q, SNOWFLAKE.string
    path = path or Path(os.environ.get(ROW_ACCESS_FILE_VAR) or DEFAULT_ROW_ACCESS_FILE)
    exempt = exempt or [
        _role(LOADER_ROLE_VAR, DEFAULT_LOADER_ROLE),
        _role(ERASER_ROLE_VAR, DEFAULT_ERASER_ROLE),
    ]
    configs = load_row_access(path, exempt)
    ledger = _ensure_row_access_ledger(warehouse)
    applied = {
        r[0]: (r[1], r[2])
        for r in warehouse.query(
            f"SELECT {q('target')}, {q('policy_name')}, {q('detail')} FROM {ledger}"
        )
    }
    statements, wanted = row_access_statements(warehouse, configs, applied)
    for statement in statements:
        warehouse.execute(statement)
    # After the DDL: a failure leaves the ledger as it was, and the next call repeats.
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if wanted != applied:
        warehouse.execute(f"DELETE FROM {ledger}")
        if wanted:
            rows = ", ".join(
                f"({lit(t)}, {lit(n)}, {lit(d)}, {SNOWFLAKE.timestamp_literal(now)})"
                for t, (n, d) in sorted(wanted.items())
            )
            warehouse.execute(f"INSERT INTO {ledger} VALUES {rows}")
    tables = sum(1 for t in wanted if not t.startswith("policy:"))
    return {"row_access_policies": len(configs), "tables": tables, "statements": len(statements)}


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m resources.snowflake_setup")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("schemas", help="create the layer schemas (as their owner role)")
    sub.add_parser("policies", help="create the masking policies (as the policy owner role)")
    ra = sub.add_parser("row-access", help="apply the configured row access policies")
    ra.add_argument("--file", type=Path, default=None, help=f"default ${ROW_ACCESS_FILE_VAR}")
    args = parser.parse_args(argv)
    # Administrative commands may create what they set up.
    warehouse = SnowflakeWarehouse.from_env().model_copy(update={"create_schemas": True})
    try:
        if args.command == "schemas":
            result = schemas(warehouse)
        elif args.command == "policies":
            result = policies(warehouse)
        else:
            result = row_access(warehouse, args.file)
    finally:
        warehouse.close()
    sys.stdout.write(json.dumps({"command": args.command, **result}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""PII masking (DESIGN §6): masked views on DuckDB, masking policies on Snowflake.

`apply_masking(warehouse, spec, pii_fields)` is called right after `registry.sync_schema`
in every raw run, so a PII column added by today's describe is masked the same run. It is
idempotent and cheap when nothing changed.

The mask is the same on both engines, so dbt models and tests behave alike:

- text PII (`Email`, `Phone`, names, streets: the warehouse `text` kind) becomes the
  lower-case hex SHA-256 of the value: equal values stay equal, so joins, `COUNT(DISTINCT)`
  and duplicate detection still work without the value. It is pseudonymisation, not
  anonymisation: a low-entropy value (a phone number, a common name) can be recovered by
  hashing candidates, so masked data is still personal data (docs/security.md).
- any other PII column (a date such as `Birthdate`, a number, a reference Id) becomes NULL:
  hashing would change its type, and a hashed birth date is trivially brute-forced.
- `payload` (raw and quarantine: the change as received, every field included) becomes
  NULL on objects that have PII fields.

DuckDB (local): one view per layer table in a schema named after the layer plus
`_masked` (`sfdc_masked.contact` over `sfdc.contact`, `sfdc_history_masked.contact`,
`sfdc_raw_masked.contact`, `sfdc_quarantine_masked.contact`), listing the table's columns
explicitly (and stamped with a digest of their definition, so an unchanged view is not
recreated): a column added later is absent from the view until the next `apply_masking`,
so a new column can never leak through a `SELECT *` unmasked. Consumers without PII
rights are given only the `*_masked` schemas.

Snowflake (production): one masking policy per column type, created by the project in the
meta schema, `CASE WHEN IS_ROLE_IN_SESSION(<reader>) OR IS_ROLE_IN_SESSION(<loader>)
THEN val ELSE <mask> END`, set on the PII columns of raw, current, scd2 and on the
payloads. The loader role (the warehouse resource's `role`) must see clear values: the
engine reads current rows and writes them back, and would otherwise persist the masks.
What was applied is recorded in `sfdc_meta.masking`, so a run with nothing new issues no
policy DDL. fakesnow cannot execute policy DDL; `snowflake_statements` is therefore pure
and tested for its shape and with sqlglot (docs/security.md says what is not verified).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sync_engine.dialect import DUCKDB, SNOWFLAKE, dialect_of
from sync_engine.spec import ObjectSpec
from sync_engine.types import WarehouseType
from sync_engine.warehouse import Warehouse, validate_identifier

log = logging.getLogger(__name__)

MASKED_SUFFIX = "_masked"
# The Snowflake role whose sessions see PII in clear (role hierarchy included).
READER_ROLE_VAR = "SNOWFLAKE_PII_READER_ROLE"
DEFAULT_READER_ROLE = "PII_READER"
LEDGER = "masking"
VIEW_COMMENT = "sfdc-sync masked view"
POLICY_PREFIX = "sfdc_pii_"
# Columns holding the whole change as received: every field, PII included.
PAYLOAD_COLUMN = "payload"
# DuckDB catalog type names allowed in a `CAST(NULL AS ...)`: letters, digits, (), commas.
_DUCKDB_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_ (),\[\]]*$")


class MaskingConfigError(ValueError):
    """Masking cannot be applied safely with the given configuration."""


def masked_schema(schema: str) -> str:
    """The schema holding the masked views of `schema` (`sfdc` -> `sfdc_masked`)."""
    return validate_identifier(f"{schema}{MASKED_SUFFIX}")


def pii_columns(spec: ObjectSpec, pii_fields: Iterable[str]) -> dict[str, WarehouseType]:
    """Column -> warehouse type of the spec's fields named in `pii_fields`.

    Names match case-insensitively (Salesforce API names are); a configured field the
    describe does not have (yet) is ignored until it appears.
    """
    wanted = {validate_identifier(f).lower() for f in pii_fields}
    return {f.column: f.wtype for f in spec.fields if f.column in wanted}


def masks_as_hash(wtype: WarehouseType) -> bool:
    """Text is masked by its SHA-256; every other type by NULL."""
    return wtype.kind == "text"


def role_name(role: str) -> str:
    """A validated Snowflake role name, upper case (how unquoted role names are stored)."""
    return validate_identifier(role).upper()


def reader_role_from_env() -> str:
    """`$SNOWFLAKE_PII_READER_ROLE`, default `PII_READER`."""
    return role_name(os.environ.get(READER_ROLE_VAR) or DEFAULT_READER_ROLE)


@dataclass(frozen=True)
class MaskingResult:
    """What one apply_masking call did."""

    pii_columns: tuple[str, ...]
    statements: int
    views: tuple[str, ...] = ()


def apply_masking(
    warehouse: Warehouse,
    spec: ObjectSpec,
    pii_fields: Sequence[str],
    *,
    reader_role: str | None = None,
    now: dt.datetime | None = None,
) -> MaskingResult:
    """Mask `pii_fields` of `spec`'s object in every layer; idempotent.

    Call it after `registry.sync_schema` (which creates the tables and new columns), with
    the merge spec it returned. DuckDB: (re)creates the masked views. Snowflake: creates
    or updates the policies and sets them on new PII columns, unsets them from columns no
    longer configured as PII (`reader_role` defaults to `$SNOWFLAKE_PII_READER_ROLE`).
    """
    if warehouse.dialect == "duckdb":
        return _apply_duckdb(warehouse, spec, pii_fields)
    if warehouse.dialect == "snowflake":
        return _apply_snowflake(warehouse, spec, pii_fields, reader_role, now)
    raise ValueError(f"unsupported warehouse dialect {warehouse.dialect!r}")


def _layer_tables(warehouse: Warehouse) -> tuple[str, ...]:
    s = warehouse.schema_names
    return (s.current, s.history, s.raw, s.quarantine)


def duckdb_view_sql(
    schema: str,
    table: str,
    columns: Sequence[tuple[str, str]],
    pii: dict[str, WarehouseType],
    *,
    mask_payload: bool,
) -> str:
    """`CREATE OR REPLACE VIEW <schema>_masked.<table>` over the table's `columns`.

    `columns` are (name, DuckDB catalog type) in table order.
    """
    q = DUCKDB.q
    select = []
    for name, dtype in columns:
        col = q(name)
        wtype = pii.get(name)
        if wtype is not None and masks_as_hash(wtype):
            select.append(f"sha256(CAST({col} AS VARCHAR)) AS {col}")
        elif wtype is not None or (mask_payload and name == PAYLOAD_COLUMN):
            if not _DUCKDB_TYPE_RE.match(dtype.upper()):
                raise MaskingConfigError(f"{schema}.{table}.{name}: unexpected type {dtype!r}")
            select.append(f"CAST(NULL AS {dtype.upper()}) AS {col}")
        else:
            select.append(col)
    view = f"{q(masked_schema(schema))}.{q(table)}"
    return (
        f"CREATE OR REPLACE VIEW {view} AS SELECT {', '.join(select)} FROM {q(schema)}.{q(table)}"
    )


def _duckdb_columns(warehouse: Warehouse, schema: str, table: str) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in warehouse.query(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = ? AND table_name = ? ORDER BY column_index",
            [schema, table],
        )
    ]


def _apply_duckdb(
    warehouse: Warehouse, spec: ObjectSpec, pii_fields: Sequence[str]
) -> MaskingResult:
    pii = pii_columns(spec, pii_fields)
    # A configured PII field missing from the spec but present as a column (a field the
    # merge spec no longer carries) is still masked: decide by the catalog's type.
    wanted = {f.lower() for f in pii_fields}
    views, statements = [], 0
    for schema in _layer_tables(warehouse):
        columns = _duckdb_columns(warehouse, schema, spec.table)
        if not columns:
            continue
        table_pii = dict(pii)
        for name, dtype in columns:
            if name in wanted and name not in table_pii:
                kind = "text" if dtype.upper().startswith("VARCHAR") else "other"
                table_pii[name] = WarehouseType(kind)
        views.append(f"{masked_schema(schema)}.{spec.table}")
        view_sql = duckdb_view_sql(
            schema, spec.table, columns, table_pii, mask_payload=bool(wanted)
        )
        # The view's comment holds a digest of its definition: an unchanged view (every
        # CDC run but the one after a schema change) costs one catalog read, no DDL.
        stamp = f"{VIEW_COMMENT} {hashlib.sha256(view_sql.encode()).hexdigest()[:16]}"
        current = warehouse.query(
            "SELECT comment FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
            [masked_schema(schema), spec.table],
        )
        if current and current[0][0] == stamp:
            continue
        view = DUCKDB.table(masked_schema(schema), spec.table)
        warehouse.execute(f"CREATE SCHEMA IF NOT EXISTS {DUCKDB.q(masked_schema(schema))}")
        warehouse.execute(view_sql)
        warehouse.execute(f"COMMENT ON VIEW {view} IS '{stamp}'")
        statements += 3
    log.info("%s: masked views refreshed (%d PII columns)", spec.name, len(pii))
    return MaskingResult(tuple(sorted(pii)), statements, tuple(views))


@dataclass(frozen=True)
class MaskingPolicy:
    """One Snowflake masking policy: its name, argument type and body."""

    name: str
    arg_type: str
    body: str

    @property
    def body_sha(self) -> str:
        """Digest of the body (the ledger notices a changed role or mask)."""
        return hashlib.sha256(f"{self.arg_type}|{self.body}".encode()).hexdigest()[:16]


def policy_for(wtype: WarehouseType | None, roles: Sequence[str]) -> MaskingPolicy:
    """The policy for a column of `wtype` (None: a VARIANT payload), exempting `roles`."""
    if wtype is None:
        name, arg_type, mask = "variant", "VARIANT", "NULL"
    else:
        arg_type = wtype.snowflake()
        if wtype.kind in ("text", "id"):
            # One VARCHAR policy per mask: Snowflake policies on VARCHAR(n) take VARCHAR.
            arg_type = "VARCHAR"
        mask = "SHA2(val, 256)" if masks_as_hash(wtype) else "NULL"
        name = wtype.kind if wtype.kind != "decimal" else f"decimal_{wtype.scale}"
    exempt = " OR ".join(f"IS_ROLE_IN_SESSION('{role_name(r)}')" for r in roles)
    body = f"CASE WHEN {exempt} THEN val ELSE {mask} END"
    return MaskingPolicy(validate_identifier(f"{POLICY_PREFIX}{name}"), arg_type, body)


def policy_statements(policy: MaskingPolicy, policy_schema: str) -> list[str]:
    """Create the policy if absent, then set its body (a changed role list takes effect).

    `CREATE OR REPLACE` is refused for a policy attached to columns; `ALTER ... SET BODY`
    is how an attached policy changes.
    """
    q = SNOWFLAKE.q
    name = f"{q(policy_schema)}.{q(policy.name)}"
    return [
        f"CREATE MASKING POLICY IF NOT EXISTS {name} AS (val {policy.arg_type}) "
        f"RETURNS {policy.arg_type} -> {policy.body}",
        f"ALTER MASKING POLICY {name} SET BODY -> {policy.body}",
    ]


def set_policy_statement(schema: str, table: str, column: str, policy_ref: str) -> str:
    """Attach a policy to a column; FORCE replaces any policy it had (idempotent)."""
    q = SNOWFLAKE.q
    return (
        f"ALTER TABLE {q(schema)}.{q(table)} MODIFY COLUMN {q(column)} "
        f"SET MASKING POLICY {policy_ref} FORCE"
    )


def unset_policy_statement(schema: str, table: str, column: str) -> str:
    """Detach the masking policy of a column no longer configured as PII."""
    q = SNOWFLAKE.q
    return f"ALTER TABLE {q(schema)}.{q(table)} MODIFY COLUMN {q(column)} UNSET MASKING POLICY"


@dataclass(frozen=True)
class ColumnPolicy:
    """A column that should carry a policy."""

    schema: str
    table: str
    column: str
    policy: MaskingPolicy

    @property
    def target(self) -> str:
        """`schema.table.column`, the ledger key."""
        return f"{self.schema}.{self.table}.{self.column}"


def desired_policies(
    warehouse: Warehouse, spec: ObjectSpec, pii_fields: Sequence[str], roles: Sequence[str]
) -> list[ColumnPolicy]:
    """Every (layer table, column) of the object that must carry a policy."""
    s = warehouse.schema_names
    pii = pii_columns(spec, pii_fields)
    out = []
    for schema in (s.raw, s.current, s.history):
        for column, wtype in sorted(pii.items()):
            out.append(ColumnPolicy(schema, spec.table, column, policy_for(wtype, roles)))
    if pii_fields:
        for schema in (s.raw, s.quarantine):
            out.append(ColumnPolicy(schema, spec.table, PAYLOAD_COLUMN, policy_for(None, roles)))
    return out


def snowflake_roles(warehouse: Warehouse, reader_role: str | None) -> list[str]:
    """The roles that see clear values: the PII reader and the loader (engine) role."""
    loader = getattr(warehouse, "role", None)
    if not loader:
        raise MaskingConfigError(
            "Snowflake masking needs the loader role (SNOWFLAKE_ROLE): the engine reads "
            "current rows and writes them back, so a masked loader would store the masks. "
            "Set SNOWFLAKE_ROLE to the role the sync runs as (docs/security.md)."
        )
    return sorted({role_name(reader_role or reader_role_from_env()), role_name(loader)})


def snowflake_statements(
    desired: Sequence[ColumnPolicy],
    applied: dict[str, tuple[str, str]],
    policy_schema: str,
    object_tables: Sequence[tuple[str, str]],
) -> tuple[list[str], list[ColumnPolicy], list[str]]:
    """The DDL to go from `applied` to `desired`: (statements, columns set, targets unset).

    `applied` is the ledger: target -> (policy name, body digest), policies included under
    the target `policy:<name>`. Pure (no warehouse), so its output is what the tests see.
    """
    q = SNOWFLAKE.q
    statements: list[str] = []
    policies = {c.policy.name: c.policy for c in desired}
    for name, policy in sorted(policies.items()):
        if applied.get(f"policy:{name}") != (name, policy.body_sha):
            statements += policy_statements(policy, policy_schema)
    to_set = [c for c in desired if applied.get(c.target, ("", ""))[0] != c.policy.name]
    for c in to_set:
        ref = f"{q(policy_schema)}.{q(c.policy.name)}"
        statements.append(set_policy_statement(c.schema, c.table, c.column, ref))
    wanted = {c.target for c in desired}
    prefixes = tuple(f"{schema}.{table}." for schema, table in object_tables)
    to_unset = sorted(t for t in applied if t.startswith(prefixes) and t not in wanted)
    for target in to_unset:
        schema, table, column = target.split(".")
        statements.append(unset_policy_statement(schema, table, column))
    return statements, to_set, to_unset


def ensure_ledger(warehouse: Warehouse) -> str:
    """Create `sfdc_meta.masking` (what policy each column carries) if absent."""
    q = dialect_of(warehouse).q
    meta = warehouse.schema_names.meta
    table = f"{q(meta)}.{q(LEDGER)}"
    # The adapter decides whether schemas may be created (least privilege on Snowflake).
    warehouse.ensure_schemas()
    warehouse.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ({q('target')} VARCHAR NOT NULL, "
        f"{q('policy_name')} VARCHAR NOT NULL, {q('body_sha')} VARCHAR NOT NULL, "
        f"{q('applied_at')} TIMESTAMP NOT NULL)"
    )
    return table


def _apply_snowflake(
    warehouse: Warehouse,
    spec: ObjectSpec,
    pii_fields: Sequence[str],
    reader_role: str | None,
    now: dt.datetime | None,
) -> MaskingResult:
    q = SNOWFLAKE.q
    s = warehouse.schema_names
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    roles = snowflake_roles(warehouse, reader_role) if pii_fields else []
    desired = desired_policies(warehouse, spec, pii_fields, roles) if pii_fields else []
    ledger = ensure_ledger(warehouse)
    applied = {
        r[0]: (r[1], r[2])
        for r in warehouse.query(
            f"SELECT {q('target')}, {q('policy_name')}, {q('body_sha')} FROM {ledger}"
        )
    }
    tables = [(schema, spec.table) for schema in (s.raw, s.current, s.history, s.quarantine)]
    statements, to_set, to_unset = snowflake_statements(desired, applied, s.meta, tables)
    for statement in statements:
        warehouse.execute(statement)
    # Record after the DDL succeeded: a failure leaves the ledger behind, so the next run
    # repeats the (idempotent) statements.
    records = {f"policy:{c.policy.name}": (c.policy.name, c.policy.body_sha) for c in desired}
    records.update({c.target: (c.policy.name, c.policy.body_sha) for c in to_set})
    changed = [t for t, v in records.items() if applied.get(t) != v] + to_unset
    if changed:
        lit = SNOWFLAKE.string
        keys = ", ".join(lit(t) for t in changed)
        warehouse.execute(f"DELETE FROM {ledger} WHERE {q('target')} IN ({keys})")
        rows = [
            f"({lit(t)}, {lit(name)}, {lit(sha)}, {SNOWFLAKE.timestamp_literal(now)})"
            for t, (name, sha) in records.items()
            if applied.get(t) != (name, sha)
        ]
        if rows:
            warehouse.execute(f"INSERT INTO {ledger} VALUES {', '.join(rows)}")
    log.info(
        "%s: %d masking statements (%d columns set, %d unset)",
        spec.name,
        len(statements),
        len(to_set),
        len(to_unset),
    )
    return MaskingResult(tuple(sorted(pii_columns(spec, pii_fields))), len(statements))


@dataclass(frozen=True)
class RowAccessRule:
    """An optional row access policy: `body` is a boolean expression of `arg` (one column).

    Not applied by default: every PII consumer sees every row, masked (docs/security.md
    gives an example, e.g. restricting rows by owner region through a mapping table).
    """

    name: str
    arg: str
    arg_type: str
    body: str


def row_access_statements(
    rule: RowAccessRule, policy_schema: str, schema: str, table: str
) -> list[str]:
    """Create (if absent) and set the rule's body, then attach it to `schema.table`.

    Snowflake refuses a second `ADD ROW ACCESS POLICY` on a table: attach once (the
    caller checks `POLICY_REFERENCES` or keeps a ledger like the masking one).
    """
    q = SNOWFLAKE.q
    validate_identifier(rule.name)
    name = f"{q(policy_schema)}.{q(rule.name)}"
    arg = validate_identifier(rule.arg).lower()
    return [
        f"CREATE ROW ACCESS POLICY IF NOT EXISTS {name} AS ({arg} {rule.arg_type}) "
        f"RETURNS BOOLEAN -> {rule.body}",
        f"ALTER ROW ACCESS POLICY {name} SET BODY -> {rule.body}",
        f"ALTER TABLE {q(schema)}.{q(table)} ADD ROW ACCESS POLICY {name} ON ({q(rule.arg)})",
    ]

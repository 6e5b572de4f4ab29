"""Naming the statements a benchmark captured: a stable label and the tables each touches.

Shared by `bench.scale_statements` (rows scanned per statement on DuckDB) and
`bench.snowflake_statements` (statements and tables per run through fakesnow). A label
must be the same for the same statement at any table or batch size, so literals (ids,
dates, batch ids) and numbers are dropped: what is left is the engine function that sent
it, the statement's first keywords and its target table.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot import exp

REPO = Path(__file__).resolve().parents[1]
# Frames in these packages are the callers worth naming; the warehouse adapters and this
# benchmark package are the plumbing in between.
_CALLER_PACKAGES = ("sync_engine", "sfdc_assets")
_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_SPACE = re.compile(r"\s+")
# The statement kinds a label distinguishes, longest first so CREATE OR REPLACE TEMP
# TABLE is not read as CREATE.
_VERBS = (
    "CREATE OR REPLACE TEMPORARY TABLE",
    "CREATE OR REPLACE TEMP TABLE",
    "CREATE TEMPORARY TABLE",
    "CREATE TEMP TABLE",
    "CREATE OR REPLACE TABLE",
    "CREATE TABLE IF NOT EXISTS",
    "CREATE TABLE",
    "INSERT INTO",
    "DELETE FROM",
    "MERGE INTO",
    "COPY INTO",
    "UPDATE",
    "SELECT",
    "WITH",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "CHECKPOINT",
    "DROP TABLE IF EXISTS",
    "DROP TABLE",
    "USE SCHEMA",
)
_NAME = r'((?:"?[A-Za-z_][A-Za-z0-9_]*"?\.)*"?[A-Za-z_][A-Za-z0-9_]*"?)'
_FROM = re.compile(r"\bFROM\s+" + _NAME, re.IGNORECASE)
# The statement a WITH prefixes, when it writes: `WITH a AS (...) DELETE FROM t ...`.
_MAIN_AFTER_CTES = re.compile(
    r"\)\s*(INSERT INTO|DELETE FROM|MERGE INTO|UPDATE)\s+" + _NAME, re.IGNORECASE
)


def _name(raw: str) -> str:
    return raw.replace('"', "").lower()


def shape(sql: str) -> str:
    """First keywords and target (or first FROM) table, literals and numbers stripped.

    `INSERT INTO "sfdc_raw"."opportunity" SELECT ... WHERE id IN ('006...')` ->
    `INSERT INTO sfdc_raw.opportunity`; `SELECT COUNT(*) FROM "sfdc_meta"."load_log" ...`
    -> `SELECT FROM sfdc_meta.load_log`.
    """
    text = _SPACE.sub(" ", _NUMBER.sub("N", _STRING.sub("?", sql))).strip()
    upper = text.upper()
    verb = next((v for v in _VERBS if upper.startswith(v)), upper.split(" ", 1)[0])
    rest = text[len(verb) :].lstrip()
    if verb == "WITH":
        main = _MAIN_AFTER_CTES.search(rest)
        if main:
            return f"{main.group(1).upper()} {_name(main.group(2))}"
    if verb in ("SELECT", "WITH"):
        found = _FROM.search(rest)
        return f"SELECT FROM {_name(found.group(1))}" if found else "SELECT"
    target = re.match(_NAME, rest)
    if (
        verb.startswith(("INSERT", "DELETE", "MERGE", "COPY", "UPDATE", "CREATE", "DROP"))
        and target
    ):
        return f"{verb} {_name(target.group(1))}"
    return verb


def caller() -> str:
    """`module.function` of the nearest frame in the engine or the assets package."""
    for frame in inspect.stack(context=0):
        path = Path(frame.filename)
        try:
            rel = path.resolve().relative_to(REPO)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] in _CALLER_PACKAGES:
            return f"{rel.stem}.{frame.function}"
    return "?"


def label(sql: str, where: str | None = None) -> str:
    """`<caller>: <shape>`: stable across table and batch sizes."""
    return f"{where if where is not None else caller()}: {shape(sql)}"


@dataclass(frozen=True)
class Tables:
    """The tables one statement reads and writes (`schema.table`, lower case)."""

    reads: frozenset[str] = field(default_factory=frozenset)
    writes: frozenset[str] = field(default_factory=frozenset)


def is_temporary(name: str) -> bool:
    """The engine's per-run temp tables (`sfdc_tmp_*`) and stages (`@...`)."""
    return name.startswith(("sfdc_tmp", "@"))


def _qualified(table: exp.Table) -> str:
    parts = [p for p in (table.db, table.name) if p]
    return ".".join(parts).lower()


def tables(sql: str, dialect: str = "snowflake") -> Tables:
    """Tables `sql` reads and writes, parsed by sqlglot in `dialect`.

    The written table is the statement's target (INSERT, DELETE, UPDATE, MERGE, CREATE,
    COPY INTO);
    every other table reference is a read, CTE names excluded. A statement that reads its
    own target (an anti-join INSERT) lists it in both. Unparseable or non-table
    statements (BEGIN, CHECKPOINT) touch nothing.
    """
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except sqlglot.errors.ParseError:
        return Tables()
    if tree is None:
        return Tables()
    target: exp.Table | None = None
    if isinstance(tree, exp.Insert | exp.Delete | exp.Update | exp.Merge | exp.Create | exp.Copy):
        node = tree.this
        if isinstance(node, exp.Schema):  # CREATE TABLE t (cols) / INSERT INTO t (cols)
            node = node.this
        if isinstance(node, exp.Table):
            target = node
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    reads = {
        _qualified(t)
        for t in tree.find_all(exp.Table)
        if t is not target and t.name and t.name.lower() not in ctes
    }
    writes = {_qualified(target)} if target is not None else set()
    return Tables(frozenset(reads), frozenset(writes))

"""SOQL subset: parsing, validation errors, translation, and a property test comparing the
translated DuckDB query with a plain-Python evaluation of the same WHERE clause."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfdc_emulator.describe import default_catalog
from sfdc_emulator.soql import SoqlError, parse, parse_datetime_literal, to_sql

CATALOG = default_catalog()


def error_of(text: str) -> SoqlError:
    with pytest.raises(SoqlError) as info:
        parse(text, CATALOG)
    return info.value


def test_fields_are_case_insensitive_and_output_uses_describe_spelling() -> None:
    q = parse("select id, NAME, account.name, OWNER.name from opportunity", CATALOG)
    assert q.object.name == "Opportunity"
    assert q.column_names == ["Id", "Name", "Account.Name", "Owner.Name"]


def test_parent_relationships_become_left_joins_with_bound_literals() -> None:
    q = parse(
        "SELECT Id, Account.Owner.Name FROM Opportunity WHERE Account.Name = 'x\\'y'", CATALOG
    )
    sql, params = to_sql(q, include_deleted=False)
    assert 'LEFT JOIN "Account" AS t1 ON t1."Id" = t0."AccountId"' in sql
    assert 'LEFT JOIN "User" AS t2 ON t2."Id" = t1."OwnerId"' in sql
    assert "x'y" not in sql and params == ["x'y"]
    assert 't0."IsDeleted" = FALSE' in sql


def test_query_all_translation_keeps_deleted_rows() -> None:
    sql, _ = to_sql(parse("SELECT Id FROM Account", CATALOG), include_deleted=True)
    assert "IsDeleted" not in sql


def test_object_alias_and_object_name_prefix_are_accepted() -> None:
    q = parse("SELECT o.Id, Opportunity.Name FROM Opportunity o WHERE o.Amount > 5", CATALOG)
    assert q.column_names == ["Id", "Name"]


def test_polymorphic_relationship_reads_every_target() -> None:
    q = parse("SELECT Who.Name FROM Task", CATALOG)
    sql, _ = to_sql(q, include_deleted=False)
    assert 'LEFT JOIN "Contact"' in sql and 'LEFT JOIN "Lead"' in sql


def test_count_query() -> None:
    q = parse("SELECT COUNT() FROM Lead WHERE IsConverted = false", CATALOG)
    assert q.is_count
    sql, params = to_sql(q, include_deleted=False)
    assert sql.startswith("SELECT count(*)") and params == [False]


def test_datetime_literals_with_offsets_and_fractions_are_utc() -> None:
    assert parse_datetime_literal("2024-01-01T00:00:00Z") == datetime(2024, 1, 1)
    assert parse_datetime_literal("2024-01-01T05:30:00+05:30") == datetime(2024, 1, 1)
    assert parse_datetime_literal("2024-01-01T00:00:00.250-01:00") == datetime(
        2024, 1, 1, 1, 0, 0, 250000
    )


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("SELECT Id, FROM Account", "MALFORMED_QUERY", "unexpected token: 'FROM'"),
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY", "unexpected token: <EOF>"),
        ("SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'",
         "MALFORMED_QUERY", "unexpected token: 'OR'"),
        ("SELECT Id FROM Account GROUP BY Name", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Foo FROM Account", "INVALID_FIELD", "No such column 'Foo' on entity 'Account'"),
        ("SELECT Id FROM Nope__c", "INVALID_TYPE", "sObject type 'Nope__c' is not supported"),
        ("SELECT Bogus.Name FROM Opportunity", "INVALID_FIELD", "Didn't understand relationship"),
        ("SELECT Id FROM Account WHERE CreatedDate > 2024-01-01", "INVALID_FIELD",
         "must be of type dateTime"),
        ("SELECT Id FROM Account WHERE Name = 5", "INVALID_FIELD", "must be of type string"),
        ("SELECT Id FROM Account WHERE BillingAddress = 'x'", "INVALID_FIELD", "filtered"),
        ("SELECT Id FROM Account OFFSET 2001", "NUMBER_OUTSIDE_VALID_RANGE", "offset"),
        ("SELECT FIELDS(ALL) FROM Account", "MALFORMED_QUERY", "LIMIT"),
        ("SELECT Id, Id FROM Account", "MALFORMED_QUERY", "duplicate field"),
        ("SELECT Id FROM Account WHERE Name = 'open", "MALFORMED_QUERY", "unexpected token"),
        ("", "MALFORMED_QUERY", "required"),
    ],
)  # fmt: skip
def test_invalid_queries_give_salesforce_errors(text: str, code: str, fragment: str) -> None:
    err = error_of(text)
    assert err.error_code == code
    assert fragment.lower() in err.message.lower()


def test_malformed_message_points_at_the_token() -> None:
    err = error_of("SELECT Id, FROM Account")
    assert err.message == (
        "\nSELECT Id, FROM Account\n           ^\n"
        "ERROR at Row:1:Column:12\nunexpected token: 'FROM'"
    )


def test_order_by_defaults_nulls_first_ascending_and_last_descending() -> None:
    q = parse("SELECT Id FROM Account ORDER BY Name, CreatedDate DESC LIMIT 5 OFFSET 10", CATALOG)
    sql, params = to_sql(q, include_deleted=False)
    assert 'ORDER BY t0."Name" ASC NULLS FIRST, t0."CreatedDate" DESC NULLS LAST' in sql
    assert params == [5, 10]


def test_fields_function_expands_describe_fields() -> None:
    q = parse("SELECT FIELDS(STANDARD) FROM Opportunity", CATALOG)
    assert "Region__c" not in q.column_names and "StageName" in q.column_names
    q = parse("SELECT FIELDS(CUSTOM) FROM Opportunity LIMIT 200", CATALOG)
    assert q.column_names == [f.name for f in CATALOG["Opportunity"].fields if f.custom]


FIELDS = {
    "Name": "string",
    "StageName": "picklist",
    "Amount": "currency",
    "Probability": "percent",
    "CloseDate": "date",
    "CreatedDate": "datetime",
    "IsPrivate": "boolean",
}
WORDS = ["alpha", "Beta", "gam%ma", "o'neil", "back\\slash", "under_score", ""]
STAGES = ["Prospecting", "Closed Won", "Closed Lost"]
AMOUNTS = [Decimal("0.00"), Decimal("10.50"), Decimal("250.00"), Decimal("-3.25")]
BASE = datetime(2024, 3, 1, 12, 0, 0)


def _rows() -> list[dict[str, Any]]:
    rng = random.Random(3)
    rows = []
    for i in range(40):

        def maybe(value: Any) -> Any:
            return None if rng.random() < 0.2 else value

        rows.append(
            {
                "Id": f"006{i:015d}",
                "IsDeleted": False,
                "Name": maybe(rng.choice(WORDS)),
                "StageName": maybe(rng.choice(STAGES)),
                "Amount": maybe(rng.choice(AMOUNTS)),
                "Probability": maybe(float(rng.choice([0, 10, 50, 100]))),
                "CloseDate": maybe(date(2024, 3, 1) + timedelta(days=rng.randrange(-3, 4))),
                "CreatedDate": maybe(BASE + timedelta(hours=rng.randrange(-5, 6))),
                "IsPrivate": rng.random() < 0.5,
            }
        )
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def table() -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    spec = CATALOG["Opportunity"]
    types = {
        "boolean": "BOOLEAN",
        "double": "DOUBLE",
        "percent": "DOUBLE",
        "int": "BIGINT",
        "currency": "DECIMAL(18,2)",
        "date": "DATE",
        "datetime": "TIMESTAMP",
    }
    cols = ", ".join(f'"{f.name}" {types.get(f.type, "VARCHAR")}' for f in spec.stored_fields())
    conn.execute(f'CREATE TABLE "Opportunity" ({cols})')
    names = list(ROWS[0])
    marks = ", ".join("?" * len(names))
    quoted = ", ".join(f'"{n}"' for n in names)
    for row in ROWS:
        conn.execute(f'INSERT INTO "Opportunity" ({quoted}) VALUES ({marks})', list(row.values()))
    return conn


def soql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def literal(field: str, value: Any, tz_minutes: int = 0) -> str:
    ftype = FIELDS[field]
    if value is None:
        return "null"
    if ftype in ("string", "picklist"):
        return soql_string(value)
    if ftype == "boolean":
        return "true" if value else "false"
    if ftype == "date":
        return value.isoformat()
    if ftype == "datetime":
        tz = timezone(timedelta(minutes=tz_minutes))
        local = value.replace(tzinfo=UTC).astimezone(tz)
        text = local.strftime("%Y-%m-%dT%H:%M:%S")
        if not tz_minutes:
            return text + "Z"
        sign = "+" if tz_minutes > 0 else "-"
        return f"{text}{sign}{abs(tz_minutes) // 60:02d}:{abs(tz_minutes) % 60:02d}"
    return str(value)


def values_for(field: str) -> st.SearchStrategy[Any]:
    ftype = FIELDS[field]
    if ftype == "string":
        return st.sampled_from([*WORDS, "ALPHA", "zzz"])
    if ftype == "picklist":
        return st.sampled_from([*STAGES, "closed won"])
    if ftype == "currency":
        return st.sampled_from([0, 10.5, 250, -3.25, 100])
    if ftype == "percent":
        return st.sampled_from([0, 10, 50, 100, 75])
    if ftype == "date":
        return st.integers(-4, 4).map(lambda d: date(2024, 3, 1) + timedelta(days=d))
    if ftype == "datetime":
        return st.integers(-6, 6).map(lambda h: BASE + timedelta(hours=h))
    return st.booleans()


@st.composite
def comparison(draw: st.DrawFn) -> tuple[str, Any]:
    field = draw(st.sampled_from(sorted(FIELDS)))
    ftype = FIELDS[field]
    tz = draw(st.sampled_from([0, 0, 330, -480]))
    kinds = ["=", "!=", "null="]
    if ftype != "boolean":
        kinds += ["<", "<=", ">", ">=", "in", "notin"]
    if ftype in ("string", "picklist"):
        kinds.append("like")
    kind = draw(st.sampled_from(kinds))
    if kind == "null=":
        op = draw(st.sampled_from(["=", "!="]))
        return f"{field} {op} null", ("cmp", field, op, None)
    if kind in ("in", "notin"):
        items = draw(st.lists(st.one_of(values_for(field), st.none()), min_size=1, max_size=3))
        text = ", ".join(literal(field, v, tz) for v in items)
        keyword = "IN" if kind == "in" else "NOT IN"
        return f"{field} {keyword} ({text})", ("in", field, items, kind == "notin")
    if kind == "like":
        pattern = "".join(draw(st.lists(st.sampled_from(["a", "L", "%", "_", "e"]), max_size=5)))
        return f"{field} LIKE {soql_string(pattern)}", ("like", field, pattern)
    value = draw(values_for(field))
    return f"{field} {kind} {literal(field, value, tz)}", ("cmp", field, kind, value)


def condition(depth: int = 2) -> st.SearchStrategy[tuple[str, Any]]:
    if depth == 0:
        return comparison()
    sub = condition(depth - 1)

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, Any]:
        kind = draw(st.sampled_from(["leaf", "leaf", "and", "or", "not"]))
        if kind == "leaf":
            return draw(comparison())
        if kind == "not":
            text, node = draw(sub)
            return f"NOT ({text})", ("not", node)
        parts = draw(st.lists(sub, min_size=2, max_size=3))
        joiner = " AND " if kind == "and" else " OR "
        return joiner.join(f"({t})" for t, _ in parts), (kind, [n for _, n in parts])

    return build()


def _norm(value: Any, ftype: str) -> Any:
    if isinstance(value, str) and ftype in ("string", "picklist"):
        return value.lower()
    if ftype in ("currency", "percent") and value is not None:
        return Decimal(str(value))
    return value


def evaluate(node: Any, row: dict[str, Any]) -> bool:
    kind = node[0]
    if kind == "and":
        return all(evaluate(n, row) for n in node[1])
    if kind == "or":
        return any(evaluate(n, row) for n in node[1])
    if kind == "not":
        return not evaluate(node[1], row)
    field = node[1]
    ftype = FIELDS[field]
    current = _norm(row[field], ftype)
    if kind == "like":
        if current is None:
            return False
        regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in node[2])
        return re.fullmatch(regex, row[field], re.IGNORECASE | re.DOTALL) is not None
    if kind == "in":
        items = [_norm(v, ftype) for v in node[2]]
        hit = (None in items) if current is None else current in [v for v in items if v is not None]
        return not hit if node[3] else hit
    op, value = node[2], _norm(node[3], ftype)
    if value is None:
        return (current is None) if op == "=" else (current is not None)
    if current is None:
        return op == "!="
    return {
        "=": current == value,
        "!=": current != value,
        "<": current < value,
        "<=": current <= value,
        ">": current > value,
        ">=": current >= value,
    }[op]


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(condition())
def test_translated_where_matches_python_evaluation(
    table: duckdb.DuckDBPyConnection, generated: tuple[str, Any]
) -> None:
    text, node = generated
    query = parse(f"SELECT Id FROM Opportunity WHERE {text}", CATALOG)
    sql, params = to_sql(query, include_deleted=False)
    got = {r[0] for r in table.execute(sql, params).fetchall()}
    expected = {row["Id"] for row in ROWS if evaluate(node, row)}
    assert got == expected, text

"""The statements for DuckDB and Snowflake differ only where the dialect object says.

Each statement is rendered for both dialects; every fragment a dialect field renders
(types, temp keyword, hash, COUNT_IF, IGNORE NULLS, null order, literals, array
membership, the flat stage) is replaced by a placeholder, identifiers are case-folded,
and what is left must be the same text: the table "SQL per dialect" in docs/engine.md,
executable. A difference spelled outside the dialect object fails here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
import sqlglot

from sync_engine import statements as st
from sync_engine.dialect import DUCKDB, SNOWFLAKE, SqlDialect
from sync_engine.spec import FieldSpec, ObjectSpec
from sync_engine.warehouse import SchemaNames

SPEC = ObjectSpec.of(
    "Opportunity",
    [
        ("Name", "string"),
        ("Amount", "currency", 2),
        ("Probability", "percent", 4),
        ("CloseDate", "date"),
        ("IsWon", "boolean"),
        ("LastActivity__c", "datetime"),
        ("Quantity__c", "int"),
        ("AccountId", "reference"),
        ("Start__c", "time"),
    ],
)
SPEC = ObjectSpec(SPEC.name, (*SPEC.fields, FieldSpec("SystemModstamp", "datetime")))
S = SchemaNames()
DAY, LATER = dt.date(2024, 1, 2), dt.date(2024, 3, 4)
NOW = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
IDS = "'006000000000001AAA', '006000000000002AAA'"
RID = "006000000000001AAA"
SUBQUERY = 'SELECT "id" FROM "sfdc_tmp_touched"'


def _statements(d: SqlDialect) -> dict[str, str]:
    """Every statement, with each variant its arguments choose."""
    out: dict[str, Callable[[], str]] = {
        "create_raw": lambda: st.create_raw(d, SPEC, S),
        "create_current": lambda: st.create_current(d, SPEC, S),
        "create_history": lambda: st.create_history(d, SPEC, S),
        "create_history_index": lambda: st.create_history_index(d, SPEC, S),
        "create_quarantine": lambda: st.create_quarantine(d, SPEC, S),
        "create_schema_registry": lambda: st.create_schema_registry(d, S),
        "create_load_log": lambda: st.create_load_log(d, S),
        "add_column": lambda: st.add_column(d, "sfdc", "opportunity", "amount", "VARCHAR"),
        "dedupe_batch": lambda: st.dedupe_batch(d),
        "insert_raw": lambda: st.insert_raw(d, SPEC, S, DAY, LATER),
        "insert_raw/no_anti_join": lambda: st.insert_raw(d, SPEC, S, DAY, LATER, anti_join=False),
        "create_raw_appends": lambda: st.create_raw_appends(d, S),
        "raw_appends_from_raw/seed": lambda: st.raw_appends_from_raw(d, SPEC, S, NOW),
        "raw_appends_from_raw/part": lambda: st.raw_appends_from_raw(
            d, SPEC, S, NOW, " AND \"batch_id\" = 'b1'", "read-1", "part-1"
        ),
        "insert_raw_append": lambda: st.insert_raw_append(
            d, SPEC, S, "b1", "read-1", "part-1", "bulk", 5, (DAY, LATER), (RID, RID), NOW
        ),
        "raw_append_overlaps/read": lambda: st.raw_append_overlaps(
            d,
            SPEC,
            S,
            [("bulk", DAY, LATER, RID, RID), ("cdc", DAY, DAY, RID, RID)],
            "read-1",
            "part-1",
        ),
        "raw_append_overlaps/no_read": lambda: st.raw_append_overlaps(
            d, SPEC, S, [("rest", DAY, LATER, RID, RID)], None, None
        ),
        "raw_appended_rows": lambda: st.raw_appended_rows(d, SPEC, S, "b1"),
        "delete_raw_appends": lambda: st.delete_raw_appends(d, SPEC, S, "b1"),
        "select_to_apply": lambda: st.select_to_apply(d, SPEC, S, DAY, LATER),
        "select_all_to_apply": lambda: st.select_all_to_apply(d, SPEC),
        "touched": lambda: st.touched(d),
        "touched_counts": lambda: st.touched_counts(d),
        "id_counts/table": lambda: st.id_counts(d, SPEC, S, None),
        "touched_ids": lambda: st.touched_ids(d, late_only=True),
        "classify": lambda: st.classify(d),
        "class_counts": lambda: st.class_counts(d),
        "fetch_anchors/none": lambda: st.fetch_anchors(d, SPEC, S, None),
        "anchor_range": lambda: st.anchor_range(d),
        "build_seq/in_order": lambda: st.build_seq(d, SPEC, S, None, DAY),
        "fold": lambda: st.fold(d, SPEC),
        "history_rows": lambda: st.history_rows(d),
        "insert_history": lambda: st.insert_history(d, SPEC, S, NOW),
        "insert_current": lambda: st.insert_current(d, SPEC, S, NOW),
        "counts": lambda: st.counts(d, SPEC),
        "insert_load_log": lambda: st.insert_load_log(d, S, "b1", "Opportunity", NOW, range(10)),
    }
    for name, ids in (("list", IDS), ("subquery", SUBQUERY)):
        out |= {
            f"fetch_current/{name}": lambda ids=ids: st.fetch_current(d, SPEC, S, ids),
            f"id_counts/{name}": lambda ids=ids: st.id_counts(d, SPEC, S, ids),
            f"fetch_anchors/{name}": lambda ids=ids: st.fetch_anchors(d, SPEC, S, ids),
            f"build_seq/{name}": lambda ids=ids: st.build_seq(d, SPEC, S, ids, DAY),
            f"delete_history/{name}": lambda ids=ids: st.delete_history_after_anchor(
                d, SPEC, S, ids
            ),
            f"close/{name}": lambda ids=ids: st.close_open_versions(d, SPEC, S, ids),
            f"close_by_index/{name}": lambda ids=ids: st.close_open_versions(
                d, SPEC, S, ids, by_index=True
            ),
            f"reset_anchors/{name}": lambda ids=ids: st.reset_anchor_versions(d, SPEC, S, ids),
            f"delete_current/{name}": lambda ids=ids: st.delete_current(d, SPEC, S, ids),
        }
    for all_new in (True, False):
        out |= {
            f"insert_new_history/{all_new}": lambda a=all_new: st.insert_new_history(
                d, SPEC, S, NOW, a
            ),
            f"insert_new_current/{all_new}": lambda a=all_new: st.insert_new_current(
                d, SPEC, S, NOW, a
            ),
            f"counts_new/{all_new}": lambda a=all_new: st.counts_new(d, a),
        }
    return {name: render() for name, render in out.items()}


def _template(template: str, **groups: str) -> re.Pattern[str]:
    """A regex matching what `template.format(...)` renders, its fields as named groups."""
    pattern = re.escape(template)
    for name, group in groups.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{group})")
    return re.compile(pattern)


def _neutral(d: SqlDialect, sql: str) -> str:
    """`sql` with what `d` renders replaced by placeholders (the order matters)."""
    contains = _template(d.array_contains_sql, array=r"\S+?", item=r"\w+")
    sql = contains.sub(lambda m: f"<contains>({m['array']}, {m['item']})", sql)
    stamp = _template(d.timestamp_literal_sql.replace("{}", "{value}"), value=r"[0-9: .-]+")
    sql = stamp.sub(lambda m: f"<ts {m['value']}>", sql)
    sql = re.sub(r'"(\w+)"', lambda m: f'"{m[1].lower()}"', sql)
    if d.flat_stage:
        sql = re.sub(r'PARSE_JSON\((b\."\w+")\)', r"\1", sql)
        sql = re.sub(r'b\."(\w+)__set" AS "\1__set"', r"<flag \1>", sql)
    else:
        sql = re.sub(r'<contains>\(b\."set_fields", \w+\) AS "(\w+)__set"', r"<flag \1>", sql)
    sql = sql.replace(f"OR REPLACE {d.temp} TABLE", "OR REPLACE <temp> TABLE")
    if d.raw_cluster_sql:
        cluster = d.raw_cluster_sql.format('"change_date"')
        sql = sql.replace(cluster, "") if sql.endswith(cluster) else sql
    sql = re.sub(rf"\b{d.hash_fn}\(", "<hash>(", sql)
    sql = sql.replace(d.count_if_sql.split("{}")[0], "<count_if>(")
    sql = sql.replace(d.last_value_sql.split("{}")[1], ")<ignore_nulls>")
    desc = r"\bDESC( NULLS LAST)?\b" if d.desc_nulls_last else r"\bDESC NULLS LAST\b"
    sql = re.sub(desc, "<desc>", sql)
    types = {d.timestamp: "timestamp", d.bigint: "bigint", d.json: "json"}
    types[d.text_array] = "array"
    types |= {d.column_type(f.wtype): f.wtype.label() for f in SPEC.fields if f.scale is not None}
    for rendered, label in types.items():
        sql = re.sub(rf"(?<!\w){re.escape(rendered)}(?![\w\[(])", f"<{label}>", sql)
    return sql


def test_statements_differ_between_duckdb_and_snowflake_only_in_dialect_fields():
    duck, snow = _statements(DUCKDB), _statements(SNOWFLAKE)
    assert duck.keys() == snow.keys()
    for name in duck:
        assert _neutral(DUCKDB, duck[name]) == _neutral(SNOWFLAKE, snow[name]), name


def test_the_neutral_form_still_shows_a_difference_the_dialect_does_not_own():
    # The comparison is not vacuous: a Snowflake DESC without NULLS LAST sorts NULLs first.
    fold = _statements(SNOWFLAKE)["fold"]
    broken = fold.replace("DESC NULLS LAST", "DESC")
    assert _neutral(SNOWFLAKE, broken) != _neutral(DUCKDB, _statements(DUCKDB)["fold"])


def test_a_flat_stage_holds_json_text_and_the_set_flags_the_apply_table_reads():
    flat, arrow = st.stage_ddl(SNOWFLAKE, SPEC), st.stage_ddl(DUCKDB, SPEC)
    assert '"SET_FIELDS" VARCHAR' in flat and '"PAYLOAD" VARCHAR' in flat
    assert '"set_fields" VARCHAR[]' in arrow and '"payload" JSON' in arrow
    flags = [f"{c}__set" for c in SPEC.state_columns]
    assert all(f'"{c.upper()}" BOOLEAN' in flat for c in flags)
    assert not any(c in arrow for c in flags)
    # Without the flags, both stages have the same columns (case folded).
    names = re.compile(r'"(\w+)" ')
    assert [n.lower() for n in names.findall(flat) if not n.endswith("__SET")] == names.findall(
        arrow
    )


@pytest.mark.parametrize("d", [DUCKDB, SNOWFLAKE], ids=lambda d: d.name)
def test_every_statement_parses_in_its_own_dialect(d):
    for name, sql in _statements(d).items():
        assert sqlglot.parse_one(sql, read=d.name, error_level=sqlglot.ErrorLevel.RAISE), name


def test_snowflake_clusters_raw_by_change_date_and_duckdb_does_not():
    snow = sqlglot.parse_one(st.create_raw(SNOWFLAKE, SPEC, S), read="snowflake")
    cluster = snow.find(sqlglot.exp.ClusterProperty)
    assert cluster is not None
    assert [c.name for c in cluster.find_all(sqlglot.exp.Column)] == ["CHANGE_DATE"]
    assert "CLUSTER" not in st.create_raw(DUCKDB, SPEC, S)


def test_snowflake_search_optimization_is_on_current_and_scd2_id_and_duckdb_has_none():
    statements = st.search_optimization(SNOWFLAKE, SPEC, S)
    assert statements == [
        'ALTER TABLE "SFDC"."OPPORTUNITY" ADD SEARCH OPTIMIZATION ON EQUALITY("ID")',
        'ALTER TABLE "SFDC_HISTORY"."OPPORTUNITY" ADD SEARCH OPTIMIZATION ON EQUALITY("ID")',
    ]
    for sql in statements:
        # sqlglot knows no SEARCH OPTIMIZATION (a Command); its table must still parse.
        table = sql.removeprefix("ALTER TABLE ").split(" ADD ")[0]
        assert sqlglot.parse_one(f"ALTER TABLE {table} CLUSTER BY (x)", read="snowflake")
    assert st.search_optimization(DUCKDB, SPEC, S) == []

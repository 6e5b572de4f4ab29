"""The SQL literal helpers of the dialect objects: validated, escaped, round-tripping."""

from __future__ import annotations

import datetime as dt
import warnings

import fakesnow
import pytest

from resources.duckdb_warehouse import DuckDBWarehouse
from resources.snowflake_warehouse import SnowflakeWarehouse
from sync_engine.dialect import DUCKDB, SNOWFLAKE, dialect_of
from sync_engine.warehouse import InvalidIdentifierError

TRICKY = ["it's", "back\\slash", "\\'", "naïve ☃", "a''b", "\\\\n", ""]


def test_string_literals_round_trip_through_duckdb():
    wh = DuckDBWarehouse(path=":memory:")
    assert [wh.query(f"SELECT {DUCKDB.string(v)}")[0][0] for v in TRICKY] == TRICKY


def test_string_literals_round_trip_through_snowflake_where_backslash_escapes():
    # Regression: quote doubling alone turned Snowflake's `\s` into `s`.
    assert SNOWFLAKE.string("a\\b") == "'a\\\\b'" and DUCKDB.string("a\\b") == "'a\\b'"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with fakesnow.patch():
            wh = SnowflakeWarehouse(account="fake", user="fake", password="snow", database="LIT")
            assert [wh.query(f"SELECT {SNOWFLAKE.string(v)}")[0][0] for v in TRICKY] == TRICKY


@pytest.mark.parametrize("value", [None, 3, b"x", "nul\x00byte"])
def test_string_literals_refuse_what_is_not_plain_text(value):
    with pytest.raises((TypeError, ValueError)):
        DUCKDB.string(value)  # type: ignore[arg-type]


def test_timestamp_literals_are_naive_utc_per_dialect():
    naive = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
    assert DUCKDB.timestamp_literal(naive) == "TIMESTAMP '2024-05-06 07:08:09.123456'"
    assert SNOWFLAKE.timestamp_literal(naive) == "'2024-05-06 07:08:09.123456'::TIMESTAMP_NTZ"
    aware = dt.datetime(2024, 5, 6, 9, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert DUCKDB.timestamp_literal(aware) == DUCKDB.timestamp_literal(naive)
    with pytest.raises(TypeError):
        DUCKDB.timestamp_literal("2024-05-06")  # type: ignore[arg-type]


def test_date_literals_take_dates_only():
    assert DUCKDB.date_literal(dt.date(2024, 1, 2)) == "DATE '2024-01-02'"
    with pytest.raises(TypeError):
        SNOWFLAKE.date_literal(dt.datetime(2024, 1, 2))


def test_id_lists_take_salesforce_ids_only_and_do_not_echo_a_bad_one():
    ids = ["006000000000001AAA", "006000000000002"]
    assert DUCKDB.id_list(ids) == "'006000000000001AAA', '006000000000002'"
    assert DUCKDB.id_list([]) == ""
    for bad in ["006000000000001AA", "006000000000001AA'", "0060000000000é1AAA"]:
        with pytest.raises(ValueError) as info:
            DUCKDB.id_list([*ids, bad])
        assert bad not in str(info.value)


def test_quoting_and_array_membership_validate_their_names():
    assert DUCKDB.q("StageName") == '"stagename"' and SNOWFLAKE.q("StageName") == '"STAGENAME"'
    with pytest.raises(InvalidIdentifierError):
        SNOWFLAKE.array_contains('r."SET_FIELDS"', 'x"y')


def test_dialect_of_names_an_unknown_dialect():
    class Odd:
        dialect = "oracle"

    with pytest.raises(ValueError, match="oracle"):
        dialect_of(Odd())  # type: ignore[arg-type]
    assert dialect_of(DuckDBWarehouse(path=":memory:")) is DUCKDB

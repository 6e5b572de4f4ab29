"""bench.backfill's report helpers: per-size blocks of its docs section, the table
fingerprint the re-backfill check rests on."""

import duckdb

from bench.backfill import _fingerprint, merge_sizes


def test_a_size_replaces_its_own_block_and_keeps_the_others() -> None:
    existing = (
        "\nold text outside blocks\n\n### 10,000,000 Task rows\n\nten\n\n"
        "### 1,000,000 Task rows\n\nold one\n"
    )
    merged = merge_sizes(existing, "### 1,000,000 Task rows\n\nnew one\n")
    assert merged == "### 1,000,000 Task rows\n\nnew one\n\n### 10,000,000 Task rows\n\nten"


def test_the_fingerprint_sees_any_changed_value_but_not_row_order() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT i AS id, i * 2 AS v, NULL::VARCHAR AS s FROM range(1000) r(i)"
    )
    before = _fingerprint(con, "t")
    con.execute("CREATE TABLE u AS SELECT * FROM t ORDER BY id DESC")
    assert _fingerprint(con, "u") == before
    con.execute("UPDATE t SET s = 'x' WHERE id = 500")
    assert _fingerprint(con, "t") != before
    con.execute("UPDATE t SET s = NULL WHERE id = 500")
    assert _fingerprint(con, "t") == before

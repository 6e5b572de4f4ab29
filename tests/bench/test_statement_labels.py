"""The benchmarks' statement labels are stable across sizes, and tables are read right."""

from __future__ import annotations

from bench.statements import label, shape, tables


def test_statements_that_differ_only_in_ids_and_numbers_share_a_label():
    small = 'SELECT COUNT(*) FROM "sfdc"."opportunity" WHERE "id" IN (\'006000000000000001\')'
    large = (
        'SELECT  COUNT(*)\n FROM "sfdc"."opportunity" WHERE "id" IN '
        "('006000000000000002', '006000000000000003') LIMIT 20000"
    )
    assert label(small, "checks.touched_id_counts") == label(large, "checks.touched_id_counts")
    assert shape(small) == "SELECT FROM sfdc.opportunity"


def test_shape_names_the_target_of_writes_and_temp_tables():
    assert shape('INSERT INTO "SFDC_RAW"."OPPORTUNITY" SELECT * FROM x') == (
        "INSERT INTO sfdc_raw.opportunity"
    )
    assert shape('DELETE FROM "sfdc"."opportunity" WHERE "id" IN (1, 2)') == (
        "DELETE FROM sfdc.opportunity"
    )
    assert shape('CREATE OR REPLACE TEMPORARY TABLE "SFDC_TMP_IDS" ("ID" VARCHAR(18))') == (
        "CREATE OR REPLACE TEMPORARY TABLE sfdc_tmp_ids"
    )
    assert shape("BEGIN") == "BEGIN"
    assert shape('WITH a AS (SELECT 1) SELECT * FROM "sfdc_meta"."load_log", a') == (
        "SELECT FROM sfdc_meta.load_log"
    )


def test_an_anti_join_insert_reads_and_writes_its_target():
    sql = (
        'INSERT INTO "SFDC_RAW"."OPPORTUNITY" SELECT * FROM "SFDC_TMP_BATCH" b WHERE NOT EXISTS '
        '(SELECT 1 FROM "SFDC_RAW"."OPPORTUNITY" r WHERE r."CHANGE_ID" = b."CHANGE_ID" '
        "AND r.\"CHANGE_DATE\" BETWEEN '2025-01-01' AND '2025-01-02')"
    )
    found = tables(sql)
    assert found.writes == {"sfdc_raw.opportunity"}
    assert found.reads == {"sfdc_raw.opportunity", "sfdc_tmp_batch"}


def test_ctes_are_not_tables_and_control_statements_touch_nothing():
    sql = (
        'WITH touched AS (SELECT "ID" FROM "SFDC_TMP_IDS") DELETE FROM "SFDC"."OPPORTUNITY" '
        'WHERE "ID" IN (SELECT "ID" FROM touched)'
    )
    found = tables(sql)
    assert shape(sql) == "DELETE FROM sfdc.opportunity"
    assert found.writes == {"sfdc.opportunity"}
    assert found.reads == {"sfdc_tmp_ids"}
    assert tables("BEGIN").reads == frozenset() and tables("COMMIT").writes == frozenset()


def test_a_merge_writes_its_target_and_reads_its_source():
    sql = (
        'MERGE INTO "SFDC"."OPPORTUNITY" t USING "SFDC_TMP_CURRENT" s ON t."ID" = s."ID" '
        'WHEN MATCHED THEN UPDATE SET t."AMOUNT" = s."AMOUNT"'
    )
    assert tables(sql).writes == {"sfdc.opportunity"}
    assert tables(sql).reads == {"sfdc_tmp_current"}


def test_a_bulk_load_writes_its_temp_table():
    sql = "COPY INTO SFDC_TMP_BATCH FROM @write_pandas_stage"
    assert shape(sql) == "COPY INTO sfdc_tmp_batch"
    assert tables(sql).writes == {"sfdc_tmp_batch"}

"""The warehouse interface, identifier safety, and both implementations' plumbing."""

from __future__ import annotations

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from resources.duckdb_warehouse import DuckDBWarehouse
from resources.snowflake_warehouse import SnowflakeWarehouse
from sync_engine.warehouse import (
    InvalidIdentifierError,
    SchemaNames,
    Warehouse,
    quote_identifier,
    validate_identifier,
)


@pytest.mark.parametrize("name", ["Account", "My_Field__c", "sfdc_raw", "a1"])
def test_salesforce_and_snake_case_names_are_valid_identifiers(name):
    assert validate_identifier(name) == name


@pytest.mark.parametrize("name", ['x"; DROP TABLE t; --', "1abc", "a b", "a.b", "", "_x", "é"])
def test_unsafe_identifiers_are_rejected(name):
    with pytest.raises(InvalidIdentifierError):
        validate_identifier(name)


def test_quote_identifier_folds_case_per_dialect():
    assert quote_identifier("StageName", "duckdb") == '"stagename"'
    assert quote_identifier("StageName", "snowflake") == '"STAGENAME"'
    with pytest.raises(InvalidIdentifierError):
        quote_identifier('a"b', "snowflake")


def test_schema_names_are_validated():
    with pytest.raises(InvalidIdentifierError):
        SchemaNames(raw="raw; drop")


def test_both_warehouses_implement_the_interface():
    assert isinstance(DuckDBWarehouse(path=":memory:"), Warehouse)
    sf = SnowflakeWarehouse(account="a", user="u", password="p", database="D")
    assert isinstance(sf, Warehouse)


def test_duckdb_warehouse_reads_its_path_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WAREHOUSE_DUCKDB_PATH", str(tmp_path / "x.duckdb"))
    wh = DuckDBWarehouse.from_env()
    wh.ensure_schemas()
    assert (tmp_path / "x.duckdb").exists()
    wh.close()


def test_duckdb_bulk_load_matches_columns_by_name():
    wh = DuckDBWarehouse(path=":memory:")
    wh.load_temp_table("t_load", '"a" INTEGER, "b" VARCHAR', pa.table({"b": ["x"], "a": [1]}))
    assert wh.query("SELECT a, b FROM t_load") == [(1, "x")]


def test_duckdb_registers_arrow_in_place_over_an_earlier_temp_table_of_that_name():
    wh = DuckDBWarehouse(path=":memory:")
    wh.load_temp_table("t_batch", '"a" INTEGER', pa.table({"a": [1]}))
    assert wh.register_arrow("t_batch", pa.table({"a": [2, 3]}))
    assert wh.query("SELECT SUM(a) FROM t_batch") == [(5,)]
    assert wh.register_arrow("t_batch", pa.table({"a": [4]}))  # replaces the view
    assert wh.query("SELECT SUM(a) FROM t_batch") == [(4,)]
    wh.unregister_arrow("t_batch")
    wh.unregister_arrow("t_batch")  # nothing registered: a no-op
    wh.load_temp_table("t_batch", '"a" INTEGER', pa.table({"a": [7]}))
    assert wh.query("SELECT a FROM t_batch") == [(7,)]


def test_snowflake_cannot_register_arrow_so_the_engine_loads_a_temp_table():
    sf = SnowflakeWarehouse(account="a", user="u", password="p", database="D")
    assert sf.register_arrow("t_batch", pa.table({"a": [1]})) is False
    sf.unregister_arrow("t_batch")


def test_duckdb_rollback_undoes_the_transaction():
    wh = DuckDBWarehouse(path=":memory:")
    wh.execute("CREATE TABLE t (a INTEGER)")
    wh.begin()
    wh.execute("INSERT INTO t VALUES (1)")
    wh.rollback()
    assert wh.query("SELECT COUNT(*) FROM t") == [(0,)]
    wh.rollback()  # without an open transaction: a no-op


def test_snowflake_key_pair_auth_reads_the_key_file(tmp_path, monkeypatch):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "k.pem").write_bytes(pem)
    for name, value in {
        "SNOWFLAKE_ACCOUNT": "acme-xy123",
        "SNOWFLAKE_USER": "SFDC_SYNC",
        "SNOWFLAKE_DATABASE": "ANALYTICS",
        "SNOWFLAKE_PRIVATE_KEY_PATH": str(tmp_path / "k.pem"),
        "SNOWFLAKE_ROLE": "LOADER",
        "SNOWFLAKE_WAREHOUSE": "XS",
    }.items():
        monkeypatch.setenv(name, value)
    args = SnowflakeWarehouse.from_env().connect_args()
    assert args["private_key"].startswith(b"0\x82")  # DER
    assert "password" not in args and args["role"] == "LOADER"


def test_snowflake_without_credentials_fails_clearly():
    wh = SnowflakeWarehouse(account="a", user="u", database="D")
    with pytest.raises(ValueError, match="PRIVATE_KEY_PATH or SNOWFLAKE_PASSWORD"):
        wh.connect_args()


def test_duckdb_connection_waits_for_another_process_to_release_the_file(tmp_path):
    """Locally each Dagster run is a process; the second writer waits instead of failing."""
    import subprocess
    import sys
    import time

    from resources.duckdb_warehouse import DuckDBWarehouse

    path = tmp_path / "wh.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('held', flush=True); time.sleep(2); c.close()",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    wh = DuckDBWarehouse(path=str(path), lock_timeout_s=30)
    assert wh.query("SELECT 42") == [(42,)]
    assert time.monotonic() - started > 0.5  # it really waited for the holder
    wh.close()
    holder.wait(timeout=10)


def test_duckdb_connection_gives_up_after_its_lock_timeout(tmp_path):
    import subprocess
    import sys

    import duckdb

    from resources.duckdb_warehouse import DuckDBWarehouse

    path = tmp_path / "wh.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('held', flush=True); time.sleep(10)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(duckdb.IOException, match=r"(?i)lock"):
            DuckDBWarehouse(path=str(path), lock_timeout_s=0.5).query("SELECT 1")
    finally:
        holder.kill()
        holder.wait()

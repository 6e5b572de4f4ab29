"""Snowflake session settings: statement and lock timeouts, and no CREATE SCHEMA under
least privilege (issue 13). fakesnow runs the connector for real; it accepts session
parameters without enforcing them, so what Snowflake does with them (a statement
cancelled after N s, a lock wait failing after N s) is not verified here: the tests pin
the parameters the connector is given and the schema behaviour fakesnow can run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import fakesnow
import pytest

from resources import snowflake_setup
from resources.snowflake_warehouse import (
    DEFAULT_LOCK_TIMEOUT_SECONDS,
    DEFAULT_STATEMENT_TIMEOUT_SECONDS,
    SchemaSetupError,
    SnowflakeWarehouse,
)
from sync_engine import registry
from sync_engine.spec import ObjectSpec

_numbers = itertools.count()
SPEC = ObjectSpec.of("Account", [("Id", "id"), ("Name", "string"), ("SystemModstamp", "datetime")])


def _wh(**kw: object) -> SnowflakeWarehouse:
    return SnowflakeWarehouse(
        account="fake", user="fake", password="snow", database=f"SESS{next(_numbers)}", **kw
    )


@pytest.fixture
def fake_snowflake() -> Iterator[None]:
    with fakesnow.patch():
        yield


def test_every_session_gets_statement_and_lock_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SNOWFLAKE_STATEMENT_TIMEOUT_SECONDS", "SNOWFLAKE_LOCK_TIMEOUT_SECONDS"):
        monkeypatch.delenv(var, raising=False)
    params = _wh().connect_args()["session_parameters"]
    assert params == {
        "QUERY_TAG": "sfdc-sync",
        "TIMEZONE": "UTC",
        "STATEMENT_TIMEOUT_IN_SECONDS": DEFAULT_STATEMENT_TIMEOUT_SECONDS,
        "LOCK_TIMEOUT": DEFAULT_LOCK_TIMEOUT_SECONDS,
    }
    # Below Snowflake's defaults (2 days, 12 h): the point of setting them.
    assert DEFAULT_STATEMENT_TIMEOUT_SECONDS < 172800 and DEFAULT_LOCK_TIMEOUT_SECONDS < 43200


def test_timeouts_come_from_the_environment_or_the_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNOWFLAKE_STATEMENT_TIMEOUT_SECONDS", "900")
    monkeypatch.setenv("SNOWFLAKE_LOCK_TIMEOUT_SECONDS", "0")
    params = _wh().connect_args()["session_parameters"]
    assert (params["STATEMENT_TIMEOUT_IN_SECONDS"], params["LOCK_TIMEOUT"]) == (900, 0)
    params = _wh(lock_timeout_seconds=30).connect_args()["session_parameters"]
    assert params["LOCK_TIMEOUT"] == 30


@pytest.mark.parametrize("value", ["ten", "-1", "1.5"])
def test_a_bad_timeout_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SNOWFLAKE_LOCK_TIMEOUT_SECONDS", value)
    with pytest.raises(ValueError, match="SNOWFLAKE_LOCK_TIMEOUT_SECONDS"):
        _wh().connect_args()


def test_bad_create_schemas_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNOWFLAKE_CREATE_SCHEMAS", "maybe")
    with pytest.raises(ValueError, match="SNOWFLAKE_CREATE_SCHEMAS"):
        _wh().may_create_schemas()


def test_session_parameters_reach_the_connector(
    fake_snowflake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snowflake.connector

    # fakesnow drops session parameters, so record what connect() is called with and
    # pass the call on to it.
    seen: list[dict] = []
    real_connect = snowflake.connector.connect

    def spy(**kwargs: object):  # type: ignore[no-untyped-def]
        seen.append(dict(kwargs))
        return real_connect(**kwargs)

    monkeypatch.setattr(snowflake.connector, "connect", spy)
    wh = _wh(statement_timeout_seconds=120, lock_timeout_seconds=45)
    assert wh.query("SELECT 1") == [(1,)]
    (kwargs,) = seen
    assert kwargs["session_parameters"]["STATEMENT_TIMEOUT_IN_SECONDS"] == 120
    assert kwargs["session_parameters"]["LOCK_TIMEOUT"] == 45
    wh.close()


def test_without_create_schemas_a_missing_schema_is_an_error_naming_the_setup_command(
    fake_snowflake: None,
) -> None:
    wh = _wh(create_schemas=False)
    with pytest.raises(SchemaSetupError, match=r"resources\.snowflake_setup schemas") as err:
        registry.sync_schema(wh, SPEC)
    assert "sfdc_raw" in str(err.value)
    wh.close()


def test_after_the_setup_command_runs_create_no_schema_and_sync(fake_snowflake: None) -> None:
    admin = _wh(create_schemas=True)
    assert snowflake_setup.schemas(admin)["schemas"][-1] == "sfdc_meta"
    admin.close()

    loader = SnowflakeWarehouse(**{**admin.model_dump(), "create_schemas": False})
    issued: list[str] = []
    con = loader.connection
    real_cursor = con.cursor

    def recording_cursor(*a: object, **kw: object):  # type: ignore[no-untyped-def]
        cur = real_cursor(*a, **kw)
        real_execute = cur.execute

        def execute(sql: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            issued.append(sql)
            return real_execute(sql, *args, **kwargs)

        cur.execute = execute
        return cur

    con.cursor = recording_cursor
    registry.sync_schema(loader, SPEC)
    from sync_engine import erasure, masking

    erasure.ensure_tables(loader)  # issues CREATE SCHEMA itself: the adapter swallows it
    masking.ensure_ledger(loader)
    assert loader.query("SELECT COUNT(*) FROM sfdc_raw.account") == [(0,)]
    assert [s for s in issued if "CREATE SCHEMA" in s.upper()] == []
    # The check ran once per session, not once per statement.
    assert sum("information_schema.schemata" in s for s in issued) <= 1
    loader.close()


def test_with_create_schemas_a_fresh_database_gets_its_schemas_on_first_use(
    fake_snowflake: None,
) -> None:
    wh = _wh(create_schemas=True)
    registry.sync_schema(wh, SPEC)
    assert wh.query("SELECT COUNT(*) FROM sfdc.account") == [(0,)]
    wh.close()

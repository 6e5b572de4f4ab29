"""`live_count_matches_salesforce`: warehouse live rows against Salesforce `SELECT COUNT()`.

Real emulator (REST `COUNT()`), real DuckDB, the real check executed by Dagster.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pytest

from sfdc_assets.keys import RECONCILE, asset_key
from tests.sfdc_assets.harness import QUIET, Platform, start_platform

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from start_platform(tmp_path_factory.mktemp("reconcile"))


def _reconcile(platform: Platform, name: str) -> dg.AssetCheckEvaluation:
    key = dg.AssetCheckKey(asset_key("current", name), RECONCILE)
    result = dg.materialize(
        platform.assets,
        selection=dg.AssetSelection.checks(key),
        run_config=QUIET,
        instance=platform.instance,
        resources=platform.resources,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_an_object_never_synced_is_not_compared(platform: Platform) -> None:
    evaluation = _reconcile(platform, "Account")
    assert evaluation.passed
    assert evaluation.metadata["compared"].value is False


def test_equal_counts_pass_and_an_unsynced_delete_is_reported(platform: Platform) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert platform.backfill(["Account"], platform.sync.settings.partitions_start, today).success
    evaluation = _reconcile(platform, "Account")
    assert evaluation.passed
    live = evaluation.metadata["salesforce_live"].value
    assert live > 0 and evaluation.metadata["warehouse_live"].value == live

    platform.server.traffic.delete("Account", 2)  # not synced: the warehouse drifted
    evaluation = _reconcile(platform, "Account")
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["difference"].value == 2
    assert evaluation.metadata["salesforce_live"].value == live - 2


def test_through_fakesnow_the_check_finds_the_upper_case_table_and_compares() -> None:
    # Regression (issue 10): Snowflake's information_schema holds the upper-case names the
    # engine creates; the check compared lower-case names, found no table and passed as
    # "not synced, not compared" on every production run.
    import warnings

    import fakesnow

    from resources.snowflake_warehouse import SnowflakeWarehouse
    from sfdc_assets.checks import live_count_result
    from sync_engine import changes as ch
    from sync_engine import registry
    from sync_engine.apply import apply_batch
    from sync_engine.spec import ObjectSpec

    spec = ObjectSpec.of("Opportunity", [("Name", "string")])
    when = dt.datetime(2024, 5, 1, 12)
    rows = [
        ch.snapshot_change(
            spec,
            record_id=f"006{i:012d}AAA",
            values={"Name": f"deal {i}"},
            system_modstamp=when,
            read_started_at=when,
            is_deleted=i == 3,
        )
        for i in range(1, 4)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with fakesnow.patch():
            wh = SnowflakeWarehouse(
                account="fake", user="fake", password="snow", database="LIVECOUNT"
            )
            registry.sync_schema(wh, spec)
            apply_batch(wh, spec, ch.build_batch(spec, rows))
            asked = []
            equal = live_count_result(
                wh, "Opportunity", "opportunity", lambda: asked.append(1) or 2
            )
            drifted = live_count_result(wh, "Opportunity", "opportunity", lambda: 3)
            missing = live_count_result(wh, "Lead", "lead", lambda: 1 / 0)
            wh.close()
    assert asked == [1]
    assert equal.passed and equal.metadata["compared"].value is True
    assert equal.metadata["warehouse_live"].value == 2
    assert not drifted.passed and drifted.metadata["difference"].value == -1
    assert missing.passed and missing.metadata["compared"].value is False

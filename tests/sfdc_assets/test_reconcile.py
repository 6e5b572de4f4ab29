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

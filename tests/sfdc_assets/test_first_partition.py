"""The first partition's window reaches back before `partitions_start`.

A record last modified before the partitions begin belongs to no day of them, yet a
backfill of the whole range must bring it: the real emulator's org holds two years of
history, the partitions here start 100 days ago.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from sfdc_assets.assets import build_assets
from tests.sfdc_assets.harness import Platform, differences, start_platform

pytestmark = pytest.mark.slow
RECENT_DAYS = 100


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    for base in start_platform(tmp_path_factory.mktemp("first_partition")):
        start = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=RECENT_DAYS)).isoformat()
        settings = base.sync.settings.model_copy(update={"partitions_start": start})
        sync = base.sync.model_copy(update={"settings": settings})
        yield dataclasses.replace(base, sync=sync, assets=build_assets(sync))


def test_a_whole_range_backfill_reads_records_older_than_the_partitions(
    platform: Platform, tmp_path: Path
) -> None:
    start = platform.sync.settings.partitions_start
    truth = pl.from_arrow(platform.store.truth("Account"))
    assert isinstance(truth, pl.DataFrame)
    older = truth.filter(pl.col("SystemModstamp") < dt.datetime.fromisoformat(start))
    assert older.height > 0  # the org has records the partitions do not cover

    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert platform.backfill(["Account"], start, today).success
    assert differences(platform, "Account") == []


def test_a_later_partition_reads_only_its_own_day(platform: Platform) -> None:
    # Re-reading a middle day brings nothing older: the widening is for the first only.
    day = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=RECENT_DAYS // 2)).isoformat()
    result = platform.materialize(["Account"], partition_key=day)
    assert result.success
    raw = next(m for m in result.get_asset_materialization_events() if m.asset_key.path[1] == "raw")
    assert raw.materialization.metadata["window_start"].value.startswith(day)

"""Records that CDC changes before a whole image of them was read are re-read by REST.

A CDC UPDATE carries only the changed fields. With no backfill at all (the extreme of a
record whose last change fell in a backfill's read lag), the sensor's micro-batch run must
still leave every field of the changed records equal to Salesforce. The first test turns
the sensor's re-read after CDC off for Opportunity, so the raw step's own lookup and
re-read is what makes the records whole; the second keeps it on, and then the raw step
has nothing left to look up.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import polars as pl
import pytest

from sensors.cdc import build_cdc_sensor
from sfdc_assets.objects import SyncConfig
from tests.sfdc_assets.harness import Platform, start_platform

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from start_platform(tmp_path_factory.mktemp("incomplete"))


def _without_reread(sync: SyncConfig) -> SyncConfig:
    """The same objects, Opportunity without the sensor's re-read after CDC."""
    objects = tuple(
        o.model_copy(update={"reread_after_cdc": False}) if o.name == "Opportunity" else o
        for o in sync.objects
    )
    return sync.model_copy(update={"objects": objects})


def _tick(
    platform: Platform, cursor: str | None, *, reread: bool = False
) -> tuple[str | None, list[dg.RunRequest]]:
    sync = platform.sync if reread else _without_reread(platform.sync)
    sensor = build_cdc_sensor(sync.channel_groups["revenue"], sync)
    ctx = dg.build_sensor_context(
        instance=platform.instance,
        cursor=cursor,
        definitions=dg.Definitions(
            assets=platform.assets, sensors=[sensor], resources=platform.resources
        ),
        resources={k: platform.resources[k] for k in ("salesforce", "landing")},
    )
    data = sensor.evaluate_tick(ctx)
    return data.cursor, list(data.run_requests)


def _reread(result: dg.ExecuteInProcessResult) -> int:
    (raw,) = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path[1:] == ["raw", "opportunity"]
    ]
    return int(raw.materialization.metadata["records_reread_whole"].value)


def _updated(platform: Platform, count: int) -> list[str]:
    return sorted(platform.server.traffic.update("Opportunity", count).ids)


def test_a_record_changed_before_it_was_ever_read_whole_is_applied_whole(
    platform: Platform,
) -> None:
    cursor, _ = _tick(platform, None)  # position the cursor; nothing synced yet
    ids = _updated(platform, 4)
    assert ids

    cursor, requests = _tick(platform, cursor)
    results = [platform.execute(r) for r in requests]
    assert all(r.success for r in results)
    assert sum(_reread(r) for r in results if _has_opportunity(r)) == len(ids)

    truth = pl.from_arrow(platform.store.truth("Opportunity"))
    assert isinstance(truth, pl.DataFrame)
    current = platform.table("sfdc", "Opportunity")
    for rid in ids:
        want = truth.filter(pl.col("Id") == rid).row(0, named=True)
        got = current.filter(pl.col("id") == rid).row(0, named=True)
        # Not only the changed fields: owner, name, stage... all of it.
        for field in ("OwnerId", "Name", "StageName", "AccountId", "CloseDate"):
            assert got[field.lower()] == want[field], (rid, field)

    # Known whole now: the next change of the same records costs no REST call.
    from sfdc_emulator.store import Mutation

    platform.store.commit(
        [Mutation("update", "Opportunity", rid, {"Description": "again"}) for rid in ids]
    )
    _, requests = _tick(platform, cursor)
    results = [r for r in map(platform.execute, requests) if _has_opportunity(r)]
    assert results and all(r.success for r in results)
    assert sum(_reread(r) for r in results) == 0


def test_records_the_sensor_re_read_after_cdc_are_not_looked_up_or_read_again(
    platform: Platform,
) -> None:
    # Regression: with re-read after CDC (the default) the run carried every changed record
    # whole, yet the raw step looked each up in raw (a read of nearly all of raw per CDC
    # run, docs/performance.md) and re-read it by REST a second time.
    cursor, _ = _tick(platform, None, reread=True)
    ids = _updated(platform, 4)
    assert ids

    _, requests = _tick(platform, cursor, reread=True)
    results = [r for r in map(platform.execute, requests) if _has_opportunity(r)]
    assert results and all(r.success for r in results)
    assert sum(_reread(r) for r in results) == 0

    truth = pl.from_arrow(platform.store.truth("Opportunity"))
    assert isinstance(truth, pl.DataFrame)
    current = platform.table("sfdc", "Opportunity")
    for rid in ids:
        want = truth.filter(pl.col("Id") == rid).row(0, named=True)
        got = current.filter(pl.col("id") == rid).row(0, named=True)
        for field in ("OwnerId", "Name", "StageName", "AccountId", "CloseDate"):
            assert got[field.lower()] == want[field], (rid, field)


def _has_opportunity(result: dg.ExecuteInProcessResult) -> bool:
    return any(
        m.asset_key.path[1:] == ["raw", "opportunity"]
        for m in result.get_asset_materialization_events()
    )

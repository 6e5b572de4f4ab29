"""End to end: real emulator, real DuckDB, real Dagster instance, the real assets and sensors.

The tests run in file order on one org: initial backfill of all eight objects, a 30-day
re-backfill, live traffic drained by the CDC sensors, a 30-day re-backfill again, a field
added in Salesforce and filled, then a corrupt batch.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import polars as pl
import pytest

from resources.landing import BatchRef
from sensors.reconcile import reconcile_request
from sfdc_assets.checks import SCOPE_TOUCHED, SCOPE_WHOLE
from sfdc_assets.keys import CURRENT_ID_UNIQUE, RAW_VALID, asset_key
from tests.sfdc_assets.harness import (
    NOT_IN_CDC,
    OBJECTS,
    Platform,
    differences,
    drain_cdc,
    start_platform,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from start_platform(tmp_path_factory.mktemp("platform"))


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def test_initial_backfill_of_all_eight_objects_equals_salesforce(platform: Platform) -> None:
    start = platform.sync.settings.partitions_start
    result = platform.backfill(OBJECTS, start, _today())
    assert result.success
    for name in OBJECTS:
        assert differences(platform, name) == [], name
    checks = {
        (c.asset_key.path[-1], c.check_name): c.passed for c in result.get_asset_check_evaluations()
    }
    assert all(checks.values()) and len(checks) >= 3 * len(OBJECTS)
    # A bootstrap touches every record: one whole-table count, not one id list per part.
    scopes = {
        c.asset_key.path[-1]: c.metadata["scope"].value
        for c in result.get_asset_check_evaluations()
        if c.check_name == CURRENT_ID_UNIQUE
    }
    assert scopes == {name.lower(): SCOPE_WHOLE for name in OBJECTS}
    # One Bulk job per object for the whole range (single-run backfill policy).
    raw = [m for m in result.get_asset_materialization_events() if m.asset_key.path[1] == "raw"]
    jobs = {m.asset_key.path[-1]: m.materialization.metadata["bulk_jobs"].value for m in raw}
    assert set(jobs.values()) == {1}


def test_re_backfill_of_a_30_day_range_after_the_initial_backfill_changes_nothing(
    platform: Platform,
) -> None:
    """Right after the initial backfill: every snapshot re-read is one already applied.
    The same holds after CDC traffic (the test after the live-traffic one)."""
    before = {n: _state(platform, n) for n in OBJECTS}
    today = dt.datetime.now(dt.UTC).date()
    start = (today - dt.timedelta(days=29)).isoformat()
    result = platform.backfill(OBJECTS, start, today.isoformat())
    assert result.success
    for name in OBJECTS:
        after = _state(platform, name)
        assert after[0].equals(before[name][0]), name
        assert after[1].equals(before[name][1]), name
        assert differences(platform, name) == [], name


def test_live_traffic_drained_by_the_sensors_keeps_current_equal_to_salesforce(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sfdc_emulator.store as store_module
    from sfdc_emulator.traffic import Mix

    drain_cdc(platform)  # bootstrap the cursors (EARLIEST)
    traffic = platform.server.traffic
    # Purges (hard deletes without an event) are found by the ID-set diff, not CDC.
    traffic.mix = Mix(
        ops={"create": 0.25, "update": 0.5, "delete": 0.15, "undelete": 0.1},
        automation_share=0.5,
        automation_delay=(0.5, 1.5),
    )
    platform.store.faults.delay_events(0.3, 1.5)  # out-of-order delivery
    traffic.start()  # rate 0: the thread only runs the late automation updates
    for _ in range(60):
        traffic.step()
    traffic.update("Opportunity", 5)
    traffic.delete("Contact", 3)
    traffic.undelete("Contact", 2)
    traffic.gap("Account", 2)  # GAP_UPDATE: repaired by a REST re-read
    monkeypatch.setattr(store_module, "OVERFLOW_LIMIT", 3)
    traffic.overflow("Lead", 5)  # GAP_OVERFLOW: repaired by a targeted re-backfill
    time.sleep(3)
    traffic.stop()
    platform.store.faults.reset()
    platform.store.flush_delayed()

    requests = drain_cdc(platform)
    sources = {r.tags.get("sfdc/source") for r in requests}
    assert {"cdc", "rebackfill"} <= sources
    # The gap repair (and the re-read of every changed record) rides in the CDC runs.
    landed = [
        b
        for r in requests
        for op in r.run_config.get("ops", {}).values()
        for b in op["config"].get("landing_batches", [])
    ]
    assert any(b.startswith("cdc/Account/") and "/rest-" in b for b in landed)
    assert len({r.run_key for r in requests}) == len(requests)
    # A parent's change alters a cross-object formula of its children with no event on
    # them (Opportunity.Account_Rating__c): the hourly formula refresh brings it.
    refresh = reconcile_request("Opportunity", "formulas", _today(), int(time.time() * 1000))
    assert platform.execute(refresh).success
    # A deleted Account takes its Contacts, Opportunities and their line items with it,
    # with an event for the Account only: the 15-minute `recent` reconciliation finds them
    # (the polled Task and Event see it on their next poll).
    for name in ("Contact", "Opportunity", "OpportunityLineItem"):
        recent = reconcile_request(name, "recent", _today(), int(time.time() * 1000))
        assert platform.execute(recent).success, name
    for name in OBJECTS:
        assert differences(platform, name) == [], name


def test_re_backfill_of_a_30_day_range_after_live_traffic_changes_nothing(
    platform: Platform,
) -> None:
    """Regression: this re-backfill used to add two scd2 versions to OpportunityLineItem.
    Automation had written a value a line already held: SystemModstamp moved, no field
    changed, so Salesforce published no event, and the re-read row differed from the
    CDC-built state only in SystemModstamp. A stamp-only difference is not a version
    (sync_engine.spec.UNVERSIONED_COLUMNS); current takes the newer stamp."""
    drop = ("_synced_at", "_version", "_source")
    before = {
        n: (platform.table("sfdc", n), platform.table("sfdc_history", n).drop("_synced_at"))
        for n in OBJECTS
    }
    today = dt.datetime.now(dt.UTC).date()
    start = (today - dt.timedelta(days=29)).isoformat()
    result = platform.backfill(OBJECTS, start, today.isoformat())
    assert result.success
    for name in OBJECTS:
        history = platform.table("sfdc_history", name).drop("_synced_at")
        assert history.sort("id", "valid_from").equals(before[name][1].sort("id", "valid_from")), (
            name
        )
        current = platform.table("sfdc", name)
        # Only what CDC cannot carry may move in current: the stamp, now equal to truth.
        keep = [c for c in current.columns if c not in (*drop, *NOT_IN_CDC)]
        assert current.select(keep).sort("id").equals(before[name][0].select(keep).sort("id")), name
        assert differences(platform, name) == [], name


def test_a_new_field_is_filled_for_existing_rows_and_a_later_cdc_change_still_wins(
    platform: Platform,
) -> None:
    """DESIGN §5: a field added in Salesforce becomes a column and a column-only Bulk read
    fills it for the rows already synced, without opening scd2 versions."""
    from sfdc_emulator.describe import FieldSpec as EmulatorField
    from sfdc_emulator.store import Mutation

    name, field, column = "Account", "Segment__c", "segment__c"
    store = platform.store
    store.schema.add_field(name, EmulatorField(field, "string", "Segment", length=40))
    live = pl.from_arrow(store.truth(name)).filter(~pl.col("IsDeleted"))["Id"].to_list()
    # A flow sets it everywhere: SystemModstamp moves to today, LastModifiedDate does not.
    values = {rid: f"Segment {i % 3}" for i, rid in enumerate(live)}
    store.commit([Mutation("update", name, rid, {field: v}) for rid, v in values.items()],
                 automation=True)  # fmt: skip
    history_before = platform.table("sfdc_history", name).drop("_synced_at")

    # The oldest day: its Bulk window holds none of today's updates, so only the fill
    # can bring the values.
    result = platform.materialize([name], partition_key=platform.sync.settings.partitions_start)
    assert result.success
    raw = next(m for m in result.get_asset_materialization_events() if m.asset_key.path[1] == "raw")
    assert raw.materialization.metadata["schema_filled_fields"].value == field
    current = platform.table("sfdc", name)
    assert dict(zip(current["id"], current[column], strict=True)) == {
        rid: values.get(rid) for rid in current["id"]
    }
    assert differences(platform, name, ignore=NOT_IN_CDC) == []
    history = platform.table("sfdc_history", name).drop("_synced_at")
    assert (
        history.drop(column)
        .sort("id", "valid_from")
        .equals(history_before.sort("id", "valid_from"))
    )
    assert dict(zip(history["id"], history[column], strict=True)) == {
        rid: values.get(rid) for rid in history["id"]
    }  # every version: the fill is the field's value until a real change sets it

    changed = live[0]
    store.commit([Mutation("update", name, changed, {field: "Segment X"})])
    drain_cdc(platform)
    assert platform.table("sfdc", name).filter(pl.col("id") == changed)[column].item() == (
        "Segment X"
    )
    assert differences(platform, name, ignore=NOT_IN_CDC) == []
    versions = platform.table("sfdc_history", name).filter(pl.col("id") == changed)
    assert versions.sort("valid_from")[column].to_list()[-2:] == [values[changed], "Segment X"]


def test_scd2_holds_every_version_of_the_raw_changes(platform: Platform) -> None:
    from sfdc_assets.describe import registry_spec
    from sync_engine.reference_fold import fold

    wh = platform.warehouse()
    try:
        for name in ("Opportunity", "Contact", "Account"):
            spec = registry_spec(wh, name)
            raw = wh.query_arrow(f'SELECT * FROM "sfdc_raw"."{name.lower()}"').to_pylist()
            expected = fold(spec, raw).history
            got = wh.query_arrow(f'SELECT * FROM "sfdc_history"."{name.lower()}"').to_pylist()
            key = lambda r: (r["id"], r["valid_from"])  # noqa: E731
            assert len(got) == len(expected)
            cols = ("id", "valid_from", "valid_to", "is_current", "is_deleted", *spec.columns)
            assert sorted(({c: r[c] for c in cols} for r in got), key=key) == sorted(
                ({c: r[c] for c in cols} for r in expected), key=key
            )
            assert len(got) > len({r["id"] for r in got})  # some records have history
    finally:
        wh.close()


def _state(platform: Platform, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    # A re-read refreshes SystemModstamp, which CDC never carries (NOT_IN_CDC).
    drop = ("_synced_at", "_version", "_source", *NOT_IN_CDC)
    current = platform.table("sfdc", name).drop(drop)
    history = platform.table("sfdc_history", name).drop(drop)
    return current.sort("id"), history.sort("id", "valid_from")


def test_a_corrupt_batch_is_stopped_by_the_blocking_check_and_nothing_downstream_moves(
    platform: Platform,
) -> None:
    name = "Opportunity"
    landing = platform.resources["landing"].store()
    good = platform.table("sfdc_raw", name).head(10)
    corrupt = good.with_columns(
        pl.Series("record_id", ["not-an-id"] * 6 + good["record_id"][6:].to_list()),
        pl.Series("change_id", [f"corrupt{i}" for i in range(10)]),
    ).drop([c for c in good.columns if c in ("batch_id", "ingested_at")])
    day = dt.datetime.now(dt.UTC).date()
    ref = BatchRef("cdc", name, day, "cdc-corrupt-0000-0001")
    landing.write_batch(ref, corrupt, {"source": "cdc"})
    before = _state(platform, name)
    raw_before = platform.table("sfdc_raw", name).height

    result = platform.materialize(
        [name],
        partition_key=day.isoformat(),
        raw_config={"landing_batches": [f"cdc/{name}/{day.isoformat()}/{ref.batch_id}"]},
    )
    assert not result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks[RAW_VALID] is False
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert asset_key("current", name) not in materialized
    assert asset_key("scd2", name) not in materialized
    after = _state(platform, name)
    assert after[0].equals(before[0]) and after[1].equals(before[1])
    assert platform.table("sfdc_raw", name).height == raw_before
    quarantined = platform.table("sfdc_quarantine", name)
    reasons = quarantined.filter(pl.col("batch_id").str.starts_with("cdc-corrupt"))["reason"]
    assert reasons.len() == 10
    assert reasons.str.contains("record_id").sum() == 6
    assert reasons.str.contains("batch rejected").sum() == 4


def test_the_run_check_reads_the_same_ids_from_memory_or_from_the_parts(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`current_id_unique` counts a run's touched ids once its parts are applied: kept in
    memory up to `KEEP_IDS_MAX`, re-read from the validated parts past it."""
    import sfdc_assets.checks
    import sfdc_assets.current

    # Scoped whatever the share of the table (the tiny org's day can be a tenth of it).
    monkeypatch.setattr(sfdc_assets.checks, "WHOLE_TABLE_CHECK_SHARE", 2.0)
    day = dt.datetime.now(dt.UTC).date().isoformat()
    counted = []
    for keep in (sfdc_assets.current.KEEP_IDS_MAX, 0):
        monkeypatch.setattr(sfdc_assets.current, "KEEP_IDS_MAX", keep)
        result = platform.materialize(["Opportunity"], partition_key=day)
        assert result.success
        (check,) = [
            c for c in result.get_asset_check_evaluations() if c.check_name == CURRENT_ID_UNIQUE
        ]
        assert check.passed and check.metadata["scope"].value == SCOPE_TOUCHED
        counted.append(check.metadata["rows_checked"].value)
    assert counted[0] == counted[1] > 0

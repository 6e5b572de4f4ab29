"""`sensors.run_requests.requests_for`: a tick's landed micro-batches -> one run per change day.

Pure: real `Manifest`s (no files behind them), the real partitions definition and the real
assets' op names; no emulator, no instance.
"""

from __future__ import annotations

import datetime as dt
import random

import dagster as dg
from hypothesis import given, settings
from hypothesis import strategies as st

from resources.landing import Manifest
from sensors.run_requests import requests_for
from sfdc_assets.assets import build_assets
from sfdc_assets.keys import (
    CDC_LAG,
    CURRENT_ID_UNIQUE,
    GROUP_TAG,
    LAYERS,
    OBJECTS_TAG,
    PRIORITY_TAG,
    RAW_VALID,
    asset_key,
    run_checks,
)
from sfdc_assets.objects import parse_config
from sfdc_assets.partitions import daily_partitions

TODAY = dt.datetime.now(dt.UTC).date()
YESTERDAY = TODAY - dt.timedelta(days=1)
PARTITIONS = daily_partitions((TODAY - dt.timedelta(days=10)).isoformat())
REVENUE = ("Account", "Opportunity", "OpportunityLineItem")


def manifest(
    name: str, day: dt.date, batch_id: str, source: str | None = "cdc", kind: str = "cdc"
) -> Manifest:
    """A committed micro-batch as `land_cdc` / `land_rest_snapshots` return it."""
    meta = {"topic": "/data/RevenueChannel__chn"}
    if source is not None:
        meta["source"] = source
    return Manifest(kind, name, day.isoformat(), batch_id, (), 1, 0, meta)


def ref(m: Manifest) -> str:
    return f"{m.kind}/{m.object}/{m.day}/{m.batch_id}"


def batches_of(request: dg.RunRequest) -> dict[str, list[str]]:
    """Raw op name -> the landing batches the request's run config gives it."""
    ops = (request.run_config or {})["ops"]
    return {op: cfg["config"]["landing_batches"] for op, cfg in ops.items()}


def test_one_tick_on_one_day_is_one_run_with_every_object_and_its_batches() -> None:
    tick = [
        manifest("Opportunity", TODAY, "cdc-0a-0f"),
        manifest("Account", TODAY, "cdc-01-09"),
        manifest("Opportunity", TODAY, "cdc-10-1f"),
    ]
    (request,) = requests_for(tick, "revenue", PARTITIONS)

    assert request.partition_key == TODAY.isoformat()
    assert set(request.asset_selection or []) == {
        asset_key(layer, n) for n in ("Account", "Opportunity") for layer in LAYERS
    }
    assert set(request.asset_check_keys or []) == {
        dg.AssetCheckKey(asset_key("raw", "Account"), RAW_VALID),
        dg.AssetCheckKey(asset_key("current", "Account"), CURRENT_ID_UNIQUE),
        dg.AssetCheckKey(asset_key("current", "Account"), CDC_LAG),
        dg.AssetCheckKey(asset_key("raw", "Opportunity"), RAW_VALID),
        dg.AssetCheckKey(asset_key("current", "Opportunity"), CURRENT_ID_UNIQUE),
        dg.AssetCheckKey(asset_key("current", "Opportunity"), CDC_LAG),
    }
    assert batches_of(request) == {
        "salesforce__raw__account": [f"cdc/Account/{TODAY}/cdc-01-09"],
        "salesforce__raw__opportunity": [
            f"cdc/Opportunity/{TODAY}/cdc-0a-0f",
            f"cdc/Opportunity/{TODAY}/cdc-10-1f",
        ],
    }
    assert request.tags[GROUP_TAG] == "revenue"
    assert request.tags[OBJECTS_TAG] == "Account,Opportunity"
    assert request.tags["sfdc/source"] == "cdc"
    # Queued behind nothing: a micro-batch run leaves the run queue first.
    assert int(request.tags[PRIORITY_TAG]) > 0
    assert request.run_key and request.run_key.startswith(f"cdc:revenue:{TODAY}:")


def test_the_raw_op_config_names_the_raw_assets_real_op() -> None:
    """A wrong op name in run config fails the launched run, not the sensor: pin it."""
    sync = parse_config(
        "channel_groups: {revenue: {channel: /data/RevenueChannel__chn}}\n"
        "objects: [{name: Account, group: revenue}, {name: OpportunityLineItem, group: revenue}]"
    )
    raw_ops = {
        a.op.name
        for a in build_assets(sync)
        if isinstance(a, dg.AssetsDefinition) and any(k.path[1] == "raw" for k in a.keys)
    }
    tick = [manifest("Account", TODAY, "b1"), manifest("OpportunityLineItem", TODAY, "b2")]
    (request,) = requests_for(tick, "revenue", PARTITIONS)
    assert set(batches_of(request)) == raw_ops


def test_batches_of_different_days_are_separate_runs_keyed_by_their_day() -> None:
    tick = [
        manifest("Opportunity", YESTERDAY, "late-1"),
        manifest("Opportunity", TODAY, "now-1"),
        manifest("Account", TODAY, "now-2"),
    ]
    requests = requests_for(tick, "revenue", PARTITIONS)

    by_day = {r.partition_key: r for r in requests}
    assert set(by_day) == {YESTERDAY.isoformat(), TODAY.isoformat()}
    assert batches_of(by_day[YESTERDAY.isoformat()]) == {
        "salesforce__raw__opportunity": [f"cdc/Opportunity/{YESTERDAY}/late-1"]
    }
    assert set(batches_of(by_day[TODAY.isoformat()])) == {
        "salesforce__raw__account",
        "salesforce__raw__opportunity",
    }
    assert len({r.run_key for r in requests}) == 2


def test_rest_re_reads_join_the_cdc_run_of_their_day() -> None:
    # Issue 10: every drain now re-reads the records its events changed; as runs of their
    # own (the former behaviour), the re-reads would double the group's run queue.
    tick = [
        manifest("Account", TODAY, "cdc-01-02"),
        manifest("Account", TODAY, "rest-revenue-01-02", source="rest"),
    ]
    (request,) = requests_for(tick, "revenue", PARTITIONS)

    assert request.tags["sfdc/source"] == "cdc"
    assert batches_of(request) == {
        "salesforce__raw__account": [
            f"cdc/Account/{TODAY}/cdc-01-02",
            f"cdc/Account/{TODAY}/rest-revenue-01-02",
        ]
    }


def test_a_tick_of_rest_repairs_only_is_a_rest_run() -> None:
    (request,) = requests_for(
        [manifest("Account", TODAY, "rest-revenue-01-02", source="rest")], "revenue", PARTITIONS
    )
    assert request.tags["sfdc/source"] == "rest"


def test_a_manifest_without_a_source_counts_as_cdc() -> None:
    (request,) = requests_for([manifest("Account", TODAY, "b", source=None)], "revenue", PARTITIONS)
    assert request.tags["sfdc/source"] == "cdc"


def test_the_run_key_does_not_depend_on_manifest_order() -> None:
    tick = [
        manifest(name, day, f"b{i}")
        for i, (name, day) in enumerate([(n, d) for n in REVENUE for d in (YESTERDAY, TODAY)] * 2)
    ]
    first = requests_for(tick, "revenue", PARTITIONS)
    shuffled = list(tick)
    random.Random(7).shuffle(shuffled)
    second = requests_for(shuffled, "revenue", PARTITIONS)

    assert [r.run_key for r in first] == [r.run_key for r in second]
    assert [batches_of(r) for r in first] == [batches_of(r) for r in second]


def test_the_run_key_changes_when_the_batches_change() -> None:
    base = [manifest("Account", TODAY, "cdc-01-05"), manifest("Opportunity", TODAY, "cdc-01-05")]
    key = requests_for(base, "revenue", PARTITIONS)[0].run_key

    one_more = [*base, manifest("Opportunity", TODAY, "cdc-06-07")]
    other_range = [manifest("Account", TODAY, "cdc-01-05"), manifest("Opportunity", TODAY, "x")]
    other_object = [manifest("Account", TODAY, "cdc-01-05"), manifest("Lead", TODAY, "cdc-01-05")]
    keys = {
        requests_for(tick, "revenue", PARTITIONS)[0].run_key
        for tick in (one_more, other_range, other_object)
    }
    assert key not in keys and len(keys) == 3
    # Same batches, another group: another sensor's run.
    assert requests_for(base, "people", PARTITIONS)[0].run_key != key


def test_a_change_day_outside_the_partitions_is_clamped_to_an_existing_partition() -> None:
    """The emulator clock can run ahead (advance-clock); old records predate the partitions."""
    future = TODAY + dt.timedelta(days=3)
    past = TODAY - dt.timedelta(days=400)
    requests = requests_for(
        [manifest("Account", future, "f"), manifest("Account", past, "p")], "revenue", PARTITIONS
    )
    keys = PARTITIONS.get_partition_keys()
    assert sorted(r.partition_key for r in requests) == [keys[0], keys[-1]]
    # The day in the run key and the batches stay the landed ones.
    assert {r.run_key.split(":")[2] for r in requests if r.run_key} == {
        future.isoformat(),
        past.isoformat(),
    }


def test_nothing_landed_requests_nothing() -> None:
    assert requests_for([], "revenue", PARTITIONS) == []


NAMES = st.sampled_from(("Account", "Opportunity", "Contact", "Lead", "Task", "My_Thing__c"))
DAYS = st.integers(min_value=0, max_value=4).map(lambda d: TODAY - dt.timedelta(days=d))
SOURCES = st.sampled_from(("cdc", "rest"))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(NAMES, DAYS, SOURCES), max_size=25).map(
        lambda rows: [manifest(n, d, f"b{i}", source=s) for i, (n, d, s) in enumerate(rows)]
    )
)
def test_every_landed_batch_is_in_exactly_one_request_under_its_own_object(
    tick: list[Manifest],
) -> None:
    requests = requests_for(tick, "revenue", PARTITIONS)

    assert len(requests) == len({m.day for m in tick})
    assert len({r.run_key for r in requests}) == len(requests)
    landed = {ref(m): m for m in tick}
    seen: list[str] = []
    for request in requests:
        source, day = request.tags["sfdc/source"], request.run_key.split(":")[2]
        names = request.tags[OBJECTS_TAG].split(",")
        assert set(request.asset_selection or []) == {
            asset_key(layer, n) for n in names for layer in LAYERS
        }
        assert list(request.asset_check_keys or []) == [k for n in names for k in run_checks(n)]
        for op, refs in batches_of(request).items():
            for text in refs:
                m = landed[text]
                assert op == f"salesforce__raw__{m.object.lower()}" and m.object in names
                assert m.day == day
                assert source == "cdc" or m.meta["source"] == source
            seen.extend(refs)
    assert sorted(seen) == sorted(ref(m) for m in tick)

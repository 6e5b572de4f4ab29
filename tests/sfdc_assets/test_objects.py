"""Objects as configuration: the YAML is the whole declaration of an object."""

from __future__ import annotations

import dagster as dg
import pytest
from pydantic import ValidationError

from sfdc_assets.assets import build_object_assets
from sfdc_assets.keys import OBJECT_TAG, asset_key
from sfdc_assets.objects import load_config, parse_config

BASE = """
channel_groups:
  revenue: {channel: /data/RevenueChannel__chn, interval_seconds: 15}
objects:
  - {name: Opportunity, group: revenue, freshness_minutes: 10}
"""


def test_the_shipped_file_declares_the_eight_objects_in_three_domains() -> None:
    config = load_config()
    assert [o.name for o in config.objects] == [
        "Account",
        "Opportunity",
        "OpportunityLineItem",
        "Contact",
        "Lead",
        "User",
        "Task",
        "Event",
    ]
    assert {o.group for o in config.objects} == {"revenue", "people", "activities"}
    assert config.channel_groups["revenue"].channel == "/data/RevenueChannel__chn"


def test_adding_a_custom_object_is_one_entry() -> None:
    config = parse_config(BASE + "  - {name: Invoice__c, group: revenue, pii_fields: [Email__c]}\n")
    custom = config.objects_by_name()["Invoice__c"]
    assets = build_object_assets(custom, config)
    keys = {k for a in assets if hasattr(a, "keys") for k in a.keys}
    assert keys == {asset_key(layer, "invoice__c") for layer in ("raw", "current", "scd2")}
    raw = next(a for a in assets if asset_key("raw", "invoice__c") in getattr(a, "keys", ()))
    assert raw.group_names_by_key[asset_key("raw", "invoice__c")] == "revenue"


def test_an_object_in_an_unknown_group_is_refused_with_the_groups_named() -> None:
    with pytest.raises(ValidationError, match="revenue"):
        parse_config(BASE + "  - {name: Case, group: support}\n")


def test_an_api_name_that_could_inject_sql_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_config(BASE + "  - {name: 'Account; DROP TABLE x', group: revenue}\n")


def test_an_object_declared_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="twice"):
        parse_config(BASE + "  - {name: opportunity, group: revenue}\n")


# Without an add-on license an org selects at most 5 entities for Change Data Capture
# (reference §2.7; CDC Developer Guide, "Change Data Capture Allocations").
CDC_ENTITY_LIMIT = 5


def test_the_shipped_cdc_entities_fit_the_orgs_five_and_activities_are_polled() -> None:
    # Issue 11: 5M activity changes a day are 100x an Unlimited org's 50K deliveries.
    config = load_config()
    cdc = [o.name for o in config.objects if o.mode == "cdc"]
    assert len(cdc) <= CDC_ENTITY_LIMIT
    assert cdc == ["Account", "Opportunity", "OpportunityLineItem", "Contact", "Lead"]
    polled = {o.name: o.poll_minutes for o in config.objects if o.mode == "polling"}
    assert polled == {"User": 15, "Task": 15, "Event": 15}


def test_a_channel_group_without_cdc_objects_gets_no_sensor_and_polling_covers_them() -> None:
    from sensors.cdc import cdc_sensors, polling_sensor

    config = load_config()
    assert [s.name for s in cdc_sensors(config)] == ["cdc_revenue", "cdc_people"]
    polling = polling_sensor(config)
    assert polling is not None
    # Its first tick after their bootstrap asks for a re-read of every polled object.
    with dg.instance_for_test() as instance:
        for name in ("Event", "Task", "User"):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=asset_key("current", name),
                    partition=config.settings.partitions_start,
                )
            )
        data = polling.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert sorted(r.tags[OBJECT_TAG] for r in data.run_requests) == ["Event", "Task", "User"]


def test_lookup_fields_are_validated_names() -> None:
    config = parse_config(BASE.replace("freshness_minutes: 10}", "lookup_fields: [AccountId]}"))
    assert config.objects_by_name()["Opportunity"].lookup_fields == ("AccountId",)
    with pytest.raises(ValidationError, match="identifier"):
        parse_config(BASE.replace("freshness_minutes: 10}", 'lookup_fields: ["x; drop"]}'))


def test_the_shipped_lookup_fields_are_the_reference_fields_dbt_reads_by() -> None:
    lookups = {o.name: o.lookup_fields for o in load_config().objects if o.lookup_fields}
    assert lookups == {
        "Account": ("OwnerId",),
        "Opportunity": ("AccountId", "OwnerId"),
        "Contact": ("AccountId",),
        "Task": ("WhatId", "WhoId"),
        "Event": ("WhatId", "WhoId"),
    }


def test_lookup_indexes_wait_for_the_end_of_a_multi_day_range() -> None:
    """The bootstrap (a range run) loads without them; the next one-day run creates them."""
    import datetime as dt

    from resources.duckdb_warehouse import DuckDBWarehouse
    from sfdc_assets.raw import RawPlan, ensure_lookup_fields
    from sync_engine import registry
    from tests.sync_engine.histories import SPEC

    wh = DuckDBWarehouse(path=":memory:")
    registry.sync_schema(wh, SPEC)
    day = dt.datetime(2026, 12, 1)
    count = "SELECT COUNT(*) FROM duckdb_indexes() WHERE schema_name = 'sfdc'"
    ranged = RawPlan("Opportunity", "bulk", (day - dt.timedelta(days=30), day), dt.timedelta())
    ensure_lookup_fields(wh, SPEC, ("AccountId",), ranged)
    assert wh.query(count) == [(0,)]
    one_day = RawPlan("Opportunity", "bulk", (day, day + dt.timedelta(days=1)), dt.timedelta())
    ensure_lookup_fields(wh, SPEC, ("AccountId",), one_day)
    assert wh.query(count) == [(1,)]

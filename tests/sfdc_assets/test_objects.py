"""Objects as configuration: the YAML is the whole declaration of an object."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sfdc_assets.assets import build_object_assets
from sfdc_assets.keys import asset_key
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

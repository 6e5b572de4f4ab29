"""Freshness policies (sfdc_assets/freshness.py): targets per object on the current layer."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from sfdc_assets.freshness import (
    DEFAULT_FRESHNESS_MINUTES,
    apply_freshness,
    current_key,
    freshness_minutes,
    freshness_policies,
    target_minutes,
)


def _layers(obj: str) -> list[dg.AssetsDefinition]:
    """Stand-ins for the factory's raw/current/scd2 assets of one object."""

    def make(layer: str) -> dg.AssetsDefinition:
        @dg.asset(key=["salesforce", layer, obj.lower()])
        def _asset() -> None:
            return None

        return _asset

    return [make(layer) for layer in ("raw", "current", "scd2")]


def _fail_window(assets_def: dg.AssetsDefinition) -> timedelta | None:
    policy = next(iter(assets_def.specs)).freshness_policy
    return policy.fail_window.to_timedelta() if policy is not None else None


def test_revenue_objects_get_ten_minutes_and_activities_sixty_by_default() -> None:
    minutes = freshness_minutes([{"name": "Opportunity"}, {"name": "Task"}, {"name": "Event"}])

    assert minutes == {"Opportunity": 10, "Task": 60, "Event": 60}
    assert DEFAULT_FRESHNESS_MINUTES["OpportunityLineItem"] == 10


def test_freshness_minutes_from_config_override_the_default_and_add_other_objects() -> None:
    minutes = freshness_minutes(
        [
            {"name": "Opportunity", "freshness_minutes": 5},
            {"name": "Account", "freshness_minutes": 120},
            {"name": "Lead"},  # no target configured: no policy
        ]
    )

    assert minutes == {"Opportunity": 5, "Account": 120}


def test_a_window_under_one_minute_is_rejected_with_the_object_named() -> None:
    with pytest.raises(ValueError, match="Contact"):
        freshness_minutes([{"name": "Contact", "freshness_minutes": 0}])


def test_only_the_current_layer_carries_the_policy() -> None:
    defs = apply_freshness(
        [*_layers("Opportunity"), *_layers("Task"), *_layers("Account")],
        {"Opportunity": 10, "Task": 60},
    )

    windows = {next(iter(a.keys)).to_user_string(): _fail_window(a) for a in defs}
    assert windows == {
        "salesforce/raw/opportunity": None,
        "salesforce/current/opportunity": timedelta(minutes=10),
        "salesforce/scd2/opportunity": None,
        "salesforce/raw/task": None,
        "salesforce/current/task": timedelta(minutes=60),
        "salesforce/scd2/task": None,
        "salesforce/raw/account": None,
        "salesforce/current/account": None,
        "salesforce/scd2/account": None,
    }


def test_policies_survive_definitions_and_reach_the_asset_graph() -> None:
    defs = dg.Definitions(assets=apply_freshness(_layers("OpportunityLineItem")))

    node = defs.get_repository_def().asset_graph.get(current_key("OpportunityLineItem"))
    assert node.freshness_policy == dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=10)
    )


def test_items_that_are_not_assets_pass_through_unchanged() -> None:
    @dg.asset_check(asset=current_key("Opportunity"))
    def a_check() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    assert apply_freshness([a_check], {"Opportunity": 10}) == [a_check]


def test_policies_are_keyed_by_the_platform_asset_keys() -> None:
    policies = freshness_policies({"OpportunityLineItem": 10})

    assert list(policies) == [dg.AssetKey(["salesforce", "current", "opportunitylineitem"])]


def test_the_shipped_objects_config_gives_revenue_ten_minutes_and_activities_sixty() -> None:
    minutes = freshness_minutes()

    assert {k: minutes[k] for k in ("Opportunity", "OpportunityLineItem", "Task", "Event")} == {
        "Opportunity": 10,
        "OpportunityLineItem": 10,
        "Task": 60,
        "Event": 60,
    }


def test_the_cdc_lag_target_of_an_object_is_its_freshness_target() -> None:
    assert target_minutes({"name": "Contact", "freshness_minutes": 30}) == 30
    assert target_minutes({"name": "Opportunity"}) == DEFAULT_FRESHNESS_MINUTES["Opportunity"]
    assert target_minutes({"name": "Lead"}) is None

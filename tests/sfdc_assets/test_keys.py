"""sfdc_assets/keys.py: the names sensors use are the names the factory builds."""

from __future__ import annotations

import dagster as dg

from sfdc_assets import keys
from sfdc_assets.assets import build_object_assets
from sfdc_assets.objects import load_config


def _built(name: str) -> list[dg.AssetsDefinition]:
    sync = load_config()
    return [a for a in build_object_assets(sync.objects_by_name()[name], sync)]


def test_the_raw_op_name_the_sensors_configure_is_the_raw_asset_s_op() -> None:
    raw, current_scd2, *_ = _built("OpportunityLineItem")

    assert raw.op.name == keys.raw_op_name("OpportunityLineItem")
    assert raw.op.name == "salesforce__raw__opportunitylineitem"
    assert current_scd2.op.name == keys.current_scd2_op_name("OpportunityLineItem")


def test_every_check_a_sync_run_requests_is_one_the_factory_built() -> None:
    built = {spec.key for a in _built("Opportunity") for spec in a.check_specs}

    assert set(keys.run_checks("Opportunity")) <= built
    assert keys.reconcile_check("Opportunity") in built
    assert keys.full_unique_check("Opportunity") in built


def test_keys_are_the_same_for_a_config_and_its_api_name() -> None:
    obj = load_config().objects_by_name()["Account"]

    assert keys.object_keys(obj) == keys.object_keys("Account")
    assert keys.object_keys("Account")[0] == dg.AssetKey(["salesforce", "raw", "account"])
    assert keys.apply_pool(obj) == "sfdc_apply_account"
    assert keys.run_tags(obj) == {keys.OBJECT_TAG: "Account"}


def test_the_daemon_can_build_a_job_from_each_run_request_s_checks() -> None:
    # Regression: the current+scd2 op could not be subset, so the daemon refused every
    # sync run (its checks leave out reconciled_with_salesforce) with
    # DagsterInvalidSubsetError: make demo backfilled nothing. The harness's materialize
    # selected every check and hid it.
    from sfdc_assets.definitions import build_definitions

    job = build_definitions().resolve_implicit_global_asset_job_def()
    for name in ("Opportunity", "Task"):
        assets = set(keys.object_keys(name))
        for checks in (keys.run_checks(name), keys.reconcile_run_checks(name)):
            subset = job.get_subset(asset_selection=assets, asset_check_selection=set(checks))
            assert subset.asset_layer.asset_graph.get_all_asset_keys() >= assets


def _raw_pool(name: str) -> str | None:
    raw, *_ = _built(name)
    assert raw.op.name == keys.raw_op_name(name)
    return raw.op.pool


def test_raw_steps_queue_per_object_so_one_object_s_long_read_blocks_no_other() -> None:
    import yaml

    from scripts.demo import INSTANCE_YAML

    # A full Task reconciliation (minutes of Bulk listing) must not hold the slot an
    # Opportunity CDC run's raw step needs: Dagster keeps a run queued while every first
    # step's pool is full.
    pools = {name: _raw_pool(name) for name in ("Task", "Opportunity", "Account")}
    assert pools["Task"] == keys.raw_pool("Task")
    assert len(set(pools.values())) == len(pools)
    # Salesforce-reading runs (they carry the object tag) are bounded at run level instead:
    limits = yaml.safe_load(INSTANCE_YAML)["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": keys.OBJECT_TAG, "limit": 2} in limits
    assert keys.OBJECT_TAG in keys.run_tags("Task")

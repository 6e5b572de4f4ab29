"""The names the platform's parts share: asset keys, op names, pools, run tags, check keys.

The asset factory, the checks, the sensors and the freshness policies spell every name
through this module, so a sensor's run request names exactly the op and the keys the
factory built. Cheap to import: nothing but dagster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # pragma: no cover
    from sfdc_assets.objects import SObjectConfig

SOURCE_SYSTEM = "salesforce"
LAYERS = ("raw", "current", "scd2")

# Check names (DESIGN §6): the in-run checks of every sync, and the scheduled reconciliation.
RAW_VALID = "raw_batch_valid"
CURRENT_ID_UNIQUE = "current_id_unique"
# The same rule over the whole current table, on the nightly schedule (sfdc_nightly_checks).
CURRENT_ID_UNIQUE_FULL = "current_id_unique_full"
CDC_LAG = "cdc_lag"
RECONCILE = "live_count_matches_salesforce"
# The check a reconciliation run evaluates after its repairs (sfdc_assets/reconcile.py).
RECONCILED = "reconciled_with_salesforce"

# The reconciliation's live-count check (an API call per object) takes a slot of this pool
# (dagster.yaml sizes it); raw steps have a pool per object (`raw_pool`).
SALESFORCE_POOL = "salesforce_api"

# Run tags. The object tag limits runs per object (dagster.yaml run queue); CDC runs carry
# their channel group (one at a time per group) and the objects they apply.
OBJECT_TAG = "sfdc/object"
GROUP_TAG = "sfdc/channel_group"
OBJECTS_TAG = "sfdc/objects"
SOURCE_TAG = "sfdc/source"
# dbt builds share one lane (dagster.yaml limits it to one run at a time locally: they
# all write the one DuckDB file), so three builds due together never take every run slot
# from the CDC runs.
LANE_TAG = "sfdc/lane"
DBT_LANE = "dbt"
# Micro-batch runs (seconds, the freshness path) leave the queue before anything else.
PRIORITY_TAG = "dagster/priority"
MICRO_BATCH_PRIORITY = "10"
REASON_TAG = "sfdc/reason"
# Dagster's own tags of a run over a partition range.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def key_name(obj: SObjectConfig | str) -> str:
    """The object's part of asset keys, op names and table names: its API name, lower case."""
    return obj.lower() if isinstance(obj, str) else obj.key_name


def asset_key(layer: str, obj: SObjectConfig | str) -> dg.AssetKey:
    """`["salesforce", <layer>, <object lower-case>]`."""
    return dg.AssetKey([SOURCE_SYSTEM, layer, key_name(obj)])


def object_keys(obj: SObjectConfig | str) -> list[dg.AssetKey]:
    """The raw, current and scd2 keys of one object, in that order."""
    return [asset_key(layer, obj) for layer in LAYERS]


def raw_op_name(obj: SObjectConfig | str) -> str:
    """The raw asset's op name (Dagster derives it from the key): run config goes under it."""
    return "__".join(asset_key("raw", obj).path)


def current_scd2_op_name(obj: SObjectConfig | str) -> str:
    """The name of the op that writes current and scd2 together."""
    return f"{key_name(obj)}_current_scd2"


def raw_pool(obj: SObjectConfig | str) -> str:
    """The pool that serializes one object's raw steps (one raw writer per object).

    Per object, not one Salesforce pool for all: a full reconciliation of Task (a Bulk
    listing of 10M ids) held the one `salesforce_api` slot for 7 min at production shape,
    and no CDC run of the revenue objects could even leave the run queue meanwhile
    (Dagster does not dequeue a run whose every first step's pool is full). How many
    runs read Salesforce at once is bounded at run level instead: dagster.yaml limits
    runs tagged `sfdc/object` (every Bulk-reading run: bootstrap, poll, re-backfill,
    reconciliation) to 2 at a time; CDC micro-batch runs make a few REST calls at most.
    """
    return f"sfdc_raw_{key_name(obj)}"


def apply_pool(obj: SObjectConfig | str) -> str:
    """The pool that serializes one object's applies (the engine needs one writer)."""
    return f"sfdc_apply_{key_name(obj)}"


def object_name(obj: SObjectConfig | str) -> str:
    """The API name of an object config, or the name itself."""
    return obj if isinstance(obj, str) else obj.name


def run_tags(obj: SObjectConfig | str) -> dict[str, str]:
    """Tags every run of an object carries (run-queue limit per object: dagster.yaml)."""
    return {OBJECT_TAG: object_name(obj)}


def run_checks(obj: SObjectConfig | str) -> list[dg.AssetCheckKey]:
    """The checks every sync run of an object evaluates.

    The cheap in-op checks; reconciliation (an API call) runs on its own schedule.
    """
    return [
        dg.AssetCheckKey(asset_key("raw", obj), RAW_VALID),
        dg.AssetCheckKey(asset_key("current", obj), CURRENT_ID_UNIQUE),
        dg.AssetCheckKey(asset_key("current", obj), CDC_LAG),
    ]


def full_unique_check(obj: SObjectConfig | str) -> dg.AssetCheckKey:
    """The nightly whole-table Id uniqueness check of an object's current table."""
    return dg.AssetCheckKey(asset_key("current", obj), CURRENT_ID_UNIQUE_FULL)


def reconcile_check(obj: SObjectConfig | str) -> dg.AssetCheckKey:
    """The reconciliation check of an object's current table."""
    return dg.AssetCheckKey(asset_key("current", obj), RECONCILE)


def reconciled_check(obj: SObjectConfig | str) -> dg.AssetCheckKey:
    """The check a reconciliation run evaluates: what it found, repaired, and what is left."""
    return dg.AssetCheckKey(asset_key("current", obj), RECONCILED)


def reconcile_run_checks(obj: SObjectConfig | str) -> list[dg.AssetCheckKey]:
    """The checks of a reconciliation run: a sync run's, and `reconciled_with_salesforce`."""
    return [*run_checks(obj), reconciled_check(obj)]

"""Freshness policies for the current tables (DESIGN §1, §6): project-wide policy, applied once.

Each object's ``current`` asset gets ``FreshnessPolicy.time_window(fail_window=N minutes)``:
the FreshnessDaemon (``dagster dev`` / dagster-daemon) marks it FAIL when its last
materialization is older than N minutes, the UI shows it, and ``sensors.alerts`` posts one
Slack message per stale incident. N comes from the object's ``freshness_minutes`` in
``sfdc_assets/objects.yaml``, the one source of freshness targets: the ``cdc_lag`` check
uses the same minutes (``target_minutes``), and a test pins the dbt sources' freshness
(``dbt/models/staging/salesforce/__sources.yml``) to them. Without a configured value, the
defaults below (the business targets) apply, and an object in neither gets no policy.

Only ``current`` carries the policy: it is what consumers query, and raw/scd2 are written by
the same runs, so a second policy on them would only repeat the same alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from sfdc_assets.keys import asset_key

# DESIGN §1: Opportunity/OpportunityLineItem P95 < 10 min from commit to queryable;
# activities (Task, Event) < 60 min.
DEFAULT_FRESHNESS_MINUTES: dict[str, int] = {
    "Opportunity": 10,
    "OpportunityLineItem": 10,
    "Task": 60,
    "Event": 60,
}
FRESHNESS_LAYER = "current"
# Dagster rejects time windows under one minute.
_MIN_MINUTES = 1


def current_key(object_name: str) -> dg.AssetKey:
    """The current-layer asset key of an object (the platform's naming, DESIGN §3)."""
    return asset_key(FRESHNESS_LAYER, object_name)


def _configured_objects() -> Iterable[Any]:
    """The object configs of ``sfdc_assets/objects.yaml`` (parsed once, cached there)."""
    from sfdc_assets.objects import load_objects

    return load_objects().values()


def _field(obj: Any, *names: str) -> Any:
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def freshness_minutes(objects: Iterable[Any] | None = None) -> dict[str, int]:
    """Minutes of the freshness window per object name.

    Args:
        objects: object configs (mappings or objects) with a ``name`` and an optional
            ``freshness_minutes``; by default the ones in ``sfdc_assets/objects.yaml``.

    Returns:
        ``{object name: minutes}``: the configured value, else the default target, for every
        configured object (the default targets alone when the list is empty).
    """
    configured = list(_configured_objects() if objects is None else objects)
    result: dict[str, int] = {}
    if not configured:
        result.update(DEFAULT_FRESHNESS_MINUTES)
    for obj in configured:
        name = _field(obj, "name", "api_name", "sobject", "object")
        if not name:
            continue
        minutes = _field(obj, "freshness_minutes")
        if minutes is None:
            minutes = DEFAULT_FRESHNESS_MINUTES.get(name)
        if minutes is None:
            continue
        if int(minutes) < _MIN_MINUTES:
            raise ValueError(
                f"freshness_minutes for {name} is {minutes}; Dagster freshness windows must be "
                f"at least {_MIN_MINUTES} minute (sfdc_assets/objects.yaml)"
            )
        result[name] = int(minutes)
    return result


def target_minutes(obj: Any) -> int | None:
    """The freshness target of one object config: configured, else the default, else None."""
    return freshness_minutes([obj]).get(_field(obj, "name", "api_name", "sobject", "object"))


def freshness_policies(
    minutes_by_object: Mapping[str, int] | None = None,
) -> dict[dg.AssetKey, dg.FreshnessPolicy]:
    """The time-window policy per current-layer asset key."""
    minutes = freshness_minutes() if minutes_by_object is None else minutes_by_object
    return {
        current_key(name): dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=n))
        for name, n in minutes.items()
    }


def apply_freshness(
    assets_defs: Sequence[Any], minutes_by_object: Mapping[str, int] | None = None
) -> list:
    """Return ``assets_defs`` with the freshness policies applied to the matching assets.

    Anything that is not an ``AssetsDefinition`` (checks, specs of other kinds) passes through
    unchanged, so ``definitions.py`` can hand over its whole asset list.
    """
    policies = freshness_policies(minutes_by_object)

    def with_policy(spec: dg.AssetSpec) -> dg.AssetSpec:
        policy = policies.get(spec.key)
        return dg.apply_freshness_policy(spec, policy) if policy else spec

    out: list = []
    for item in assets_defs:
        if isinstance(item, dg.AssetsDefinition) and any(k in policies for k in item.keys):
            out.append(item.map_asset_specs(with_policy))
        elif isinstance(item, dg.AssetSpec) and item.key in policies:
            out.append(with_policy(item))
        else:
            out.append(item)
    return out

"""The run requests the sync sensors make: micro-batch runs and targeted re-backfills.

Every request names its assets, checks, op config and tags through `sfdc_assets.keys`,
and carries a deterministic `run_key`: a re-evaluated tick requests nothing twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import dagster as dg

from sfdc_assets.keys import (
    GROUP_TAG,
    MICRO_BATCH_PRIORITY,
    OBJECTS_TAG,
    PRIORITY_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    REASON_TAG,
    SOURCE_TAG,
    object_keys,
    raw_op_name,
    run_checks,
    run_tags,
)
from sfdc_assets.partitions import partition_key_for


def raw_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run config giving the raw op of `name` its `RawRunConfig` fields."""
    return {raw_op_name(name): {"config": config}}


def requests_for(
    manifests: list[Any], group: str, partitions: dg.DailyPartitionsDefinition
) -> list[dg.RunRequest]:
    """One run per change day for a whole tick: every object of the channel group with a
    micro-batch that day, raw -> current -> scd2, in one run.

    One run per tick instead of one per object keeps the run queue short: each run is a
    new process importing the code location, which costs more than the applies it runs.
    The REST re-reads of a tick (gap events, records its events changed) join the run of
    their day: re-reading after every drain would otherwise double the runs. The run's
    source tag is `cdc` when it holds any CDC batch. The run key is a digest of the
    landed batch names (named by replay range), so a re-evaluated tick that lands the
    same batches requests nothing twice.
    """
    by_run: dict[str, dict[str, list[str]]] = {}
    sources: dict[str, set[str]] = {}
    for m in manifests:
        sources.setdefault(m.day, set()).add(m.meta.get("source", "cdc"))
        refs = by_run.setdefault(m.day, {}).setdefault(m.object, [])
        refs.append(f"{m.kind}/{m.object}/{m.day}/{m.batch_id}")
    out = []
    for day, per_object in sorted(by_run.items()):
        source = "cdc" if "cdc" in sources[day] else min(sources[day])
        names = sorted(per_object)
        digest = hashlib.sha1(
            "\n".join(r for n in names for r in sorted(per_object[n])).encode()
        ).hexdigest()[:16]
        ops: dict[str, Any] = {}
        for n in names:
            ops.update(raw_config(n, {"landing_batches": sorted(per_object[n])}))
        out.append(
            dg.RunRequest(
                run_key=f"{source}:{group}:{day}:{digest}",
                partition_key=partition_key_for(dt.date.fromisoformat(day), partitions),
                asset_selection=[key for n in names for key in object_keys(n)],
                asset_check_keys=[k for n in names for k in run_checks(n)],
                run_config={"ops": ops},
                tags={
                    GROUP_TAG: group,
                    OBJECTS_TAG: ",".join(names),
                    SOURCE_TAG: source,
                    PRIORITY_TAG: MICRO_BATCH_PRIORITY,
                },
            )
        )
    return out


def rebackfill_request(
    name: str, since_ms: int, reason: str, partitions: dg.DailyPartitionsDefinition
) -> dg.RunRequest:
    """A targeted re-backfill of one object from `since_ms` (raw config `since`)."""
    since = dt.datetime.fromtimestamp(since_ms / 1000, dt.UTC).replace(microsecond=0)
    start = partition_key_for(since.date(), partitions)
    end = partitions.get_last_partition_key() or start
    return dg.RunRequest(
        run_key=f"rebackfill:{name}:{since_ms}",
        asset_selection=object_keys(name),
        asset_check_keys=run_checks(name),
        run_config={"ops": raw_config(name, {"since": since.isoformat()})},
        tags={
            **run_tags(name),
            SOURCE_TAG: "rebackfill",
            REASON_TAG: reason,
            RANGE_START_TAG: start,
            RANGE_END_TAG: max(start, end),
        },
    )

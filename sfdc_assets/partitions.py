"""Daily partitions on the change date (UTC day of a change's version, DESIGN §3)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

# The current UTC day is a partition too (end_offset=1): CDC micro-batches land in it
# while it is still going on.
END_OFFSET = 1


def daily_partitions(start: str) -> dg.DailyPartitionsDefinition:
    """Daily partitions from `start` (YYYY-MM-DD) through today, UTC."""
    return dg.DailyPartitionsDefinition(start_date=start, end_offset=END_OFFSET, timezone="UTC")


def partition_key_for(day: dt.date, partitions_def: dg.DailyPartitionsDefinition) -> str:
    """The partition key of a change day, clamped to the partitions that exist.

    The emulator's clock can run ahead of the wall clock (`advance-clock`), and a record
    can carry a change date before the first partition; the run still applies exactly its
    landed batches, the key only labels it.
    """
    keys_first = partitions_def.start.date()
    last = partitions_def.get_last_partition_key()
    key = max(day, keys_first).isoformat()
    return min(key, last) if last else key


# Before any Salesforce timestamp (the org went live in 1999): where the first partition's
# window starts.
BEGINNING = dt.datetime(1999, 1, 1, tzinfo=dt.UTC)


def window_of(context: dg.AssetExecutionContext) -> tuple[dt.datetime, dt.datetime]:
    """The run's partition window as UTC datetimes `[start, end)`.

    The first partition also holds everything older: a record last modified before
    `partitions_start` belongs to no day of the partitions, yet a backfill of the whole
    range must read it.
    """
    tw = context.partition_time_window
    start, end = tw.start.astimezone(dt.UTC), tw.end.astimezone(dt.UTC)
    partitions = context.assets_def.partitions_def
    if isinstance(partitions, dg.TimeWindowPartitionsDefinition) and start <= partitions.start:
        start = BEGINNING
    return start, end

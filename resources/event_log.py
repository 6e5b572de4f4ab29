"""The local Dagster instance's event log: SQLite, with a range run's events written in batches.

A single-run partition-range backfill reports one materialization per partition and asset
(the bootstrap of one object over ~2 years: ~2,200 events). Dagster's
`SqliteEventLogStorage` writes each in its own transactions (the run's shard, then the
cross-run index shard, each opened anew): ~20 ms an event, 36-50 s of a 1M-row Task
bootstrap on this machine kind (docs/performance.md). Dagster batches those events when
`DAGSTER_EVENT_BATCH_SIZE` is set and hands them to `store_event_batch`, which the SQLite
storage does not implement (it loops over `store_event`); Postgres's does. This one writes
a batch of one asset's materializations (or observations) of one run as one INSERT into
each shard, inside one transaction each, plus the index shard's tags and latest-event row,
as Postgres's does. Every event is still stored: partitions keep their own
materializations in the UI and in `get_materialized_partitions`.

Configured by `make demo`'s dagster.yaml (`scripts/demo.py`) as the instance's
`event_log_storage`, with `DAGSTER_EVENT_BATCH_SIZE=500` in the environment of the
processes that run steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterEventType, EventLogEntry

# An instance storage has no public base class: this one extends Dagster's SQLite storage
# and reuses its helpers (pinned dagster 1.13.x; tests/resources/test_event_log.py compares
# what it stores with the stock storage, so an upgrade that changes them fails there).
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable  # noqa: TID251
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (  # noqa: TID251
    SqliteEventLogStorage,
)
from dagster._serdes import ConfigurableClassData

_BATCHED_TYPES = (
    frozenset({DagsterEventType.ASSET_MATERIALIZATION}),
    frozenset({DagsterEventType.ASSET_OBSERVATION}),
)


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` whose `store_event_batch` writes a batch in one transaction
    per shard (the run's and the cross-run index)."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchedSqliteEventLogStorage:
        """As the parent's, but an instance of this class."""
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """One run's materializations (or observations) of one asset: one INSERT per shard.

        Anything else (mixed types or assets, failed-to-materialize, planned events) is
        stored one event at a time, as the parent does.
        """
        events = [e for e in events if e.dagster_event is not None]
        if not _batchable(events):
            super().store_event_batch(events)
            return
        insert = self.prepare_insert_event_batch(events)
        # The shared index shard first, in one transaction: it is the one other processes
        # lock (the webserver, the daemon), and when it fails nothing is written, so
        # Dagster's fallback (one event at a time) stores the batch once. The run's own
        # shard is one INSERT after it.
        with self.index_transaction() as conn:
            rows = conn.execute(insert.returning(SqlEventLogStorageTable.c.id))
            ids = [int(row[0]) for row in rows]
            self._store_asset_event_tags(conn, events, ids)
            # The asset's row holds its latest event: the batch's last, as one by one.
            self._store_asset_event(conn, events[-1], ids[-1])
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(insert)


def _batchable(events: Sequence[EventLogEntry]) -> bool:
    if len(events) < 2:
        return False
    types = frozenset(e.get_dagster_event().event_type for e in events)
    keys = {e.get_dagster_event().asset_key for e in events}
    runs = {e.run_id for e in events}
    return types in _BATCHED_TYPES and len(keys) == 1 and None not in keys and len(runs) == 1

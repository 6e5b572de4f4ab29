"""The CDC event log: the ``_events`` table, replay ids, delayed delivery and retention.

Replay ids are contiguous and never repeat, even across restarts and after retention (the
highest expired id is kept in ``_meta`` as ``replay_floor``). Events a delivery-delay fault
holds back stay in memory until emulator time passes their release time, then get the
next replay ids: replay order is then no longer commit order, as in Salesforce. Retention
removes a prefix of the log by commit time. The caller (the store) holds its lock around
every method here except :meth:`EventLog.read_after`, which only reads.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from sfdc_emulator.change_events import PendingEvent
from sfdc_emulator.tables import SMALL_WRITE, one, put_meta

# Expiring old events scans _events: at most once per this many emulator ms.
_EXPIRY_INTERVAL_MS = 5_000
_EVENT_COLUMNS = (
    "replay_id, entity, change_type, commit_ts, transaction_key, sequence_number, "
    "record_ids, schema_id, event_uuid, payload"
)
_EVENT_MARKS = ", ".join("?" * 10)
_EVENTS_ARROW = pa.schema(
    [
        ("replay_id", pa.int64()),
        ("entity", pa.string()),
        ("change_type", pa.string()),
        ("commit_ts", pa.int64()),
        ("transaction_key", pa.string()),
        ("sequence_number", pa.int32()),
        ("record_ids", pa.list_(pa.string())),
        ("schema_id", pa.string()),
        ("event_uuid", pa.string()),
        ("payload", pa.binary()),
    ]
)


@dataclass(frozen=True)
class StoredEvent:
    """One row of ``_events``."""

    replay_id: int
    entity: str
    change_type: str
    commit_ts: int
    transaction_key: str
    sequence_number: int
    record_ids: list[str]
    schema_id: str
    event_uuid: str
    payload: bytes


def _event_row(replay_id: int, e: PendingEvent) -> list[Any]:
    return [
        replay_id,
        e.entity,
        e.change_type,
        e.commit_ts,
        e.transaction_key,
        e.sequence_number,
        e.record_ids,
        e.schema_id,
        e.event_uuid,
        e.payload,
    ]


def _events_table(replay_ids: list[int], events: Sequence[PendingEvent]) -> pa.Table:
    return pa.table(
        [
            pa.array(replay_ids, pa.int64()),
            pa.array([e.entity for e in events], pa.string()),
            pa.array([e.change_type for e in events], pa.string()),
            pa.array([e.commit_ts for e in events], pa.int64()),
            pa.array([e.transaction_key for e in events], pa.string()),
            pa.array([e.sequence_number for e in events], pa.int32()),
            pa.array([e.record_ids for e in events], pa.list_(pa.string())),
            pa.array([e.schema_id for e in events], pa.string()),
            pa.array([e.event_uuid for e in events], pa.string()),
            pa.array([e.payload for e in events], pa.binary()),
        ],
        schema=_EVENTS_ARROW,
    )


class EventLog:
    """Publishing, holding back, expiring and reading CDC events."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, meta: dict[str, str]) -> None:
        """Open the log on the store's write cursor; ``meta`` is the ``_meta`` content."""
        self._w = cur
        last = one(cur, "SELECT max(replay_id), max(commit_ts) FROM _events")
        assert last is not None  # an aggregate without GROUP BY returns one row
        # replay ids never repeat: the log's max, or the highest id retention ever expired
        floor = int(json.loads(meta.get("replay_floor", "0")))
        self.last_replay = max(last[0] or 0, floor)
        self.last_commit_ts: int = last[1] or 0
        self._held: list[tuple[int, int, PendingEvent]] = []
        self._held_seq = 0
        self._last_expiry_ms = 0

    def publish(
        self, events: Sequence[PendingEvent], cur: duckdb.DuckDBPyConnection, own_txn: bool
    ) -> list[int]:
        """Append ``events`` with the next replay ids (inside the caller's transaction
        unless ``own_txn``)."""
        if not events:
            return []
        first = self.last_replay + 1
        replay_ids = list(range(first, first + len(events)))
        if own_txn:
            cur.execute("BEGIN TRANSACTION")
        try:
            if len(events) <= SMALL_WRITE:
                for rid, e in zip(replay_ids, events, strict=True):
                    cur.execute(
                        f"INSERT INTO _events ({_EVENT_COLUMNS}) VALUES ({_EVENT_MARKS})",
                        _event_row(rid, e),
                    )
            else:
                cur.register("__new_events", _events_table(replay_ids, events))
                cur.execute(f"INSERT INTO _events ({_EVENT_COLUMNS}) SELECT * FROM __new_events")
                cur.unregister("__new_events")
            if own_txn:
                cur.execute("COMMIT")
        except Exception:
            if own_txn:
                cur.execute("ROLLBACK")
            raise
        self.last_replay = replay_ids[-1]
        return replay_ids

    def hold(self, held: Sequence[tuple[int, PendingEvent]]) -> None:
        """Keep ``(release_ms, event)`` pairs back until :meth:`release_due`."""
        for release, e in held:
            self._held_seq += 1
            self._held.append((release, self._held_seq, e))

    def release_due(self, now_ms: int, force: bool = False) -> list[int]:
        """Publish the held events due by ``now_ms`` (all with ``force``), by release time."""
        if not self._held:
            return []
        due = [h for h in self._held if force or h[0] <= now_ms]
        if not due:
            return []
        self._held = [h for h in self._held if not (force or h[0] <= now_ms)]
        due.sort(key=lambda h: (h[0], h[1]))
        return self.publish([h[2] for h in due], self._w, own_txn=True)

    def expire(self, now_ms: int, retention_ms: int, force: bool = False) -> None:
        """Drop events committed more than ``retention_ms`` before ``now_ms`` (at most every
        few seconds unless ``force``)."""
        if not force and now_ms - self._last_expiry_ms < _EXPIRY_INTERVAL_MS:
            return
        self._last_expiry_ms = now_ms
        cutoff = now_ms - retention_ms
        row = one(self._w, "SELECT max(replay_id) FROM _events WHERE commit_ts < ?", [cutoff])
        if row and row[0] is not None:
            # retention removes a prefix of the log, so the retained ids stay contiguous
            self._w.execute("BEGIN TRANSACTION")
            self._w.execute("DELETE FROM _events WHERE replay_id <= ?", [row[0]])
            put_meta(self._w, {"replay_floor": json.dumps(int(row[0]))})
            self._w.execute("COMMIT")

    def expire_soon(self) -> None:
        """Make the next :meth:`expire` scan (emulator time jumped)."""
        self._last_expiry_ms = 0

    def earliest(self) -> int | None:
        """Lowest retained replay id, None when the log is empty."""
        row = one(self._w, "SELECT min(replay_id) FROM _events")
        return None if row is None else row[0]

    @staticmethod
    def read_after(
        cur: duckdb.DuckDBPyConnection,
        replay_id: int,
        entities: Collection[str] | None,
        limit: int,
    ) -> list[StoredEvent]:
        """Up to ``limit`` events with replay id > ``replay_id``, in replay order."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM _events WHERE replay_id > ?"
        params: list[Any] = [int(replay_id)]
        if entities is not None:
            entities = list(entities)
            if not entities:
                return []
            sql += f" AND entity IN ({', '.join('?' * len(entities))})"
            params += entities
        sql += " ORDER BY replay_id LIMIT ?"
        params.append(int(limit))
        rows = cur.execute(sql, params).fetchall()
        return [
            StoredEvent(r[0], r[1], r[2], r[3], r[4], r[5], list(r[6]), r[7], r[8], bytes(r[9]))
            for r in rows
        ]

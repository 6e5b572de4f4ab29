"""OrgStore: the emulated org's state in DuckDB, THE write path, and the CDC event log.

Every write goes through :meth:`OrgStore.commit` (or :meth:`~OrgStore.gap` /
:meth:`~OrgStore.seed` / schema changes) under one lock and in one DuckDB transaction;
readers use their own cursors and see committed data only. The store coordinates; the
parts live in their own modules:

- :mod:`sfdc_emulator.tables`: the DuckDB tables, column types, row reads and writes;
- :mod:`sfdc_emulator.values`: coercion of API values, derived fields, :class:`StoreError`;
- :mod:`sfdc_emulator.transaction`: :class:`Mutation` s applied to one commit's working set;
- :mod:`sfdc_emulator.change_events`: that working set's changes as CDC events;
- :mod:`sfdc_emulator.event_schemas`: the Avro schema of each object's events, every id kept;
- :mod:`sfdc_emulator.event_log`: ``_events``, replay ids, delayed delivery, retention;
- :mod:`sfdc_emulator.formulas`: cross-object formulas, re-evaluated silently on write.

The org's limits (:data:`RETENTION_MS`, :data:`OVERFLOW_LIMIT`) are read here at each call
and handed to those modules, so tests can shrink them on this module.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from sfdc_emulator import ids as idmod
from sfdc_emulator import tables
from sfdc_emulator.cdc import EventLayout
from sfdc_emulator.change_events import MAX_MERGED_IDS, CommitHeader, PendingEvent, build_events
from sfdc_emulator.clock import Clock
from sfdc_emulator.describe import SObjectDef
from sfdc_emulator.event_log import EventLog, StoredEvent
from sfdc_emulator.event_schemas import EventSchemas
from sfdc_emulator.faults import Faults
from sfdc_emulator.formulas import (
    CrossObjectFormula,
    children_to_refresh,
    cross_object_formulas,
    parents_to_refresh,
)
from sfdc_emulator.schema import OrgSchema, SchemaChange
from sfdc_emulator.tables import arrow_schema, arrow_type, duckdb_type
from sfdc_emulator.transaction import Mutation, Transaction
from sfdc_emulator.values import StoreError, coerce, derive, to_utc_naive

__all__ = [
    "MAX_MERGED_IDS",
    "OVERFLOW_LIMIT",
    "RETENTION_MS",
    "CommitResult",
    "Mutation",
    "OrgStore",
    "StoreError",
    "StoredEvent",
    "arrow_schema",
    "arrow_type",
    "coerce",
    "derive",
    "duckdb_type",
    "to_utc_naive",
]

# Salesforce retains CDC events 72 hours (reference §1.5).
RETENTION_MS = 72 * 3600 * 1000
# More changes than this in one transaction become GAP_OVERFLOW events (reference §2.5).
OVERFLOW_LIMIT = 100_000
_API_ORIGIN = "com/salesforce/api/rest/59.0"


@dataclass(frozen=True)
class CommitResult:
    """Outcome of one transaction. ``replay_ids`` lists the events published at commit
    time; events held back by a delivery-delay fault get their replay id when released.
    ``dropped_ids`` names the records whose events a drop fault lost (never published)."""

    ids: list[str]
    commit_ts: int
    replay_ids: list[int]
    dropped_ids: list[str] = field(default_factory=list)


class OrgStore:
    """The emulated org's data, write path and CDC log (see docs/emulator-internals.md)."""

    def __init__(
        self, state_dir: Path | str, clock: Clock | None = None, faults: Faults | None = None
    ) -> None:
        """Open (or create) the org in ``state_dir``."""
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock or Clock()
        self.faults = faults or Faults()
        self._lock = threading.RLock()
        self._conn = duckdb.connect(str(self.state_dir / "org.duckdb"))
        self._w = self._conn.cursor()
        tables.create_system_tables(self._w)
        meta = tables.read_meta(self._w)
        fresh = "schema" not in meta
        self.schema = OrgSchema.from_json(meta["schema"]) if not fresh else OrgSchema()
        if "clock_offset_ms" in meta:
            self.clock.offset_ms = max(self.clock.offset_ms, json.loads(meta["clock_offset_ms"]))
        self.ids = idmod.IdAllocator(json.loads(meta.get("id_counters", "{}")))
        self._schemas = EventSchemas(self.schema, self._w, self._lock, meta)
        self._log = EventLog(self._w, meta)
        self._last_ts = self._log.last_commit_ts
        # object -> commit ms of its last physical deletion (getDeleted's earliestDateAvailable)
        self._physical_deletes: dict[str, int] = json.loads(meta.get("physical_deletes", "{}"))
        self._formulas: tuple[list[SObjectDef], list[CrossObjectFormula]] = ([], [])
        for spec in self.schema.objects():
            tables.create_object_table(self._w, spec)
        if fresh:
            self._create_org()
        else:
            self.org_id = json.loads(meta["org_id"])
        users = json.loads(tables.get_meta(self._w, "system_users") or "{}")
        self.integration_user_id: str = users["integration"]
        self.automation_user_id: str = users["automation"]
        self.clock.on_change = self._persist_clock
        self.schema.on_change = self._apply_schema_change
        for spec in self.schema.objects():
            self._schemas.layout(spec.name)

    def _create_org(self) -> None:
        self.org_id = idmod.make_id("00D", 1)
        meta = {
            "schema": self.schema.to_json(),
            "org_id": json.dumps(self.org_id),
            "clock_offset_ms": json.dumps(self.clock.offset_ms),
        }
        tables.put_meta(self._w, meta)
        integration, automation = self.reserve_ids("User", 2).to_pylist()
        stamp = datetime.fromtimestamp(self.clock.now_ms() // 1000, UTC).replace(tzinfo=None)
        spec = self.schema.get("User")
        rows = _system_users(integration, automation, stamp)
        cols = {f.name: [r.get(f.name) for r in rows] for f in spec.stored_fields()}
        self.seed("User", pa.table(cols, schema=arrow_schema(spec)))
        users = json.dumps({"integration": integration, "automation": automation})
        tables.put_meta(self._w, {"system_users": users})

    def _persist_clock(self, offset: int) -> None:
        with self._lock:
            tables.put_meta(self._w, {"clock_offset_ms": json.dumps(offset)})

    def _apply_schema_change(self, change: SchemaChange) -> None:
        """Hook of OrgSchema: DDL + catalog persistence in one transaction."""
        with self._lock:
            self._w.execute("BEGIN TRANSACTION")
            try:
                tables.alter_object_table(self._w, change)
                tables.put_meta(self._w, {"schema": change.catalog_json})
                layout = EventLayout(change.new_spec)
                self._schemas.persist(layout, self._w)
                self._w.execute("COMMIT")
            except Exception:
                self._w.execute("ROLLBACK")
                raise
            self._schemas.learn(layout)

    def schema_json(self, schema_id: str) -> str:
        """The Avro schema text of ``schema_id`` (every id ever served); KeyError if unknown."""
        return self._schemas.schema_json(schema_id)

    def current_schema_id(self, entity: str) -> str:
        """The schema id of ``entity``'s events now."""
        return self._schemas.layout(entity).schema_id

    def read_cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor for a reader thread (sees committed data only; never write with it)."""
        return self._conn.cursor()

    def truth(self, object: str) -> pa.Table:
        """Every row (live and soft-deleted) with all stored fields, ordered by Id."""
        spec = self.schema.get(object)
        with self.read_cursor() as cur:
            return cur.sql(f"SELECT * FROM {tables.quote(spec.name)} ORDER BY Id").to_arrow_table()

    def get(self, object: str, record_id: str) -> dict[str, Any] | None:
        """One row (soft-deleted included) as ``{field: value}``, or None."""
        spec = self.schema.get(object)
        if not idmod.is_valid_id(record_id):
            return None
        rid = idmod.to_18(record_id)
        with self.read_cursor() as cur:
            return tables.fetch_rows(cur, spec.name, [rid]).get(rid)

    def count(self, object: str, include_deleted: bool = False) -> int:
        """How many rows ``object`` has (live only unless ``include_deleted``)."""
        spec = self.schema.get(object)
        where = "" if include_deleted else " WHERE NOT IsDeleted"
        with self.read_cursor() as cur:
            sql = f"SELECT count(*) FROM {tables.quote(spec.name)}{where}"
            row = cur.execute(sql).fetchone()
            assert row is not None  # an aggregate without GROUP BY returns one row
            return row[0]

    def events_after(
        self, replay_id: int, entities: Collection[str] | None, limit: int
    ) -> list[StoredEvent]:
        """Up to ``limit`` retained events with replay id > ``replay_id``, in replay order."""
        self._housekeeping()
        with self.read_cursor() as cur:
            return self._log.read_after(cur, replay_id, entities, limit)

    def latest_replay_id(self) -> int:
        """The highest replay id published so far (0 when none)."""
        self._housekeeping()
        return self._log.last_replay

    def earliest_retained_replay_id(self) -> int | None:
        """Lowest replay id still retained (72 h of emulator time), None when the log is empty."""
        with self._lock:
            now = self.clock.now_ms()
            self._log.release_due(now)
            self._log.expire(now, RETENTION_MS, force=True)
            return self._log.earliest()

    def flush_delayed(self) -> list[int]:
        """Publish every held-back event now (shutdown, tests)."""
        with self._lock:
            return self._log.release_due(self.clock.now_ms(), force=True)

    def _housekeeping(self) -> None:
        with self._lock:
            now = self.clock.now_ms()
            self._log.release_due(now)
            self._log.expire(now, RETENTION_MS)

    def reserve_ids(self, object: str, count: int) -> pa.StringArray:
        """``count`` fresh Ids for ``object`` (persisted: never handed out again)."""
        spec = self.schema.get(object)
        with self._lock:
            start = self.ids.reserve(spec.key_prefix, count)
            tables.put_meta(self._w, {"id_counters": json.dumps(self.ids.counters())})
        return idmod.make_ids(spec.key_prefix, start, count)

    def seed(self, object: str, table: pa.Table) -> int:
        """Bulk-insert historical rows (no CDC events: history from before CDC was enabled).
        Columns are matched by name; missing stored fields are null. Ids must come from
        :meth:`reserve_ids`."""
        spec = self.schema.get(object)
        stored = {f.name for f in spec.stored_fields()}
        unknown = [c for c in table.column_names if c not in stored]
        if unknown:
            raise StoreError(f"unknown fields on {spec.name}: {unknown}", "INVALID_FIELD", unknown)
        if "Id" not in table.column_names:
            raise StoreError(
                f"seed rows of {spec.name} need an Id column", "REQUIRED_FIELD_MISSING"
            )
        with self._lock:
            self._w.execute("BEGIN TRANSACTION")
            try:
                tables.insert_arrow(self._w, spec.name, table)
                for fx in self._cross_object():
                    if spec.name in (fx.object, fx.parent):
                        tables.refresh_formula(self._w, fx)
                self._w.execute("COMMIT")
            except Exception:
                self._w.execute("ROLLBACK")
                raise
        return table.num_rows

    def commit(
        self,
        mutations: Sequence[Mutation],
        *,
        user_id: str | None = None,
        automation: bool = False,
        origin: str = _API_ORIGIN,
    ) -> CommitResult:
        """THE write path: one transaction under one lock (see the module docstring)."""
        with self._lock:
            now = self.clock.now_ms()
            self._log.release_due(now)
            self._log.expire(now, RETENTION_MS)
            user = user_id or (self.automation_user_id if automation else self.integration_user_id)
            origin = "" if automation else origin
            return self._transact(mutations, user, origin, automation=automation)

    def gap(self, object: str, ids: Sequence[str], values: Mapping[str, Any]) -> CommitResult:
        """A change made outside the app server: rows change (SystemModstamp too, not
        LastModifiedDate), and GAP_UPDATE events name the records without field data."""
        with self._lock:
            self._log.release_due(self.clock.now_ms())
            updates = [Mutation("update", object, record_id, values) for record_id in ids]
            return self._transact(updates, self.automation_user_id, "", automation=True, gap=True)

    def _transact(
        self,
        mutations: Sequence[Mutation],
        user: str,
        origin: str,
        *,
        automation: bool,
        gap: bool = False,
    ) -> CommitResult:
        """Apply, build the events, write (the caller holds the lock)."""
        ts = self._next_ts()
        txn = Transaction(self.schema, self.ids, self._w, ts, user, automation, gap=gap)
        counters = self.ids.counters()
        try:
            txn.prefetch(mutations)
            for m in mutations:
                txn.apply(m)
            header = CommitHeader(ts, txn.commit_number, txn.transaction_key, origin, user)
            events = build_events(txn.changes, self._schemas.layout, header, OVERFLOW_LIMIT)
            replay_ids, dropped = self._write(txn, events)
        except Exception:
            self.ids.restore(counters)
            raise
        return CommitResult(txn.result_ids, ts, replay_ids, dropped)

    def _next_ts(self) -> int:
        # strictly increasing: two transactions never share a commitTimestamp, so the
        # (commitTimestamp, ...) order downstream equals commit order
        ts = max(self.clock.now_ms(), self._last_ts + 1)
        self._last_ts = ts
        return ts

    def _write(self, txn: Transaction, events: list[PendingEvent]) -> tuple[list[int], list[str]]:
        """Rows, Id counters and the events published now, in one DuckDB transaction;
        returns the replay ids published and the record ids of the events a fault lost."""
        publish_now: list[PendingEvent] = []
        held: list[tuple[int, PendingEvent]] = []
        dropped: list[str] = []
        for e in events:
            if self.faults.take_event_drop():
                # lost before it was persisted: no replay id, on no channel, ever
                dropped.extend(e.record_ids)
                continue
            delay = self.faults.take_event_delay()
            if delay is None:
                publish_now.append(e)
            else:
                held.append((txn.ts + round(delay * 1000), e))
        cur = self._w
        cur.execute("BEGIN TRANSACTION")
        try:
            for obj, dirty in txn.dirty.items():
                loaded = txn.loaded_ids.get(obj, set())
                spec = self.schema.get(obj)
                rest = _update_changed(cur, spec, dirty, txn.loaded_rows.get(obj, {}))
                tables.write_rows(cur, spec, rest, loaded)
            self._refresh_formulas(cur, txn)
            meta: dict[str, str] = {}
            if txn.created:
                meta["id_counters"] = json.dumps(self.ids.counters())
            purges = self._physical_deletes_of(txn)
            if purges:
                meta["physical_deletes"] = json.dumps({**self._physical_deletes, **purges})
            if meta:
                _update_meta(cur, meta)
            replay_ids = self._log.publish(publish_now, cur, own_txn=False)
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        self._physical_deletes.update(purges)
        self._log.hold(held)
        return replay_ids, dropped

    def _cross_object(self) -> list[CrossObjectFormula]:
        """The catalog's cross-object formulas (recomputed when the catalog changes)."""
        specs = self.schema.objects()
        cached_specs, cached = self._formulas
        if len(specs) != len(cached_specs) or any(
            a is not b for a, b in zip(specs, cached_specs, strict=True)
        ):
            cached = cross_object_formulas(specs)
            self._formulas = (specs, cached)
        return cached

    def _refresh_formulas(self, cur: duckdb.DuckDBPyConnection, txn: Transaction) -> None:
        """Re-evaluate cross-object formulas after the rows are written: for the children
        this commit created or re-pointed, and the children of parents whose source field
        it changed or whose row it purged. Only the formula column moves (no stamp, no
        event)."""
        for fx in self._cross_object():
            tables.refresh_formula(cur, fx, "Id", children_to_refresh(fx, txn.changes))
            parents = parents_to_refresh(fx, txn.changes, txn.dirty, txn.loaded_ids)
            tables.refresh_formula(cur, fx, fx.lookup, parents)

    @staticmethod
    def _physical_deletes_of(txn: Transaction) -> dict[str, int]:
        """Objects this commit purged rows of -> its commit ms."""
        return {
            obj: txn.ts
            for obj, dirty in txn.dirty.items()
            if any(row is None and rid in txn.loaded_ids.get(obj, ()) for rid, row in dirty.items())
        }

    def last_physical_delete(self, object: str) -> int | None:
        """Commit ms of ``object``'s last physical deletion (purge: hard delete or Recycle
        Bin emptied), None when none: the delete log is complete only after it."""
        with self._lock:
            return self._physical_deletes.get(self.schema.get(object).name)

    def advance_clock(self, seconds: float) -> None:
        """Move emulator time forward (persisted); old events expire on the next read."""
        self.clock.advance(seconds)
        self._log.expire_soon()

    def close(self) -> None:
        """Publish held events, checkpoint and close the database."""
        with self._lock:
            try:
                self._log.release_due(self.clock.now_ms(), force=True)
                self._w.execute("CHECKPOINT")
            finally:
                self.clock.on_change = None
                self.schema.on_change = None
                self._w.close()
                self._conn.close()

    def __enter__(self) -> OrgStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _update_meta(cur: duckdb.DuckDBPyConnection, items: Mapping[str, str]) -> None:
    """``_meta`` entries written as UPDATEs of their keys, new keys by
    :func:`tables.put_meta`: a commit that creates rows rewrites ``id_counters``, and an
    INSERT OR REPLACE (a delete and an insert on the key) took ~3 ms, an UPDATE ~1 ms."""
    new: dict[str, str] = {}
    for key, value in items.items():
        row = cur.execute("UPDATE _meta SET value = ? WHERE key = ?", [value, key]).fetchone()
        if not row or not row[0]:
            new[key] = value
    if new:
        tables.put_meta(cur, new)


def _update_changed(
    cur: duckdb.DuckDBPyConnection,
    spec: SObjectDef,
    dirty: Mapping[str, dict[str, Any] | None],
    before: Mapping[str, dict[str, Any]],
) -> dict[str, dict[str, Any] | None]:
    """Write a small commit's updated rows (a live traffic step's one or few) as UPDATEs of
    the columns whose values changed only; returns the rest of ``dirty`` for
    :func:`tables.write_rows`. Setting every column of a row cost ~4 ms at 10M Tasks, three
    times an UPDATE of the few a change touches; the rows written are the same."""
    updated = [i for i, r in dirty.items() if r is not None and i in before]
    if not updated or len(updated) > tables.SMALL_WRITE:
        return dict(dirty)
    names = [f.name for f in spec.stored_fields() if f.name != "Id"]
    for rid in updated:
        new, old = dirty[rid], before[rid]
        assert new is not None
        # != on Python values: a false "changed" only rewrites a column with its own value
        changed = [n for n in names if new[n] != old[n] or type(new[n]) is not type(old[n])]
        if changed:
            sets = ", ".join(f"{tables.quote(n)} = ?" for n in changed)
            cur.execute(
                f"UPDATE {tables.quote(spec.name)} SET {sets} WHERE Id = ?",
                [new[n] for n in changed] + [rid],
            )
    return {i: r for i, r in dirty.items() if i not in updated}


def _system_users(integration: str, automation: str, stamp: datetime) -> list[dict[str, Any]]:
    """The integration user (API writes) and the Automated Process user (automation)."""
    base = {
        "IsDeleted": False,
        "CreatedDate": stamp,
        "CreatedById": integration,
        "LastModifiedDate": stamp,
        "LastModifiedById": integration,
        "SystemModstamp": stamp,
        "IsActive": True,
        "TimeZoneSidKey": "America/Los_Angeles",
        "LocaleSidKey": "en_US",
        "EmailEncodingKey": "UTF-8",
        "LanguageLocaleKey": "en_US",
    }
    integration_user = {
        "Id": integration,
        "Username": "integration@sfdc-sync.emulator",
        "FirstName": "Integration",
        "LastName": "User",
        "Name": "Integration User",
        "Email": "integration@sfdc-sync.emulator",
        "Alias": "integ",
        "UserType": "Standard",
    }
    automation_user = {
        "Id": automation,
        "Username": "autoproc@sfdc-sync.emulator",
        "LastName": "Automated Process",
        "Name": "Automated Process",
        "Email": "autoproc@sfdc-sync.emulator",
        "Alias": "autoproc",
        "UserType": "AutomatedProcess",
    }
    return [{**base, **integration_user}, {**base, **automation_user}]

"""OrgStore: the org's state in DuckDB, THE write path, and the CDC event log.

One table per object (named exactly as the object, one column per stored field), a
``_meta`` key/value table (catalog, clock offset, Id counters, every Avro schema ever
served) and ``_events`` (the CDC log the Pub/Sub server reads). Every write goes through
:meth:`OrgStore.commit` (or :meth:`gap` / :meth:`seed` / schema changes) under one lock and
in one DuckDB transaction; readers use their own cursors and see committed data only.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa

from sfdc_emulator import ids as idmod
from sfdc_emulator.cdc import EventLayout
from sfdc_emulator.clock import Clock
from sfdc_emulator.describe import (
    LEAD_CONVERTED_STATUS,
    OPPORTUNITY_STAGES,
    TASK_CLOSED_STATUSES,
    FieldDef,
    SObjectDef,
)
from sfdc_emulator.faults import Faults
from sfdc_emulator.schema import OrgSchema, SchemaChange

# Salesforce retains CDC events 72 hours (reference §1.5).
RETENTION_MS = 72 * 3600 * 1000
# More changes than this in one transaction become GAP_OVERFLOW events (reference §2.5).
OVERFLOW_LIMIT = 100_000
# Merged events carry several recordIds; bounded so one event stays far below the 1 MB cap.
MAX_MERGED_IDS = 1000
# Expiring old events scans _events: at most once per this many emulator ms.
_EXPIRY_INTERVAL_MS = 5_000
_CENT = Decimal("0.01")
_MAX_CURRENCY = Decimal(10) ** 16
_SMALL_IN = 64
# Up to this many rows/events a write uses parameterised statements (about 1 ms each);
# above it, one Arrow-registered bulk statement is cheaper.
_SMALL_WRITE = 8
_NON_EVENT_FIELDS = frozenset({"Id", "IsDeleted", "SystemModstamp"})
_SYSTEM_WRITE = frozenset(
    {"Id", "IsDeleted", "CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById"}
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class StoreError(ValueError):
    """A write the org refuses; ``error_code`` is the Salesforce errorCode to report."""

    def __init__(self, message: str, error_code: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.fields = list(fields)


@dataclass(frozen=True)
class Mutation:
    """One DML operation of a transaction."""

    op: Literal["create", "update", "delete", "undelete", "purge"]
    object: str
    id: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommitResult:
    """Outcome of one transaction. ``replay_ids`` lists the events published at commit
    time; events held back by a delivery-delay fault get their replay id when released."""

    ids: list[str]
    commit_ts: int
    replay_ids: list[int]


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


_EVENT_COLUMNS = (
    "replay_id, entity, change_type, commit_ts, transaction_key, sequence_number, "
    "record_ids, schema_id, event_uuid, payload"
)


def _events_table(replay_ids: list[int], events: Sequence[_PendingEvent]) -> pa.Table:
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


def duckdb_type(f: FieldDef) -> str:
    """DuckDB column type of a stored field."""
    return {
        "boolean": "BOOLEAN",
        "int": "BIGINT",
        "double": "DOUBLE",
        "percent": "DOUBLE",
        "currency": "DECIMAL(18,2)",
        "date": "DATE",
        "datetime": "TIMESTAMP",
    }.get(f.type, "VARCHAR")


def arrow_type(f: FieldDef) -> pa.DataType:
    """Arrow type of a stored field (as :meth:`OrgStore.truth` returns it)."""
    return {
        "boolean": pa.bool_(),
        "int": pa.int64(),
        "double": pa.float64(),
        "percent": pa.float64(),
        "currency": pa.decimal128(18, 2),
        "date": pa.date32(),
        "datetime": pa.timestamp("us"),
    }.get(f.type, pa.string())


def arrow_schema(spec: SObjectDef) -> pa.Schema:
    return pa.schema([(f.name, arrow_type(f)) for f in spec.stored_fields()])


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def to_utc_naive(value: datetime) -> datetime:
    """Aware -> naive UTC; naive is taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def coerce(spec: SObjectDef, f: FieldDef, value: Any) -> Any:
    """An API value -> the stored Python value of field ``f`` (StoreError when invalid)."""
    if value is None:
        return None
    t = f.type
    where = f"{spec.name}.{f.name}"
    try:
        if t == "boolean":
            if isinstance(value, str):
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                return value.lower() == "true"
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError(value)
        if t == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value) if isinstance(value, str) else value
            if int(number) != number:
                raise ValueError(value)
            return int(number)
        if t in ("double", "percent"):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if t == "currency":
            if isinstance(value, bool):
                raise ValueError(value)
            amount = Decimal(str(value)).quantize(_CENT)
            if abs(amount) >= _MAX_CURRENCY:
                raise StoreError(f"number too large for {where}", "NUMBER_OUTSIDE_VALID_RANGE")
            return amount
        if t == "date":
            if isinstance(value, datetime):
                return to_utc_naive(value).date()
            if isinstance(value, date):
                return value
            return date.fromisoformat(str(value)[:10])
        if t == "datetime":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = datetime.fromtimestamp(value / 1000, UTC)
            elif isinstance(value, str):
                value = datetime.fromisoformat(value)
            elif not isinstance(value, datetime):
                raise ValueError(value)
            # Salesforce keeps datetimes to the second
            return to_utc_naive(value).replace(microsecond=0)
        if t == "multipicklist" and isinstance(value, (list, tuple)):
            value = ";".join(str(v) for v in value)
        if not isinstance(value, str):
            if isinstance(value, (int, float, Decimal)) and t in ("string", "textarea"):
                value = str(value)
            else:
                raise ValueError(value)
    except StoreError:
        raise
    except (ValueError, TypeError, InvalidOperation, OverflowError) as exc:
        raise StoreError(
            f"{where}: value not of required type {t}",
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            [f.name],
        ) from exc
    if t in ("id", "reference"):
        if not idmod.is_valid_id(value):
            raise StoreError(f"{where}: malformed id", "MALFORMED_ID", [f.name])
        value = idmod.to_18(value)
        prefixes = {idmod.KEY_PREFIXES.get(target) for target in f.reference_to} - {None}
        if prefixes and value[:3] not in prefixes:
            raise StoreError(
                f"{where}: id value of incorrect type", "FIELD_INTEGRITY_EXCEPTION", [f.name]
            )
        return value
    if f.length and len(value) > f.length:
        raise StoreError(
            f"{where}: data value too large (max length={f.length})", "STRING_TOO_LONG", [f.name]
        )
    if t == "email" and not _EMAIL.match(value):
        raise StoreError(f"{where}: invalid email address", "INVALID_EMAIL_ADDRESS", [f.name])
    return value


def derive(
    spec: SObjectDef,
    row: dict[str, Any],
    old: Mapping[str, Any] | None,
    explicit: Collection[str],
    stamp: datetime,
) -> None:
    """Recompute the fields Salesforce derives from others (in place). ``old`` is None on
    create; ``explicit`` names the fields the caller set in this mutation."""
    has = row.__contains__
    name = spec.name

    def changed(col: str) -> bool:
        return old is None or old.get(col) != row.get(col)

    if has("Name") and has("LastName") and spec.field("Name").calculated:
        row["Name"] = " ".join(p for p in (row.get("FirstName"), row.get("LastName")) if p) or None
    if name == "Opportunity":
        stage = OPPORTUNITY_STAGES.get(row.get("StageName") or "")
        if stage is not None and changed("StageName"):
            probability, forecast, closed, won = stage
            if has("Probability") and "Probability" not in explicit:
                row["Probability"] = float(probability)
            if has("ForecastCategoryName") and "ForecastCategoryName" not in explicit:
                row["ForecastCategoryName"] = forecast
            if has("IsClosed"):
                row["IsClosed"] = closed
            if has("IsWon"):
                row["IsWon"] = won
        if has("ExpectedRevenue"):
            amount, prob = row.get("Amount"), row.get("Probability")
            row["ExpectedRevenue"] = (
                None
                if amount is None or prob is None
                else (amount * Decimal(str(prob)) / 100).quantize(_CENT)
            )
        close = row.get("CloseDate")
        if has("FiscalYear"):
            row["FiscalYear"] = close.year if close else None
        if has("FiscalQuarter"):
            row["FiscalQuarter"] = (close.month - 1) // 3 + 1 if close else None
    elif name == "OpportunityLineItem":
        qty, unit = row.get("Quantity"), row.get("UnitPrice")
        if unit is None and qty and row.get("TotalPrice") is not None:
            unit = row["UnitPrice"] = (row["TotalPrice"] / Decimal(str(qty))).quantize(_CENT)
        if has("TotalPrice") and qty is not None and unit is not None:
            discount = Decimal(str(row.get("Discount") or 0))
            total = unit * Decimal(str(qty)) * (1 - discount / 100)
            row["TotalPrice"] = total.quantize(_CENT)
        if has("ListPrice") and old is None and row.get("ListPrice") is None:
            row["ListPrice"] = unit
    elif name == "Task":
        closed = row.get("Status") in TASK_CLOSED_STATUSES
        if has("IsClosed"):
            row["IsClosed"] = closed
        if has("IsHighPriority"):
            row["IsHighPriority"] = row.get("Priority") == "High"
        if has("CompletedDateTime") and changed("Status"):
            row["CompletedDateTime"] = stamp if closed else None
    elif name == "Event":
        start = row.get("StartDateTime")
        if start is None and row.get("ActivityDateTime") is not None:
            start = row["StartDateTime"] = row["ActivityDateTime"]
        if has("ActivityDateTime"):
            row["ActivityDateTime"] = start
        if has("ActivityDate"):
            row["ActivityDate"] = start.date() if start else None
        if has("EndDateTime"):
            minutes = row.get("DurationInMinutes")
            row["EndDateTime"] = (
                start + timedelta(minutes=minutes) if start and minutes is not None else None
            )
    elif name == "Lead":
        converted = row.get("Status") == LEAD_CONVERTED_STATUS
        if has("IsConverted"):
            row["IsConverted"] = converted
        if has("ConvertedDate") and changed("Status"):
            row["ConvertedDate"] = stamp.date() if converted else None


@dataclass
class _Change:
    object: str
    change_type: str
    record_id: str
    fields: list[str]  # UPDATE: changed stored fields
    nulled: list[str]
    row: dict[str, Any] | None  # values for the body


@dataclass
class _PendingEvent:
    entity: str
    change_type: str
    commit_ts: int
    transaction_key: str
    sequence_number: int
    record_ids: list[str]
    schema_id: str
    event_uuid: str
    payload: bytes


class OrgStore:
    """The emulated org's data, write path and CDC log (see docs/emulator-internals.md)."""

    def __init__(
        self, state_dir: Path | str, clock: Clock | None = None, faults: Faults | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock or Clock()
        self.faults = faults or Faults()
        self._lock = threading.RLock()
        self._conn = duckdb.connect(str(self.state_dir / "org.duckdb"))
        self._w = self._conn.cursor()
        self._w.execute("CREATE TABLE IF NOT EXISTS _meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        self._w.execute(
            "CREATE TABLE IF NOT EXISTS _events (replay_id BIGINT PRIMARY KEY, entity VARCHAR, "
            "change_type VARCHAR, commit_ts BIGINT, transaction_key VARCHAR, "
            "sequence_number INTEGER, record_ids VARCHAR[], schema_id VARCHAR, "
            "event_uuid VARCHAR, payload BLOB)"
        )
        meta = dict(self._w.execute("SELECT key, value FROM _meta").fetchall())
        fresh = "schema" not in meta
        self.schema = OrgSchema.from_json(meta["schema"]) if not fresh else OrgSchema()
        if "clock_offset_ms" in meta:
            self.clock.offset_ms = max(self.clock.offset_ms, json.loads(meta["clock_offset_ms"]))
        self.ids = idmod.IdAllocator(json.loads(meta.get("id_counters", "{}")))
        self._schemas: dict[str, str] = {
            k.split(":", 1)[1]: v for k, v in meta.items() if k.startswith("avro_schema:")
        }
        # replay ids never repeat: the log's max, or the highest id retention ever expired
        last = self._one("SELECT max(replay_id), max(commit_ts) FROM _events")
        floor = int(json.loads(meta.get("replay_floor", "0")))
        self._last_replay = max(last[0] or 0, floor)
        self._last_ts = last[1] or 0
        self._layouts: dict[str, tuple[int, EventLayout]] = {}
        self._held: list[tuple[int, int, _PendingEvent]] = []
        self._held_seq = 0
        self._last_expiry_ms = 0
        for spec in self.schema.objects():
            self._create_table(spec)
        if fresh:
            self.org_id = idmod.make_id("00D", 1)
            self._put_meta(
                {
                    "schema": self.schema.to_json(),
                    "org_id": json.dumps(self.org_id),
                    "clock_offset_ms": json.dumps(self.clock.offset_ms),
                }
            )
            self._seed_system_users()
        else:
            self.org_id = json.loads(meta["org_id"])
        users = json.loads(self._get_meta("system_users") or "{}")
        self.integration_user_id: str = users["integration"]
        self.automation_user_id: str = users["automation"]
        self.clock.on_change = self._persist_clock
        self.schema.on_change = self._apply_schema_change
        for spec in self.schema.objects():
            self._layout(spec.name)

    # ------------------------------------------------------------------ setup helpers

    def _create_table(self, spec: SObjectDef) -> None:
        cols = ", ".join(f"{_q(f.name)} {duckdb_type(f)}" for f in spec.stored_fields())
        self._w.execute(f"CREATE TABLE IF NOT EXISTS {_q(spec.name)} ({cols})")
        self._w.execute(
            f"CREATE INDEX IF NOT EXISTS {_q(spec.name + '_id')} ON {_q(spec.name)} (Id)"
        )

    def _one(self, sql: str, params: list[Any] | None = None) -> tuple | None:
        # fetchall, not fetchone: DuckDB 2 refuses register() on a cursor whose last
        # result was not read to the end
        rows = self._w.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def _get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM _meta WHERE key = ?", [key])
        return None if row is None else row[0]

    def _put_meta(
        self, items: Mapping[str, str], cur: duckdb.DuckDBPyConnection | None = None
    ) -> None:
        cur = cur or self._w
        params: list[str] = []
        for k, v in items.items():
            params += [k, v]
        values = ", ".join(["(?, ?)"] * len(items))
        cur.execute(f"INSERT OR REPLACE INTO _meta VALUES {values}", params)

    def _persist_clock(self, offset: int) -> None:
        with self._lock:
            self._put_meta({"clock_offset_ms": json.dumps(offset)})

    def _seed_system_users(self) -> None:
        """The integration user (API writes) and the Automated Process user (automation)."""
        spec = self.schema.get("User")
        integration, automation = self.reserve_ids("User", 2).to_pylist()
        stamp = datetime.fromtimestamp(self.clock.now_ms() // 1000, UTC).replace(tzinfo=None)
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
        rows = [
            {
                **base,
                "Id": integration,
                "Username": "integration@sfdc-sync.emulator",
                "FirstName": "Integration",
                "LastName": "User",
                "Name": "Integration User",
                "Email": "integration@sfdc-sync.emulator",
                "Alias": "integ",
                "UserType": "Standard",
            },
            {
                **base,
                "Id": automation,
                "Username": "autoproc@sfdc-sync.emulator",
                "LastName": "Automated Process",
                "Name": "Automated Process",
                "Email": "autoproc@sfdc-sync.emulator",
                "Alias": "autoproc",
                "UserType": "AutomatedProcess",
            },
        ]
        cols = {f.name: [r.get(f.name) for r in rows] for f in spec.stored_fields()}
        self.seed("User", pa.table(cols, schema=arrow_schema(spec)))
        self._put_meta(
            {"system_users": json.dumps({"integration": integration, "automation": automation})}
        )

    # ------------------------------------------------------------------ schema / layouts

    def _layout(self, obj: str) -> EventLayout:
        spec = self.schema.get(obj)
        version = self.schema.version(spec.name)
        cached = self._layouts.get(spec.name)
        if cached is not None and cached[0] == version:
            return cached[1]
        layout = EventLayout(spec)
        with self._lock:
            if layout.schema_id not in self._schemas:
                self._put_meta({f"avro_schema:{layout.schema_id}": layout.schema_json})
                self._schemas[layout.schema_id] = layout.schema_json
            self._layouts[spec.name] = (version, layout)
        return layout

    def _apply_schema_change(self, change: SchemaChange) -> None:
        """Hook of OrgSchema: DDL + catalog persistence in one transaction."""
        table = _q(change.object)
        index = _q(change.object + "_id")
        with self._lock:
            self._w.execute("BEGIN TRANSACTION")
            try:
                if change.kind in ("add_field", "remove_field"):
                    # DuckDB refuses ALTER TABLE on a table that has an index
                    self._w.execute(f"DROP INDEX IF EXISTS {index}")
                    if change.kind == "add_field":
                        col = f"{_q(change.field.name)} {duckdb_type(change.field)}"
                        self._w.execute(f"ALTER TABLE {table} ADD COLUMN {col}")
                    else:
                        self._w.execute(f"ALTER TABLE {table} DROP COLUMN {_q(change.field.name)}")
                    self._w.execute(f"CREATE INDEX {index} ON {table} (Id)")
                self._put_meta({"schema": change.catalog_json})
                layout = EventLayout(change.new_spec)
                if layout.schema_id not in self._schemas:
                    self._put_meta({f"avro_schema:{layout.schema_id}": layout.schema_json})
                self._w.execute("COMMIT")
            except Exception:
                self._w.execute("ROLLBACK")
                raise
            self._schemas[layout.schema_id] = layout.schema_json

    def schema_json(self, schema_id: str) -> str:
        """The Avro schema text of ``schema_id`` (every id ever served); KeyError if unknown."""
        try:
            return self._schemas[schema_id]
        except KeyError:
            raise KeyError(f"unknown schema id {schema_id!r}") from None

    def current_schema_id(self, entity: str) -> str:
        return self._layout(entity).schema_id

    # ------------------------------------------------------------------ reads

    def read_cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor for a reader thread (sees committed data only; never write with it)."""
        return self._conn.cursor()

    def truth(self, object: str) -> pa.Table:
        """Every row (live and soft-deleted) with all stored fields, ordered by Id."""
        spec = self.schema.get(object)
        cur = self.read_cursor()
        try:
            return cur.sql(f"SELECT * FROM {_q(spec.name)} ORDER BY Id").to_arrow_table()
        finally:
            cur.close()

    def get(self, object: str, record_id: str) -> dict[str, Any] | None:
        """One row (soft-deleted included) as ``{field: value}``, or None."""
        spec = self.schema.get(object)
        if not idmod.is_valid_id(record_id):
            return None
        cur = self.read_cursor()
        try:
            rows = self._fetch_rows(cur, spec.name, [idmod.to_18(record_id)])
        finally:
            cur.close()
        return rows.get(idmod.to_18(record_id))

    def count(self, object: str, include_deleted: bool = False) -> int:
        spec = self.schema.get(object)
        where = "" if include_deleted else " WHERE NOT IsDeleted"
        cur = self.read_cursor()
        try:
            return cur.execute(f"SELECT count(*) FROM {_q(spec.name)}{where}").fetchone()[0]
        finally:
            cur.close()

    def _fetch_rows(
        self, cur: duckdb.DuckDBPyConnection, table: str, record_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        if not record_ids:
            return {}
        if len(record_ids) == 1:
            result = cur.execute(f"SELECT * FROM {_q(table)} WHERE Id = ?", list(record_ids))
        elif len(record_ids) <= _SMALL_IN:
            marks = ", ".join("?" * len(record_ids))
            result = cur.execute(
                f"SELECT * FROM {_q(table)} WHERE Id IN ({marks})", list(record_ids)
            )
        else:
            ids_table = pa.table({"Id": pa.array(list(record_ids), pa.string())})
            cur.register("__fetch_ids", ids_table)
            try:
                result = cur.execute(
                    f"SELECT t.* FROM {_q(table)} t SEMI JOIN __fetch_ids s ON t.Id = s.Id"
                )
                rows = result.fetchall()
                names = [d[0] for d in result.description]
            finally:
                cur.unregister("__fetch_ids")
            return {r[0]: dict(zip(names, r, strict=True)) for r in rows}
        names = [d[0] for d in result.description]
        out = {}
        for r in result.fetchall():
            row = dict(zip(names, r, strict=True))
            out[row["Id"]] = row
        return out

    # ------------------------------------------------------------------ events

    def _release_due_locked(self, now_ms: int, force: bool = False) -> list[int]:
        if not self._held:
            return []
        due = [h for h in self._held if force or h[0] <= now_ms]
        if not due:
            return []
        self._held = [h for h in self._held if not (force or h[0] <= now_ms)]
        due.sort(key=lambda h: (h[0], h[1]))
        return self._publish_locked([h[2] for h in due], self._w, own_txn=True)

    def _publish_locked(
        self, events: Sequence[_PendingEvent], cur: duckdb.DuckDBPyConnection, own_txn: bool
    ) -> list[int]:
        if not events:
            return []
        first = self._last_replay + 1
        replay_ids = list(range(first, first + len(events)))
        if own_txn:
            cur.execute("BEGIN TRANSACTION")
        try:
            if len(events) <= _SMALL_WRITE:
                for rid, e in zip(replay_ids, events, strict=True):
                    cur.execute(
                        f"INSERT INTO _events ({_EVENT_COLUMNS}) VALUES ({_EVENT_MARKS})",
                        [
                            rid,
                            e.entity,
                            e.change_type,
                            e.commit_ts,
                            e.transaction_key,
                            e.sequence_number,
                            e.record_ids,
                            e.schema_id,
                            e.event_uuid,
                            e.payload,
                        ],
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
        self._last_replay = replay_ids[-1]
        return replay_ids

    def _expire_locked(self, now_ms: int, force: bool = False) -> None:
        if not force and now_ms - self._last_expiry_ms < _EXPIRY_INTERVAL_MS:
            return
        self._last_expiry_ms = now_ms
        cutoff = now_ms - RETENTION_MS
        row = self._one("SELECT max(replay_id) FROM _events WHERE commit_ts < ?", [cutoff])
        if row and row[0] is not None:
            # retention removes a prefix of the log, so the retained ids stay contiguous
            self._w.execute("BEGIN TRANSACTION")
            self._w.execute("DELETE FROM _events WHERE replay_id <= ?", [row[0]])
            self._put_meta({"replay_floor": json.dumps(int(row[0]))})
            self._w.execute("COMMIT")

    def _housekeeping(self) -> None:
        with self._lock:
            now = self.clock.now_ms()
            self._release_due_locked(now)
            self._expire_locked(now)

    def flush_delayed(self) -> list[int]:
        """Publish every held-back event now (shutdown, tests)."""
        with self._lock:
            return self._release_due_locked(self.clock.now_ms(), force=True)

    def events_after(
        self, replay_id: int, entities: Collection[str] | None, limit: int
    ) -> list[StoredEvent]:
        """Up to ``limit`` retained events with replay id > ``replay_id``, in replay order."""
        self._housekeeping()
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
        cur = self.read_cursor()
        try:
            rows = cur.execute(sql, params).fetchall()
        finally:
            cur.close()
        return [
            StoredEvent(r[0], r[1], r[2], r[3], r[4], r[5], list(r[6]), r[7], r[8], bytes(r[9]))
            for r in rows
        ]

    def latest_replay_id(self) -> int:
        """The highest replay id published so far (0 when none)."""
        self._housekeeping()
        return self._last_replay

    def earliest_retained_replay_id(self) -> int | None:
        """Lowest replay id still retained (72 h of emulator time), None when the log is empty."""
        with self._lock:
            now = self.clock.now_ms()
            self._release_due_locked(now)
            self._expire_locked(now, force=True)
            row = self._one("SELECT min(replay_id) FROM _events")
        return None if row is None else row[0]

    # ------------------------------------------------------------------ writes

    def reserve_ids(self, object: str, count: int) -> pa.StringArray:
        """``count`` fresh Ids for ``object`` (persisted: never handed out again)."""
        spec = self.schema.get(object)
        with self._lock:
            start = self.ids.reserve(spec.key_prefix, count)
            self._put_meta({"id_counters": json.dumps(self.ids.counters())})
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
                self._w.register("__seed", table)
                self._w.execute(f"INSERT INTO {_q(spec.name)} BY NAME SELECT * FROM __seed")
                self._w.unregister("__seed")
                self._w.execute("COMMIT")
            except Exception:
                self._w.execute("ROLLBACK")
                raise
        return table.num_rows

    def _next_ts(self) -> int:
        # strictly increasing: two transactions never share a commitTimestamp, so the
        # (commitTimestamp, ...) order downstream equals commit order
        ts = max(self.clock.now_ms(), self._last_ts + 1)
        self._last_ts = ts
        return ts

    def commit(
        self,
        mutations: Sequence[Mutation],
        *,
        user_id: str | None = None,
        automation: bool = False,
        origin: str = "com/salesforce/api/rest/59.0",
    ) -> CommitResult:
        """THE write path: one transaction under one lock (see the module docstring)."""
        with self._lock:
            now = self.clock.now_ms()
            self._release_due_locked(now)
            self._expire_locked(now)
            ts = self._next_ts()
            user = user_id or (self.automation_user_id if automation else self.integration_user_id)
            txn = _Transaction(self, ts, user, automation)
            counters = self.ids.counters()
            try:
                txn.prefetch(mutations)
                for m in mutations:
                    txn.apply(m)
                events = txn.build_events(origin="" if automation else origin, user=user)
                replay_ids = self._write(txn, events, ts)
            except Exception:
                self.ids.restore(counters)
                raise
            return CommitResult(txn.result_ids, ts, replay_ids)

    def gap(self, object: str, ids: Sequence[str], values: Mapping[str, Any]) -> CommitResult:
        """A change made outside the app server: rows change (SystemModstamp too, not
        LastModifiedDate), and GAP_UPDATE events name the records without field data."""
        with self._lock:
            now = self.clock.now_ms()
            self._release_due_locked(now)
            ts = self._next_ts()
            txn = _Transaction(self, ts, self.automation_user_id, automation=True, gap=True)
            counters = self.ids.counters()
            try:
                updates = [Mutation("update", object, record_id, values) for record_id in ids]
                txn.prefetch(updates)
                for m in updates:
                    txn.apply(m)
                events = txn.build_events(origin="", user=self.automation_user_id)
                replay_ids = self._write(txn, events, ts)
            except Exception:
                self.ids.restore(counters)
                raise
            return CommitResult(txn.result_ids, ts, replay_ids)

    def _write(self, txn: _Transaction, events: list[_PendingEvent], ts: int) -> list[int]:
        publish_now: list[_PendingEvent] = []
        held: list[tuple[int, _PendingEvent]] = []
        for e in events:
            delay = self.faults.take_event_delay()
            if delay is None:
                publish_now.append(e)
            else:
                held.append((ts + round(delay * 1000), e))
        cur = self._w
        cur.execute("BEGIN TRANSACTION")
        try:
            for obj, dirty in txn.dirty.items():
                self._write_rows(cur, obj, dirty, txn.loaded_ids.get(obj, set()))
            if txn.created:
                self._put_meta({"id_counters": json.dumps(self.ids.counters())}, cur)
            replay_ids = self._publish_locked(publish_now, cur, own_txn=False)
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        for release, e in held:
            self._held_seq += 1
            self._held.append((release, self._held_seq, e))
        return replay_ids

    def _write_rows(
        self,
        cur: duckdb.DuckDBPyConnection,
        obj: str,
        dirty: Mapping[str, dict[str, Any] | None],
        loaded: set[str],
    ) -> None:
        spec = self.schema.get(obj)
        fields = spec.stored_fields()
        names = [f.name for f in fields]
        updates = [r for i, r in dirty.items() if i in loaded and r is not None]
        inserts = [r for i, r in dirty.items() if i not in loaded and r is not None]
        purged = [i for i, r in dirty.items() if i in loaded and r is None]
        if purged:
            self._delete_ids(cur, obj, purged)
        if len(updates) <= _SMALL_WRITE:
            sets = ", ".join(f"{_q(n)} = ?" for n in names[1:])
            for r in updates:
                cur.execute(
                    f"UPDATE {_q(obj)} SET {sets} WHERE Id = ?",
                    [r[n] for n in names[1:]] + [r["Id"]],
                )
        else:
            self._delete_ids(cur, obj, [r["Id"] for r in updates])
            inserts = updates + inserts
        if len(inserts) <= _SMALL_WRITE:
            cols = ", ".join(_q(n) for n in names)
            marks = ", ".join("?" * len(names))
            for r in inserts:
                cur.execute(
                    f"INSERT INTO {_q(obj)} ({cols}) VALUES ({marks})", [r[n] for n in names]
                )
        else:
            table = pa.table(
                [pa.array([r[f.name] for r in inserts], arrow_type(f)) for f in fields],
                schema=arrow_schema(spec),
            )
            cur.register("__rows", table)
            cur.execute(f"INSERT INTO {_q(obj)} BY NAME SELECT * FROM __rows")
            cur.unregister("__rows")

    def _delete_ids(
        self, cur: duckdb.DuckDBPyConnection, table: str, record_ids: list[str]
    ) -> None:
        if len(record_ids) == 1:
            cur.execute(f"DELETE FROM {_q(table)} WHERE Id = ?", record_ids)
        elif len(record_ids) <= _SMALL_IN:
            marks = ", ".join("?" * len(record_ids))
            cur.execute(f"DELETE FROM {_q(table)} WHERE Id IN ({marks})", record_ids)
        else:
            cur.register("__del_ids", pa.table({"Id": pa.array(record_ids, pa.string())}))
            cur.execute(f"DELETE FROM {_q(table)} WHERE Id IN (SELECT Id FROM __del_ids)")
            cur.unregister("__del_ids")

    def advance_clock(self, seconds: float) -> None:
        """Move emulator time forward (persisted); old events expire on the next read."""
        self.clock.advance(seconds)
        self._last_expiry_ms = 0

    def close(self) -> None:
        """Publish held events, checkpoint and close the database."""
        with self._lock:
            try:
                self._release_due_locked(self.clock.now_ms(), force=True)
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


class _Transaction:
    """The in-memory working set of one commit: rows, changes, then events."""

    def __init__(
        self, store: OrgStore, ts: int, user: str, automation: bool, gap: bool = False
    ) -> None:
        self.store = store
        self.ts = ts
        self.stamp = datetime.fromtimestamp(ts // 1000, UTC).replace(tzinfo=None)
        self.user = user
        self.automation = automation
        self.gap = gap
        self.rows: dict[str, dict[str, dict[str, Any] | None]] = {}
        self.loaded_ids: dict[str, set[str]] = {}
        self.dirty: dict[str, dict[str, dict[str, Any] | None]] = {}
        self.changes: list[_Change] = []
        self.result_ids: list[str] = []
        self.created = False
        # commitNumber (the SCN) is diagnostic only; commit timestamps are unique per store
        self.commit_number = ts * 1000
        self.transaction_key = str(uuid.uuid4())

    def _row(self, spec: SObjectDef, record_id: str | None) -> tuple[str, dict[str, Any]]:
        if record_id is None or not idmod.is_valid_id(record_id):
            raise StoreError(f"{spec.name}: malformed id {record_id!r}", "MALFORMED_ID")
        rid = idmod.to_18(record_id)
        if rid[:3] != spec.key_prefix:
            raise StoreError(
                f"{spec.name}: id {rid} is not a {spec.name} id", "INVALID_CROSS_REFERENCE_KEY"
            )
        cache = self.rows.setdefault(spec.name, {})
        if rid not in cache:
            fetched = self.store._fetch_rows(self.store._w, spec.name, [rid])
            cache[rid] = fetched.get(rid)
            if rid in fetched:
                self.loaded_ids.setdefault(spec.name, set()).add(rid)
        row = cache[rid]
        if row is None:
            raise StoreError(
                f"entity is deleted or does not exist: {spec.name} {rid}",
                "ENTITY_IS_DELETED",
            )
        return rid, row

    def prefetch(self, mutations: Sequence[Mutation]) -> None:
        by_obj: dict[str, list[str]] = {}
        for m in mutations:
            if m.op != "create" and m.id and idmod.is_valid_id(m.id):
                by_obj.setdefault(self.store.schema.get(m.object).name, []).append(
                    idmod.to_18(m.id)
                )
        for obj, wanted in by_obj.items():
            cache = self.rows.setdefault(obj, {})
            missing = [i for i in dict.fromkeys(wanted) if i not in cache]
            fetched = self.store._fetch_rows(self.store._w, obj, missing)
            for rid in missing:
                cache[rid] = fetched.get(rid)
            self.loaded_ids.setdefault(obj, set()).update(fetched)

    def _values(self, spec: SObjectDef, values: Mapping[str, Any], op: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in values.items():
            try:
                f = spec.field(name)
            except KeyError:
                raise StoreError(
                    f"No such column '{name}' on sobject of type {spec.name}",
                    "INVALID_FIELD",
                    [name],
                ) from None
            if not self.gap:
                allowed = f.createable if op == "create" else f.updateable
                if not allowed or f.name in _SYSTEM_WRITE:
                    raise StoreError(
                        f"Unable to create/update fields: {f.name}. Please check the security "
                        f"settings of this field and verify that it is read/write for your "
                        f"user profile or permission set.",
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        [f.name],
                    )
            elif f.name in _SYSTEM_WRITE or not f.stored:
                raise StoreError(f"cannot change {spec.name}.{f.name}", "INVALID_FIELD", [f.name])
            if not f.stored:
                raise StoreError(
                    f"{spec.name}.{f.name} is a compound field: set its components",
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    [f.name],
                )
            out[f.name] = coerce(spec, f, value)
        return out

    def _mark(self, obj: str, rid: str, row: dict[str, Any] | None) -> None:
        self.dirty.setdefault(obj, {})[rid] = row
        self.rows.setdefault(obj, {})[rid] = row

    def apply(self, m: Mutation) -> None:
        spec = self.store.schema.get(m.object)
        obj = spec.name
        if m.op == "create":
            self._create(spec, m)
            return
        rid, row = self._row(spec, m.id)
        if m.op == "update":
            values = self._values(spec, m.values, "update")
            if row["IsDeleted"]:
                raise StoreError(f"entity is deleted: {obj} {rid}", "ENTITY_IS_DELETED")
            old = dict(row)
            new = dict(row)
            new.update(values)
            if not self.automation:
                new["LastModifiedDate"] = self.stamp
                new["LastModifiedById"] = self.user
            new["SystemModstamp"] = self.stamp
            derive(spec, new, old, values.keys(), self.stamp)
            self._check_required(spec, new)
            changed = [
                f.name
                for f in spec.stored_fields()
                if f.name not in _NON_EVENT_FIELDS and new[f.name] != old[f.name]
            ]
            self._mark(obj, rid, new)
            if changed:
                nulled = [c for c in changed if new[c] is None]
                kind = "GAP_UPDATE" if self.gap else "UPDATE"
                self.changes.append(_Change(obj, kind, rid, changed, nulled, new))
        elif m.op == "delete":
            if row["IsDeleted"]:
                raise StoreError(f"entity is deleted: {obj} {rid}", "ENTITY_IS_DELETED")
            new = dict(row, IsDeleted=True, SystemModstamp=self.stamp)
            if not self.automation:
                new["LastModifiedDate"] = self.stamp
                new["LastModifiedById"] = self.user
            self._mark(obj, rid, new)
            self.changes.append(_Change(obj, "DELETE", rid, [], [], None))
        elif m.op == "undelete":
            if not row["IsDeleted"]:
                raise StoreError(
                    f"entity is not in the recycle bin: {obj} {rid}", "UNDELETE_FAILED"
                )
            new = dict(row, IsDeleted=False, SystemModstamp=self.stamp)
            if not self.automation:
                new["LastModifiedDate"] = self.stamp
                new["LastModifiedById"] = self.user
            self._mark(obj, rid, new)
            self.changes.append(_Change(obj, "UNDELETE", rid, [], [], new))
        elif m.op == "purge":
            self._mark(obj, rid, None)
        else:
            raise StoreError(f"unknown operation {m.op!r}", "INVALID_OPERATION")
        self.result_ids.append(rid)

    def _create(self, spec: SObjectDef, m: Mutation) -> None:
        if m.id is not None:
            raise StoreError("Id not specified in a create call", "INVALID_FIELD", ["Id"])
        values = self._values(spec, m.values, "create")
        row: dict[str, Any] = {}
        for f in spec.stored_fields():
            default = f.default_value
            row[f.name] = coerce(spec, f, default) if default is not None else None
        row.update(values)
        rid = self.store.ids.next(spec.key_prefix)
        self.created = True
        row.update(
            Id=rid,
            IsDeleted=False,
            CreatedDate=self.stamp,
            CreatedById=self.user,
            LastModifiedDate=self.stamp,
            LastModifiedById=self.user,
            SystemModstamp=self.stamp,
        )
        if "OwnerId" in row and row["OwnerId"] is None:
            row["OwnerId"] = self.user
        derive(spec, row, None, values.keys(), self.stamp)
        self._check_required(spec, row)
        self._mark(spec.name, rid, row)
        self.changes.append(_Change(spec.name, "CREATE", rid, [], [], row))
        self.result_ids.append(rid)

    @staticmethod
    def _check_required(spec: SObjectDef, row: Mapping[str, Any]) -> None:
        missing = [
            f.name
            for f in spec.stored_fields()
            if not f.nillable and row.get(f.name) is None and f.name not in ("Id",)
        ]
        if missing:
            raise StoreError(
                f"Required fields are missing: [{', '.join(missing)}]",
                "REQUIRED_FIELD_MISSING",
                missing,
            )

    # ------------------------------------------------------------------ events

    def build_events(self, origin: str, user: str) -> list[_PendingEvent]:
        groups: list[dict[str, Any]] = []
        merge_index: dict[tuple, dict[str, Any]] = {}
        overflow: dict[str, None] = {}
        cost = 0
        for ch in self.changes:
            cost += len(ch.fields) if ch.change_type == "UPDATE" else 1
            if cost > OVERFLOW_LIMIT:
                overflow.setdefault(ch.object, None)
                continue
            key: tuple | None = None
            if ch.change_type in ("UPDATE", "GAP_UPDATE"):
                body_key = (
                    ()
                    if ch.change_type == "GAP_UPDATE"
                    else tuple((f, ch.row[f]) for f in ch.fields)  # type: ignore[index]
                )
                key = (ch.object, ch.change_type, body_key, tuple(ch.nulled))
            elif ch.change_type == "DELETE":
                key = (ch.object, "DELETE")
            group = merge_index.get(key) if key is not None else None
            if group is not None and len(group["ids"]) < MAX_MERGED_IDS:
                group["ids"].append(ch.record_id)
                continue
            group = {"change": ch, "ids": [ch.record_id]}
            groups.append(group)
            if key is not None:
                merge_index[key] = group
        events: list[_PendingEvent] = []
        seq = 0
        for group in groups:
            ch: _Change = group["change"]
            layout = self.store._layout(ch.object)
            seq += 1
            if ch.change_type == "UPDATE":
                body = layout.body(ch.row or {}, only=set(ch.fields))
                changed = layout.bitmaps(ch.fields)
                nulled = layout.bitmaps(ch.nulled)
            elif ch.change_type in ("CREATE", "UNDELETE"):
                body = layout.body(ch.row or {})
                changed, nulled = [], []
            else:
                body = layout.body({}, only=())
                changed, nulled = [], []
            number = 1 if ch.change_type.startswith("GAP_") else seq
            events.append(
                self._event(
                    layout,
                    ch.object,
                    ch.change_type,
                    group["ids"],
                    number,
                    body,
                    changed,
                    nulled,
                    origin,
                    user,
                )
            )
        for obj in overflow:
            layout = self.store._layout(obj)
            seq += 1
            body = layout.body({}, only=())
            events.append(
                self._event(layout, obj, "GAP_OVERFLOW", [], seq, body, [], [], origin, user)
            )
        return events

    def _event(
        self,
        layout: EventLayout,
        entity: str,
        change_type: str,
        record_ids: list[str],
        sequence: int,
        body: Mapping[str, Any],
        changed: list[str],
        nulled: list[str],
        origin: str,
        user: str,
    ) -> _PendingEvent:
        header = {
            "entityName": entity,
            "recordIds": record_ids,
            "changeType": change_type,
            "changeOrigin": origin,
            "transactionKey": self.transaction_key,
            "sequenceNumber": sequence,
            "commitTimestamp": self.ts,
            "commitNumber": self.commit_number,
            "commitUser": user,
            "nulledFields": nulled,
            "diffFields": [],
            "changedFields": changed,
        }
        return _PendingEvent(
            entity=entity,
            change_type=change_type,
            commit_ts=self.ts,
            transaction_key=self.transaction_key,
            sequence_number=sequence,
            record_ids=list(record_ids),
            schema_id=layout.schema_id,
            event_uuid=str(uuid.uuid4()),
            payload=layout.encode(header, body),
        )


def iter_ids(table: pa.Table) -> Iterable[str]:
    """Ids of a truth() table (helper for tests and traffic)."""
    return table.column("Id").to_pylist()

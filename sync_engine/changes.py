"""The change model: one row per (observed change, record id), and how it is versioned.

A change batch is an Arrow table with `META_SCHEMA`'s columns, then `is_deleted`, then one
typed column per field of the object (`batch_schema(spec)`). The builders below make rows
from what the clients observe (a CDC event, a Bulk/REST snapshot row, a detected delete),
so every producer computes `change_id` and `version` the same way (DESIGN §4).

Version: a fixed-width string whose byte order is the total order of §4.

    event:    <ms:15><0><sha1(transactionKey):16><sequenceNumber:10><replay id hex:32><cid:8>
    snapshot: <ms:15><1><content hash:16><cid:8>
    refresh:  <R - 1:15><1><content hash:16><cid:8>   (formula fields only: `formula_change`)
    fill:     <0:15><1><read start ms:16><cid:8>   (below every real change: `fill_change`)

`ms` is the commit timestamp (events) or clamp(R - 1, S*1000, S*1000 + 999) (snapshots);
`1` after the ms makes a snapshot beat an event on an exact tie; `cid` (8 hex of the
change id) makes two different changes of one record never tie, so the fold never depends
on arrival order. transactionKey is hashed to a fixed width: its own order is arbitrary
anyway, only equality (same transaction -> sequenceNumber decides) carries meaning.

change_id: CDC = hash(event uuid, record id); snapshot = hash(record id, version ms,
content hash). The version ms stands in for SystemModstamp: it *is* SystemModstamp's second
unless the read started inside that second, and then two reads of the same content are
different observations (different versions), so they must not share an id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pyarrow as pa

from sync_engine.spec import IS_DELETED_COLUMN, IS_DELETED_FIELD, ObjectSpec

SOURCES = ("cdc", "bulk", "rest", "delete_scan")
# FILL: a column-only read that gives fields added to an object their value for the
# records already synced (DESIGN §5 schema evolution; `fill_change`).
FILL = "FILL"
# REFRESH: a read of formula fields whose value changed without any change of the record
# itself (a cross-object formula reading a parent; `formula_change`).
REFRESH = "REFRESH"
CHANGE_TYPES = ("CREATE", "UPDATE", "DELETE", "UNDELETE", "SNAPSHOT", FILL, REFRESH)
GAP_PREFIX = "GAP_"
# Change types that set every field (DESIGN §4); UPDATE sets changed + nulled fields and
# DELETE only IsDeleted.
FULL_CHANGE_TYPES = ("CREATE", "UNDELETE", "SNAPSHOT")

_MS_WIDTH = 15  # epoch ms up to year 33658
_SEQ_WIDTH = 10  # sequenceNumber is an Avro int (< 2**31)
_REPLAY_HEX_WIDTH = 32  # Pub/Sub replay ids are opaque bytes; 16 bytes covers them
EPOCH = dt.datetime(1970, 1, 1)
# A fill's version ms. Salesforce has no change at the epoch, so every fill sorts below
# every real change: it is the field's initial value, and any real change of the field
# (CDC, or a full snapshot) overrides it, whenever it was read. Versions below
# FIRST_REAL_VERSION are fills; the SQL folds test exactly that.
FILL_MS = 0
FIRST_REAL_VERSION = f"{FILL_MS + 1:0{_MS_WIDTH}d}"

META_SCHEMA = pa.schema(
    [
        pa.field("change_id", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("change_type", pa.string(), nullable=False),
        pa.field("version", pa.string(), nullable=False),
        pa.field("version_ts", pa.timestamp("us"), nullable=False),
        pa.field("commit_ts", pa.timestamp("us")),
        pa.field("system_modstamp", pa.timestamp("us")),
        pa.field("transaction_key", pa.string()),
        pa.field("sequence_number", pa.int64()),
        pa.field("replay_id", pa.string()),
        pa.field("schema_id", pa.string()),
        pa.field("set_fields", pa.list_(pa.string()), nullable=False),
        pa.field("payload", pa.string()),
        pa.field("batch_id", pa.string()),
        pa.field("ingested_at", pa.timestamp("us")),
        pa.field("change_date", pa.date32(), nullable=False),
    ]
)


def batch_schema(spec: ObjectSpec) -> pa.Schema:
    """The Arrow schema of a change batch for `spec`."""
    fields = [pa.field(IS_DELETED_COLUMN, pa.bool_())]
    fields += [pa.field(f.column, f.wtype.arrow()) for f in spec.fields]
    return pa.schema([*META_SCHEMA, *fields])


def _sha(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def ms_of(ts: dt.datetime) -> int:
    """Epoch milliseconds of a naive-UTC or aware datetime."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(dt.UTC).replace(tzinfo=None)
    return (ts - EPOCH) // dt.timedelta(milliseconds=1)


def ts_of(ms: int) -> dt.datetime:
    """Naive-UTC datetime of epoch milliseconds."""
    return EPOCH + dt.timedelta(milliseconds=ms)


def snapshot_version_ms(read_started_ms: int, system_modstamp_ms: int) -> int:
    """clamp(R - 1, S*1000, S*1000 + 999) with S = SystemModstamp's second (DESIGN §4)."""
    s = system_modstamp_ms // 1000
    return min(max(read_started_ms - 1, s * 1000), s * 1000 + 999)


def _replay_hex(replay_id: bytes | int | str | None) -> str:
    if replay_id is None:
        return ""
    if isinstance(replay_id, bytes):
        return replay_id.hex()
    if isinstance(replay_id, int):
        return f"{replay_id:x}"
    return replay_id.lower()


def _check_ms(ms: int) -> None:
    if not 0 <= ms < 10**_MS_WIDTH:
        raise ValueError(f"version timestamp {ms} ms is outside the supported range")


def event_version(
    commit_ms: int,
    transaction_key: str | None,
    sequence_number: int | None,
    replay_id: bytes | int | str | None,
    change_id: str,
) -> str:
    """The sortable version of a CDC event row."""
    _check_ms(commit_ms)
    replay = _replay_hex(replay_id)
    if len(replay) > _REPLAY_HEX_WIDTH:
        raise ValueError(f"replay id longer than {_REPLAY_HEX_WIDTH // 2} bytes")
    tk = hashlib.sha1((transaction_key or "").encode()).hexdigest()[:16]
    return (
        f"{commit_ms:0{_MS_WIDTH}d}0{tk}{(sequence_number or 0):0{_SEQ_WIDTH}d}"
        f"{replay:0>{_REPLAY_HEX_WIDTH}}{change_id[:8]}"
    )


# The first character of a snapshot version's uniqueness part. Two reads of one state at
# one version ms (a REST re-read after CDC, then a Bulk re-backfill) are two observations;
# the earlier version represents the state in scd2, so a fixed rank, not the ids' hashes,
# decides which: REST first, so re-backfilling what CDC's re-read already saw changes
# nothing (test_re_backfill_of_a_30_day_range_after_live_traffic_changes_nothing).
SNAPSHOT_SOURCE_RANK = {"rest": "0", "bulk": "1", "delete_scan": "1"}


def snapshot_version(
    version_ms: int, content_hash: str, change_id: str, source: str = "bulk"
) -> str:
    """The sortable version of a snapshot row (beats an event of the same ms)."""
    _check_ms(version_ms)
    rank = SNAPSHOT_SOURCE_RANK[source]
    return f"{version_ms:0{_MS_WIDTH}d}1{content_hash[:16]}{rank}{change_id[:7]}"


def version_ms(version: str) -> int:
    """The millisecond part of a version."""
    return int(version[:_MS_WIDTH])


def cdc_change_id(event_uuid: str, record_id: str) -> str:
    """Deterministic id of (CDC event, record): the same event always gives the same id."""
    return _sha("cdc", event_uuid, record_id)[:32]


def snapshot_change_id(
    record_id: str, version_ms_: int, content_hash_: str, source: str = "bulk"
) -> str:
    """Deterministic id of a snapshot observation (see the module docstring).

    A REST read is another observation than a Bulk read of the same state at the same
    version ms (the re-read after CDC, then a re-backfill): with one id, raw would keep
    whichever arrived first and current's `_source` would depend on arrival order (found
    by `test_chunked_batches_mixing_new_and_existing_records_equal_the_reference_fold`).
    Bulk ids keep their original form, so existing raw rows keep their ids.
    """
    parts = ["snapshot", record_id, str(version_ms_), content_hash_]
    if source != "bulk":
        parts.append(source)
    return _sha(*parts)[:32]


def _canonical(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value else "NaN"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return value


def content_hash(spec: ObjectSpec, values: Mapping[str, Any], is_deleted: bool) -> str:
    """Hash of a snapshot's content: every spec field (missing = null) and IsDeleted."""
    body = {f.name: _canonical(values.get(f.name)) for f in spec.fields}
    body[IS_DELETED_FIELD] = bool(is_deleted)
    return _sha(json.dumps(body, sort_keys=True, default=str))


def _payload(values: Mapping[str, Any], payload: str | None) -> str:
    if payload is not None:
        return payload
    return json.dumps({k: _canonical(v) for k, v in values.items()}, sort_keys=True, default=str)


def _row(
    spec: ObjectSpec,
    *,
    change_id: str,
    record_id: str,
    source: str,
    change_type: str,
    version: str,
    set_fields: Sequence[str],
    values: Mapping[str, Any],
    is_deleted: bool | None,
    payload: str | None,
    commit_ts: dt.datetime | None = None,
    system_modstamp: dt.datetime | None = None,
    transaction_key: str | None = None,
    sequence_number: int | None = None,
    replay_id: str | None = None,
    schema_id: str | None = None,
) -> dict[str, Any]:
    vts = ts_of(version_ms(version))
    row: dict[str, Any] = {
        "change_id": change_id,
        "record_id": record_id,
        "source": source,
        "change_type": change_type,
        "version": version,
        "version_ts": vts,
        "commit_ts": commit_ts,
        "system_modstamp": system_modstamp,
        "transaction_key": transaction_key,
        "sequence_number": sequence_number,
        "replay_id": replay_id,
        "schema_id": schema_id,
        "set_fields": list(set_fields),
        "payload": _payload(values, payload),
        "batch_id": None,
        "ingested_at": None,
        "change_date": vts.date(),
        IS_DELETED_COLUMN: is_deleted,
    }
    for f in spec.fields:
        row[f.column] = values.get(f.name)
    return row


def cdc_change(
    spec: ObjectSpec,
    *,
    event_uuid: str,
    record_id: str,
    change_type: str,
    commit_ms: int,
    transaction_key: str | None = None,
    sequence_number: int | None = None,
    replay_id: bytes | int | str | None = None,
    values: Mapping[str, Any] | None = None,
    changed_fields: Iterable[str] = (),
    nulled_fields: Iterable[str] = (),
    schema_id: str | None = None,
    payload: str | None = None,
    commit_user: str | None = None,
) -> dict[str, Any]:
    """One row for one record of a decoded CDC event.

    CREATE/UNDELETE set every field (IsDeleted false); UPDATE sets changed + nulled fields
    (nulled ones to null); DELETE sets only IsDeleted (true); GAP_* sets nothing and is
    kept in raw only (the caller re-fetches those ids as snapshots).

    Salesforce stamps SystemModstamp on every DML (deletes included) but CDC events omit
    it; every applied change type therefore also sets it, to the commit second, so current
    shows when the record last changed. SystemModstamp also moves without any event (a
    save that changed no field), so it is not part of what makes an scd2 version
    (`spec.UNVERSIONED_COLUMNS`): a later re-read that differs only there opens none.

    A delete by a user also stamps LastModifiedDate/ById, which a header-only DELETE event
    cannot carry: with `commit_user` given they are set to the commit second and that user.
    """
    values = dict(values or {})
    change_id = cdc_change_id(event_uuid, record_id)
    stamp_field = next((f.name for f in spec.fields if f.name.lower() == "systemmodstamp"), None)
    version = event_version(commit_ms, transaction_key, sequence_number, replay_id, change_id)
    # Formula fields are null in every event (CDC developer guide): an event must not set
    # them; a read (the re-read after CDC, a snapshot, a formula refresh) does.
    carried = [f.name for f in spec.fields if not f.calculated]
    if change_type in ("CREATE", "UNDELETE"):
        set_fields = [*carried, IS_DELETED_FIELD]
        is_deleted: bool | None = False
    elif change_type == "UPDATE":
        # Only fields the spec knows: an event that names a field added since the spec's
        # describe cannot carry its value here (it lives on in `payload`), so it must not
        # set the field (to null) either; the column-only fill brings the value.
        known = set(carried)
        nulled = [n for n in nulled_fields if n in known]
        set_fields = sorted({*changed_fields, *nulled} & known)
        for name in nulled:
            values[name] = None
        is_deleted = None
    elif change_type == "DELETE":
        set_fields, is_deleted, values = [IS_DELETED_FIELD], True, {}
        names = {f.name.lower(): f.name for f in spec.fields}
        if commit_user and "lastmodifieddate" in names and "lastmodifiedbyid" in names:
            values = {
                names["lastmodifieddate"]: ts_of(commit_ms - commit_ms % 1000),
                names["lastmodifiedbyid"]: commit_user,
            }
            set_fields = [IS_DELETED_FIELD, *values]
    elif change_type.startswith(GAP_PREFIX):
        set_fields, is_deleted, values = [], None, {}
    else:
        raise ValueError(f"unknown CDC change type {change_type!r}")
    if stamp_field is not None and not change_type.startswith(GAP_PREFIX):
        values[stamp_field] = ts_of(commit_ms - commit_ms % 1000)
        if stamp_field not in set_fields:
            set_fields = [*set_fields, stamp_field]
    return _row(
        spec,
        change_id=change_id,
        record_id=record_id,
        source="cdc",
        change_type=change_type,
        version=version,
        set_fields=set_fields,
        values=values,
        is_deleted=is_deleted,
        payload=payload,
        commit_ts=ts_of(commit_ms),
        transaction_key=transaction_key,
        sequence_number=sequence_number,
        replay_id=_replay_hex(replay_id) or None,
        schema_id=schema_id,
    )


def snapshot_change(
    spec: ObjectSpec,
    *,
    record_id: str,
    values: Mapping[str, Any],
    system_modstamp: dt.datetime,
    read_started_at: dt.datetime,
    is_deleted: bool = False,
    source: str = "bulk",
    payload: str | None = None,
) -> dict[str, Any]:
    """One row for a record read by Bulk/REST (queryAll: deleted rows included)."""
    if source not in ("bulk", "rest"):
        raise ValueError(f"snapshot source must be bulk or rest, not {source!r}")
    vms = snapshot_version_ms(ms_of(read_started_at), ms_of(system_modstamp))
    chash = content_hash(spec, values, is_deleted)
    change_id = snapshot_change_id(record_id, vms, chash, source)
    return _row(
        spec,
        change_id=change_id,
        record_id=record_id,
        source=source,
        change_type="SNAPSHOT",
        version=snapshot_version(vms, chash, change_id, source),
        set_fields=[f.name for f in spec.fields] + [IS_DELETED_FIELD],
        values=values,
        is_deleted=is_deleted,
        payload=payload,
        system_modstamp=system_modstamp,
    )


def fill_change(
    spec: ObjectSpec,
    *,
    record_id: str,
    fields: Sequence[str],
    values: Mapping[str, Any],
    read_started_at: dt.datetime,
    system_modstamp: dt.datetime | None = None,
) -> dict[str, Any]:
    """One row of a column-only read that fills `fields` (just added to the object).

    It sets only those fields, with version ms `FILL_MS` (below every real change) and
    the read's start as tie-breaker, so a later fill beats an earlier one and any real
    change of the field beats both. The folds never open an scd2 version for a fill:
    its value is the field's value in every version until a real change sets it.
    """
    known = {f.name for f in spec.fields}
    unknown = [n for n in fields if n not in known]
    if unknown or not fields:
        raise ValueError(f"{spec.name} fill must name known fields, not {list(fields)}")
    body = {n: _canonical(values.get(n)) for n in sorted(fields)}
    read_ms = ms_of(read_started_at)
    _check_ms(read_ms)
    chash = _sha(FILL, json.dumps(body, sort_keys=True, default=str))
    change_id = _sha(FILL, record_id, str(read_ms), chash)[:32]
    version = f"{FILL_MS:0{_MS_WIDTH}d}1{read_ms:016d}{change_id[:8]}"
    return _row(
        spec,
        change_id=change_id,
        record_id=record_id,
        source="bulk",
        change_type=FILL,
        version=version,
        set_fields=sorted(fields),
        values={n: values.get(n) for n in fields},
        is_deleted=None,
        payload=None,
        system_modstamp=system_modstamp,
    )


def formula_change(
    spec: ObjectSpec,
    *,
    record_id: str,
    values: Mapping[str, Any],
    read_started_at: dt.datetime,
) -> dict[str, Any]:
    """One row of a formula refresh: the formula fields `values` names, read at R.

    A cross-object formula (a child field computed from its parent) changes when the
    parent does, with no event and no SystemModstamp change on the child, so the snapshot
    rule (version pinned to the child's stamp second) cannot order two reads of it. No
    event ever sets a formula field, so only reads do, and the later read is the truth:
    the version ms is the read's start R - 1 (snapshot priority on a tie). A full snapshot
    of an unchanged record read after a refresh keeps its stamp-pinned version and so
    does not override the refresh's formula values; the next refresh brings the newest.
    Callers emit it only for records whose formula values differ from current, and it
    opens an scd2 version only when the state really changed (like any change).
    """
    calculated = set(spec.calculated_fields)
    fields = sorted(values)
    if not fields or not set(fields) <= calculated:
        raise ValueError(f"{spec.name} formula refresh must name formula fields, not {fields}")
    vms = ms_of(read_started_at) - 1
    _check_ms(vms)
    body = {n: _canonical(values[n]) for n in fields}
    chash = _sha(REFRESH, json.dumps(body, sort_keys=True, default=str))
    change_id = _sha(REFRESH, record_id, str(vms), chash)[:32]
    return _row(
        spec,
        change_id=change_id,
        record_id=record_id,
        source="bulk",
        change_type=REFRESH,
        version=snapshot_version(vms, chash, change_id),
        set_fields=fields,
        values=dict(values),
        is_deleted=None,
        payload=None,
    )


def is_fill_version(version: str) -> bool:
    """True for the version of a fill (`fill_change`)."""
    return version < FIRST_REAL_VERSION


def deleted_change(
    spec: ObjectSpec,
    *,
    record_id: str,
    deleted_at: dt.datetime,
    read_started_at: dt.datetime,
) -> dict[str, Any]:
    """A delete found by getDeleted or an Id-set diff: sets only IsDeleted, snapshot-ordered."""
    vms = snapshot_version_ms(ms_of(read_started_at), ms_of(deleted_at))
    chash = _sha("deleted")
    change_id = snapshot_change_id(record_id, vms, chash)
    return _row(
        spec,
        change_id=change_id,
        record_id=record_id,
        source="delete_scan",
        change_type="DELETE",
        version=snapshot_version(vms, chash, change_id),
        set_fields=[IS_DELETED_FIELD],
        values={},
        is_deleted=True,
        payload=json.dumps({"Id": record_id, "deletedDate": deleted_at.isoformat()}),
        system_modstamp=deleted_at,
    )


def build_batch(
    spec: ObjectSpec,
    rows: Iterable[Mapping[str, Any]],
    batch_id: str | None = None,
) -> pa.Table:
    """Assemble rows (from the builders above) into a typed change batch."""
    rows = list(rows)
    schema = batch_schema(spec)
    columns = {name: [r.get(name) for r in rows] for name in schema.names}
    if batch_id is not None:
        columns["batch_id"] = [batch_id] * len(rows)
    return pa.table(columns, schema=schema)


def conform_batch(spec: ObjectSpec, batch: pa.Table) -> pa.Table:
    """Cast a batch (Arrow, or `polars.DataFrame.to_arrow()`) to `batch_schema(spec)`.

    Missing field columns become nulls (a describe that added a field after the batch was
    read); unknown columns are dropped here and live on in `payload`.
    """
    schema = batch_schema(spec)
    missing_meta = [f.name for f in META_SCHEMA if f.name not in batch.column_names]
    missing_meta = [n for n in missing_meta if n not in ("batch_id", "ingested_at")]
    if missing_meta:
        raise ValueError(f"{spec.name} change batch lacks columns {missing_meta}")
    arrays = []
    for f in schema:
        if f.name in batch.column_names:
            arrays.append(batch.column(f.name).cast(f.type))
        else:
            arrays.append(pa.nulls(batch.num_rows, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)

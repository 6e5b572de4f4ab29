"""The warehouse side of an audited erase of a data subject's records (DESIGN §6).

A subject is a set of record Ids of one object (given, or resolved from a field value such
as an Email). `delete_subject` removes their rows from raw (`sfdc_raw`, the one exception
to its immutability), current (`sfdc`), history (`sfdc_history`) and quarantine
(`sfdc_quarantine`); `record_erasure` writes the audit row to `sfdc_meta.erasures`, which
nothing ever deletes from or updates. Ids never appear in clear outside the layer tables:
the audit and the suppression list hold SHA-256 digests of the 18-character Id.

Suppression: an erased Id's digest goes to `sfdc_meta.erasure_suppressions`; the raw step
drops suppressed records from every landed batch before validation (`without_suppressed`),
so a re-backfill, a replayed CDC event or a `queryAll` that still sees the record in
Salesforce's recycle bin cannot bring it back. The landing store side (rewriting landed
files) lives in `sfdc_assets/erase.py`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from sync_engine.dialect import dialect_of
from sync_engine.warehouse import RECORD_ID_RE, Warehouse, qualified, validate_identifier

ERASURES = "erasures"
SUPPRESSIONS = "erasure_suppressions"
# The 18-character Id's suffix encodes, per 5-character chunk, which letters are upper case.
_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
# An erase names a subject's few records; a list this long is a mistake (a whole table?).
MAX_IDS = 10_000
MAX_TEXT = 500
COUNT_COLUMNS = (
    "raw_rows",
    "current_rows",
    "history_rows",
    "quarantine_rows",
    "landed_rows",
    "landed_files",
    "validated_rows",
    "validated_files",
)


class InvalidErasureRequestError(ValueError):
    """An erase request that cannot be executed as given (nothing was changed)."""


def _suffix(base: str) -> str:
    out = []
    for chunk in range(3):
        flags = sum(1 << j for j, c in enumerate(base[chunk * 5 : chunk * 5 + 5]) if c.isupper())
        out.append(_SUFFIX_ALPHABET[flags])
    return "".join(out)


def canonical_id(value: str) -> str:
    """The 18-character, correctly cased form of a 15- or 18-character Salesforce Id.

    The warehouse holds Ids as the API returns them (18 characters); a requester may paste
    the 15-character form from a URL, or an 18-character Id whose case a tool changed
    (the suffix records the case, so it is restored).
    """
    if not isinstance(value, str) or not RECORD_ID_RE.match(value):
        raise InvalidErasureRequestError(
            "a record Id must be 15 or 18 letters and digits (the value is not repeated here)"
        )
    base = value[:15]
    if len(value) == 18:
        chars = list(base.lower())
        for chunk, letter in enumerate(value[15:].upper()):
            if letter not in _SUFFIX_ALPHABET:
                raise InvalidErasureRequestError("an 18-character Id has an invalid suffix")
            flags = _SUFFIX_ALPHABET.index(letter)
            for j in range(5):
                if flags >> j & 1:
                    chars[chunk * 5 + j] = chars[chunk * 5 + j].upper()
        base = "".join(chars)
        if _suffix(base) != value[15:].upper():
            raise InvalidErasureRequestError("an 18-character Id does not match its suffix")
    return base + _suffix(base)


def id_hash(record_id: str) -> str:
    """SHA-256 hex of the canonical Id: what the audit and suppression list keep."""
    return hashlib.sha256(canonical_id(record_id).encode()).hexdigest()


def _hash_raw(record_id: str) -> str:
    # Batch rows hold Ids exactly as the API gave them (18 characters, canonical).
    return hashlib.sha256(record_id.encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def ensure_tables(warehouse: Warehouse) -> None:
    """Create `sfdc_meta.erasures` and `sfdc_meta.erasure_suppressions` if absent."""
    q = dialect_of(warehouse).q
    meta = warehouse.schema_names.meta
    # The adapter decides whether schemas may be created (least privilege on Snowflake).
    warehouse.ensure_schemas()
    counts = ", ".join(f"{q(c)} BIGINT NOT NULL" for c in COUNT_COLUMNS)
    warehouse.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified(warehouse, meta, ERASURES)} ("
        f"{q('erasure_id')} VARCHAR NOT NULL, {q('object_name')} VARCHAR NOT NULL, "
        f"{q('match_field')} VARCHAR NOT NULL, {q('id_count')} BIGINT NOT NULL, "
        f"{q('id_hashes')} VARCHAR NOT NULL, {q('requested_by')} VARCHAR NOT NULL, "
        f"{q('reason')} VARCHAR NOT NULL, {q('run_id')} VARCHAR, {q('status')} VARCHAR NOT NULL, "
        f"{counts}, {q('suppressed')} BOOLEAN NOT NULL, {q('error')} VARCHAR, "
        f"{q('requested_at')} TIMESTAMP NOT NULL, {q('finished_at')} TIMESTAMP NOT NULL)"
    )
    warehouse.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified(warehouse, meta, SUPPRESSIONS)} ("
        f"{q('object_name')} VARCHAR NOT NULL, {q('id_hash')} VARCHAR NOT NULL, "
        f"{q('erasure_id')} VARCHAR NOT NULL, {q('created_at')} TIMESTAMP NOT NULL)"
    )


def _columns(warehouse: Warehouse, schema: str, table: str) -> set[str]:
    """Lower-case column names of a table (empty: the table does not exist)."""
    p = dialect_of(warehouse).param
    rows = warehouse.query(
        "SELECT column_name FROM information_schema.columns "
        f"WHERE UPPER(table_schema) = UPPER({p}) AND UPPER(table_name) = UPPER({p})",
        [schema, table],
    )
    return {r[0].lower() for r in rows}


def layer_tables(warehouse: Warehouse, table: str) -> dict[str, tuple[str, str]]:
    """Layer -> (schema, id column) of the object's tables that exist."""
    s = warehouse.schema_names
    layers = {
        "raw": (s.raw, "record_id"),
        "current": (s.current, "id"),
        "history": (s.history, "id"),
        "quarantine": (s.quarantine, "record_id"),
    }
    return {
        layer: (schema, col)
        for layer, (schema, col) in layers.items()
        if col in _columns(warehouse, schema, table)
    }


def resolve_ids(warehouse: Warehouse, table: str, field_name: str, value: str) -> list[str]:
    """Ids of the object's records whose `field_name` equals `value` in raw, current or
    history; text compares case-insensitively (`John@X.com` finds `john@x.com`)."""
    column = validate_identifier(field_name).lower()
    if not isinstance(value, str) or not value.strip():
        raise InvalidErasureRequestError(f"{field_name}: an empty value matches nothing")
    d = dialect_of(warehouse)
    p, q = d.param, d.q
    selects, params = [], []
    for layer, (schema, id_col) in layer_tables(warehouse, table).items():
        if layer == "quarantine" or column not in _columns(warehouse, schema, table):
            continue
        selects.append(
            f"SELECT {q(id_col)} AS rid FROM {qualified(warehouse, schema, table)} "
            f"WHERE LOWER(CAST({q(column)} AS VARCHAR)) = LOWER({p})"
        )
        params.append(value)
    if not selects:
        raise InvalidErasureRequestError(
            f"{table}: no layer table has a column for field {field_name}"
        )
    rows = warehouse.query(f"SELECT DISTINCT rid FROM ({' UNION ALL '.join(selects)}) x", params)
    return sorted(r[0] for r in rows if r[0] is not None)


def _id_list(warehouse: Warehouse, ids: Sequence[str]) -> str:
    return dialect_of(warehouse).id_list([canonical_id(i) for i in ids])


def count_subject(warehouse: Warehouse, table: str, ids: Sequence[str]) -> dict[str, int]:
    """Rows of the subject per layer (what `delete_subject` would remove)."""
    q = dialect_of(warehouse).q
    out = {f"{layer}_rows": 0 for layer in ("raw", "current", "history", "quarantine")}
    if not ids:
        return out
    for layer, (schema, col) in layer_tables(warehouse, table).items():
        out[f"{layer}_rows"] = int(
            warehouse.query(
                f"SELECT COUNT(*) FROM {qualified(warehouse, schema, table)} "
                f"WHERE {q(col)} IN ({_id_list(warehouse, ids)})"
            )[0][0]
        )
    return out


def delete_subject(warehouse: Warehouse, table: str, ids: Sequence[str]) -> dict[str, int]:
    """Delete the subject's rows from every layer; returns rows deleted per layer.

    Runs inside the caller's transaction (with the audit row), so it is all or nothing.
    """
    q = dialect_of(warehouse).q
    counts = count_subject(warehouse, table, ids)
    if not ids:
        return counts
    for layer, (schema, col) in layer_tables(warehouse, table).items():
        if counts[f"{layer}_rows"]:
            warehouse.execute(
                f"DELETE FROM {qualified(warehouse, schema, table)} "
                f"WHERE {q(col)} IN ({_id_list(warehouse, ids)})"
            )
    return counts


@dataclass
class ErasureAudit:
    """One audit row: who asked, why, what (hashed), when, and the rows removed per layer."""

    erasure_id: str
    object_name: str
    match_field: str
    id_hashes: tuple[str, ...]
    requested_by: str
    reason: str
    requested_at: dt.datetime
    run_id: str | None = None
    status: str = "pending"
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_COLUMNS, 0))
    suppressed: bool = False
    error: str | None = None
    finished_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        validate_identifier(self.object_name)
        validate_identifier(self.match_field)
        for name in ("requested_by", "reason"):
            text = getattr(self, name)
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
                raise InvalidErasureRequestError(
                    f"{name} is required (1-{MAX_TEXT} characters): who asked, and the ticket"
                )

    @property
    def changed(self) -> int:
        """Rows removed anywhere (0: a repeated erase, nothing left to remove)."""
        return sum(v for k, v in self.counts.items() if k.endswith("_rows"))


def record_erasure(warehouse: Warehouse, audit: ErasureAudit) -> None:
    """Insert the audit row (insert-only: the erase never touches sfdc_meta)."""
    d = dialect_of(warehouse)
    p, q = d.param, d.q
    finished = audit.finished_at or _now()
    counts = ", ".join(str(int(audit.counts.get(c, 0))) for c in COUNT_COLUMNS)
    columns = [
        "erasure_id",
        "object_name",
        "match_field",
        "id_count",
        "id_hashes",
        "requested_by",
        "reason",
        "run_id",
        "status",
        *COUNT_COLUMNS,
        "suppressed",
        "error",
        "requested_at",
        "finished_at",
    ]
    warehouse.execute(
        f"INSERT INTO {qualified(warehouse, warehouse.schema_names.meta, ERASURES)} "
        f"({', '.join(q(c) for c in columns)}) VALUES ({p}, {p}, {p}, "
        f"{len(audit.id_hashes)}, {p}, {p}, {p}, {p}, {p}, {counts}, "
        f"{'TRUE' if audit.suppressed else 'FALSE'}, {p}, "
        f"{d.timestamp_literal(audit.requested_at)}, {d.timestamp_literal(finished)})",
        [
            audit.erasure_id,
            audit.object_name,
            audit.match_field,
            json.dumps(sorted(audit.id_hashes)),
            audit.requested_by,
            audit.reason,
            audit.run_id,
            audit.status,
            audit.error,
        ],
    )


def add_suppressions(
    warehouse: Warehouse,
    object_name: str,
    hashes: Iterable[str],
    erasure_id: str,
    now: dt.datetime,
) -> int:
    """Add Id digests to the suppression list (those already there are kept as they are)."""
    d = dialect_of(warehouse)
    q = d.q
    table = qualified(warehouse, warehouse.schema_names.meta, SUPPRESSIONS)
    have = suppressed_hashes(warehouse, object_name)
    new = sorted(set(hashes) - have)
    if not new:
        return 0
    validate_identifier(object_name)
    rows = ", ".join(
        f"({d.string(object_name)}, {d.string(h)}, {d.string(erasure_id)}, "
        f"{d.timestamp_literal(now)})"
        for h in new
        if _is_hex(h)
    )
    warehouse.execute(
        f"INSERT INTO {table} ({q('object_name')}, {q('id_hash')}, {q('erasure_id')}, "
        f"{q('created_at')}) VALUES {rows}"
    )
    return len(new)


def _is_hex(value: str) -> bool:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("an Id digest must be 64 lower-case hex characters")
    return True


def suppressed_hashes(warehouse: Warehouse, object_name: str) -> frozenset[str]:
    """The Id digests of the object's erased records (empty when nothing was erased)."""
    d = dialect_of(warehouse)
    q = d.q
    meta = warehouse.schema_names.meta
    if not _columns(warehouse, meta, SUPPRESSIONS):
        return frozenset()
    rows = warehouse.query(
        f"SELECT {q('id_hash')} FROM {qualified(warehouse, meta, SUPPRESSIONS)} "
        # API names are case-insensitive: an erase of `contact` suppresses `Contact` rows.
        f"WHERE LOWER({q('object_name')}) = LOWER({d.param})",
        [validate_identifier(object_name)],
    )
    return frozenset(r[0] for r in rows)


def without_suppressed(
    batch: pa.Table, hashes: frozenset[str], id_column: str = "record_id"
) -> tuple[pa.Table, int]:
    """`batch` minus the rows of suppressed records; returns (kept rows, rows dropped).

    Free when nothing is suppressed (the usual case); otherwise one SHA-256 per distinct
    Id of the batch (~1 s per million distinct Ids).
    """
    if not hashes or batch.num_rows == 0:
        return batch, 0
    ids = pc.unique(batch.column(id_column)).to_pylist()
    erased = [i for i in ids if i is not None and _hash_raw(i) in hashes]
    if not erased:
        return batch, 0
    column = batch.column(id_column)
    keep = pc.invert(pc.is_in(column, value_set=pa.array(erased, type=column.type)))
    kept = batch.filter(pc.fill_null(keep, True))
    return kept, batch.num_rows - kept.num_rows

"""Decoding Change Data Capture events: Avro payload, header, field bitmaps, one row per Id.

Bitmaps (reference §2.4): element 0 is ``0x<hex>``, one bit per top-level schema field
(bit 0 = ChangeEventHeader); further elements ``<pos>-0x<hex>`` are bitmaps over the
child fields of the compound field at top-level position ``pos``. Compound children are
named with their stored field: ``BillingAddress.City`` -> ``BillingCity``, ``Name.FirstName``
-> ``FirstName`` (Salesforce's own components). A compound's top-level bit without a child
bitmap means every child.

What a change sets (DESIGN §4): CREATE/UNDELETE every field plus ``IsDeleted=false``;
UPDATE its changed and nulled fields; DELETE only ``IsDeleted=true``; GAP_* and
GAP_OVERFLOW nothing (they carry no field data and trigger repair instead). Large text
fields sent as a diff (``diffFields``) cannot be applied without the old value; they are
left out of ``set_fields`` and their records are listed for a REST re-fetch.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

HEADER = "ChangeEventHeader"
IS_DELETED = "IsDeleted"
GAP_TYPES = frozenset({"GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE"})
OVERFLOW = "GAP_OVERFLOW"
FULL_TYPES = frozenset({"CREATE", "UNDELETE"})


def _record_of(avro_type: Any) -> Mapping[str, Any] | str | None:
    """The record type (or named reference) inside a union, if any."""
    options = avro_type if isinstance(avro_type, list) else [avro_type]
    for opt in options:
        if isinstance(opt, Mapping) and opt.get("type") == "record":
            return opt
        if isinstance(opt, str) and opt not in {
            "null",
            "string",
            "boolean",
            "int",
            "long",
            "float",
            "double",
            "bytes",
        }:
            return opt
    return None


def component_name(parent: str, child: str) -> str:
    """The stored field a compound child stands for."""
    if parent.endswith("Address"):
        return parent.removesuffix("Address") + child
    return child


class EventSchema:
    """A parsed CDC schema: top-level names, compound children, the fastavro parse."""

    def __init__(self, schema_json: str | Mapping[str, Any]) -> None:
        self.schema: dict[str, Any] = (
            json.loads(schema_json) if isinstance(schema_json, str) else dict(schema_json)
        )
        self.top: list[str] = [f["name"] for f in self.schema["fields"]]
        named: dict[str, list[str]] = {}
        self.children: dict[int, list[str]] = {}
        for pos, f in enumerate(self.schema["fields"]):
            rec = _record_of(f["type"])
            if isinstance(rec, Mapping):
                names = [c["name"] for c in rec["fields"]]
                full = (
                    rec["name"]
                    if "." in rec["name"]
                    else (f"{rec.get('namespace', self.schema.get('namespace', ''))}.{rec['name']}")
                )
                named[rec["name"]] = named[full] = names
                if f["name"] != HEADER:
                    self.children[pos] = names
            elif isinstance(rec, str) and rec in named:
                self.children[pos] = named[rec]

    @cached_property
    def parsed(self) -> Any:
        """The fastavro-parsed schema (parsed once per schema id)."""
        import fastavro

        return fastavro.parse_schema(self.schema)

    @cached_property
    def all_fields(self) -> list[str]:
        """Every stored field the schema carries, compounds flattened (header excluded)."""
        out: list[str] = []
        for pos, name in enumerate(self.top):
            if name == HEADER:
                continue
            if pos in self.children:
                out.extend(component_name(name, c) for c in self.children[pos])
            else:
                out.append(name)
        return out

    def bitmap_fields(self, bitmap: Sequence[str]) -> list[str]:
        """Field names of a bitmap: top-level names and ``Parent.Child`` for children."""
        if not bitmap:
            return []
        out: list[str] = []
        with_children: set[int] = set()
        child_names: list[str] = []
        for element in bitmap[1:]:
            pos_text, _, hex_text = element.partition("-")
            pos = int(pos_text)
            names = self.children.get(pos)
            if names is None:
                raise ValueError(f"bitmap element {element!r} names a non-compound field")
            bits = int(hex_text, 16)
            with_children.add(pos)
            child_names.extend(f"{self.top[pos]}.{c}" for i, c in enumerate(names) if bits >> i & 1)
        top_bits = int(bitmap[0], 16)
        for i, name in enumerate(self.top):
            if not top_bits >> i & 1 or name == HEADER:
                continue
            if i in self.children:
                if i not in with_children:
                    out.extend(f"{name}.{c}" for c in self.children[i])
            else:
                out.append(name)
        return out + child_names

    def flatten(self, names: Sequence[str]) -> list[str]:
        """``Parent.Child`` -> stored component names; others unchanged; order kept."""
        out: list[str] = []
        for n in names:
            parent, dot, child = n.partition(".")
            out.append(component_name(parent, child) if dot else n)
        return list(dict.fromkeys(out))

    def flat_values(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Body values keyed by stored field name (compound records flattened)."""
        out: dict[str, Any] = {}
        for pos, name in enumerate(self.top):
            if name == HEADER:
                continue
            value = record.get(name)
            if pos in self.children:
                sub = value if isinstance(value, Mapping) else {}
                for c in self.children[pos]:
                    out[component_name(name, c)] = sub.get(c)
            else:
                out[name] = value
        return out


@dataclass(frozen=True)
class DecodedEvent:
    """One CDC event, decoded."""

    replay_id: bytes
    event_id: str
    schema_id: str
    entity: str
    change_type: str
    record_ids: tuple[str, ...]
    commit_ts: int
    transaction_key: str
    sequence_number: int
    commit_user: str | None
    change_origin: str | None
    changed_fields: tuple[str, ...]
    nulled_fields: tuple[str, ...]
    diff_fields: tuple[str, ...]
    values: Mapping[str, Any] = field(repr=False)

    @property
    def replay_int(self) -> int:
        """The replay id as an integer (Salesforce sends 8-byte big-endian ids)."""
        return int.from_bytes(self.replay_id, "big")


@dataclass(frozen=True)
class ChangeRow:
    """One change of one record: an event exploded by record id."""

    record_id: str | None
    entity: str
    change_type: str
    commit_ts: int
    transaction_key: str
    sequence_number: int
    replay_id: int
    replay_id_bytes: bytes
    event_id: str
    schema_id: str
    set_fields: tuple[str, ...]
    payload: Mapping[str, Any] = field(repr=False)
    commit_user: str | None = None  # the user id; a DELETE event carries nothing else


def decode_event(
    schema: EventSchema, payload: bytes, *, replay_id: bytes, event_id: str, schema_id: str
) -> DecodedEvent:
    """Decode a schemaless Avro payload into a :class:`DecodedEvent`."""
    import fastavro

    # An event schema is a record, and a record decodes to a dict (fastavro types the
    # result as any Avro value).
    record = cast(
        dict[str, Any], fastavro.schemaless_reader(io.BytesIO(payload), schema.parsed, None)
    )
    header = record[HEADER]
    return DecodedEvent(
        replay_id=replay_id,
        event_id=event_id,
        schema_id=schema_id,
        entity=header["entityName"],
        change_type=str(header["changeType"]),
        record_ids=tuple(header.get("recordIds") or ()),
        commit_ts=int(header["commitTimestamp"]),
        transaction_key=header.get("transactionKey") or "",
        sequence_number=int(header.get("sequenceNumber") or 0),
        commit_user=header.get("commitUser"),
        change_origin=header.get("changeOrigin"),
        changed_fields=tuple(
            schema.flatten(schema.bitmap_fields(header.get("changedFields") or []))
        ),
        nulled_fields=tuple(schema.flatten(schema.bitmap_fields(header.get("nulledFields") or []))),
        diff_fields=tuple(schema.flatten(schema.bitmap_fields(header.get("diffFields") or []))),
        values=schema.flat_values(record),
    )


def set_fields_of(
    event: DecodedEvent, schema: EventSchema
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(fields the change sets, their values) per DESIGN §4."""
    ct = event.change_type
    if ct in FULL_TYPES:
        values = dict(event.values)
        values[IS_DELETED] = False
        return (*schema.all_fields, IS_DELETED), values
    if ct == "UPDATE":
        diff = set(event.diff_fields)
        names = [n for n in (*event.changed_fields, *event.nulled_fields) if n not in diff]
        names = list(dict.fromkeys(names))
        nulled = set(event.nulled_fields)
        return tuple(names), {n: None if n in nulled else event.values.get(n) for n in names}
    if ct == "DELETE":
        return (IS_DELETED,), {IS_DELETED: True}
    return (), {}


def explode(event: DecodedEvent, schema: EventSchema) -> list[ChangeRow]:
    """One :class:`ChangeRow` per record id (GAP_OVERFLOW: one row without an id)."""
    fields, values = set_fields_of(event, schema)
    ids: Sequence[str | None] = event.record_ids or (None,)
    return [
        ChangeRow(
            record_id=rid,
            entity=event.entity,
            change_type=event.change_type,
            commit_ts=event.commit_ts,
            transaction_key=event.transaction_key,
            sequence_number=event.sequence_number,
            replay_id=event.replay_int,
            replay_id_bytes=event.replay_id,
            event_id=event.event_id,
            schema_id=event.schema_id,
            set_fields=fields,
            payload=values,
            commit_user=event.commit_user,
        )
        for rid in ids
    ]

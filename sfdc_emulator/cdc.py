"""Change Data Capture: the Avro schema of ``<Obj>ChangeEvent``, schema ids, event bodies and
field bitmaps (reference §2).

Layout rules: field 0 is ``ChangeEventHeader``; then every field of the object except
``Id`` (the record ids travel in ``header.recordIds``, as in Salesforce), ``IsDeleted`` and
``SystemModstamp``, each as ``["null", T]`` with default null. Compound fields replace
their components: the person ``Name`` becomes a ``Switchable_PersonName`` record and each
address compound an ``Address`` record. Datetimes are epoch-ms longs, dates are days since
epoch; no logicalTypes, so clients see plain numbers as Salesforce documents.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import fastavro

from sfdc_emulator.describe import ADDRESS_PARTS, PERSON_NAME_PARTS, FieldDef, SObjectDef

NAMESPACE = "com.sforce.eventbus"
CHANGE_TYPES = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
)
EXCLUDED_FIELDS = frozenset({"Id", "IsDeleted", "SystemModstamp"})
_EPOCH_DATE = date(1970, 1, 1)
_STRING_LIST = {"type": "array", "items": "string"}


def _header_schema() -> dict[str, Any]:
    return {
        "type": "record",
        "name": "ChangeEventHeader",
        "namespace": NAMESPACE,
        "fields": [
            {"name": "entityName", "type": "string"},
            {"name": "recordIds", "type": _STRING_LIST},
            {
                "name": "changeType",
                "type": {
                    "type": "enum",
                    "name": "ChangeType",
                    "namespace": NAMESPACE,
                    "symbols": list(CHANGE_TYPES),
                },
            },
            {"name": "changeOrigin", "type": "string"},
            {"name": "transactionKey", "type": "string"},
            {"name": "sequenceNumber", "type": "int"},
            {"name": "commitTimestamp", "type": "long"},
            {"name": "commitNumber", "type": "long"},
            {"name": "commitUser", "type": "string"},
            {"name": "nulledFields", "type": _STRING_LIST},
            {"name": "diffFields", "type": _STRING_LIST},
            {"name": "changedFields", "type": _STRING_LIST},
        ],
    }


def _avro_type(type_: str) -> tuple[str, str | None]:
    """Salesforce describe type -> (Avro primitive, doc)."""
    if type_ == "boolean":
        return "boolean", None
    if type_ == "int":
        return "int", None
    if type_ in ("double", "currency", "percent"):
        return "double", None
    if type_ == "datetime":
        return "long", "Data:DateTime"
    if type_ == "date":
        return "int", "Data:DateOnly"
    return "string", None


def _nullable(name: str, avro_type: Any, doc: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": ["null", avro_type], "default": None}
    if doc:
        out["doc"] = doc
    return out


def _compound_children(spec: SObjectDef, compound: FieldDef) -> dict[str, FieldDef]:
    """Avro child name -> stored component field of a compound parent."""
    out: dict[str, FieldDef] = {}
    prefix = compound.name.removesuffix("Address") if compound.type == "address" else ""
    for f in spec.fields:
        if f.compound_field_name == compound.name:
            out[f.name[len(prefix) :] if compound.type == "address" else f.name] = f
    return out


def _is_person_name(spec: SObjectDef, f: FieldDef) -> bool:
    return f.name == "Name" and any(x.compound_field_name == "Name" for x in spec.fields)


def avro_schema(spec: SObjectDef) -> dict[str, Any]:
    """The ``<Obj>ChangeEvent`` Avro schema (a JSON-able dict) for the current describe."""
    fields: list[dict[str, Any]] = [{"name": "ChangeEventHeader", "type": _header_schema()}]
    address_defined = False
    for f in spec.fields:
        if f.name in EXCLUDED_FIELDS or f.compound_field_name is not None:
            continue
        if f.type == "address":
            if address_defined:
                record: Any = f"{NAMESPACE}.Address"
            else:
                record = {
                    "type": "record",
                    "name": "Address",
                    "namespace": NAMESPACE,
                    "fields": [
                        _nullable(part, "double" if part in ("Latitude", "Longitude") else "string")
                        for part in ADDRESS_PARTS
                    ],
                }
                address_defined = True
            fields.append(_nullable(f.name, record))
        elif _is_person_name(spec, f):
            children = _compound_children(spec, f)
            record = {
                "type": "record",
                "name": "Switchable_PersonName",
                "namespace": NAMESPACE,
                "fields": [_nullable(p, "string") for p in PERSON_NAME_PARTS if p in children],
            }
            fields.append(_nullable(f.name, record))
        else:
            avro_t, doc = _avro_type(f.type)
            fields.append(_nullable(f.name, avro_t, doc))
    return {
        "type": "record",
        "name": f"{spec.name.removesuffix('__c')}{'__' if spec.custom else ''}ChangeEvent",
        "namespace": NAMESPACE,
        "fields": fields,
    }


def schema_json(schema: Mapping[str, Any]) -> str:
    """The schema text served by GetSchema (field order preserved)."""
    return json.dumps(schema, separators=(",", ":"))


def schema_id(schema: Mapping[str, Any]) -> str:
    """22-char URL-safe base64 of the MD5 of the canonical (sorted-keys) JSON."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    digest = hashlib.md5(canonical.encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


_PARSED: dict[str, Any] = {}


def _parsed(schema: Mapping[str, Any] | str) -> Any:
    spec: Mapping[str, Any] = json.loads(schema) if isinstance(schema, str) else schema
    key = schema_id(spec)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = fastavro.parse_schema(dict(spec))
        _PARSED[key] = parsed
    return parsed


def encode(schema: Mapping[str, Any] | str, record: Mapping[str, Any]) -> bytes:
    """Schemaless Avro binary datum (what ProducerEvent.payload carries)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _parsed(schema), dict(record))
    return buf.getvalue()


def decode(schema: Mapping[str, Any] | str, payload: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode`."""
    record = fastavro.schemaless_reader(io.BytesIO(payload), _parsed(schema), None)
    if not isinstance(record, dict):  # fastavro types any datum; an event schema is a record
        raise TypeError(f"payload decoded to {type(record).__name__}, not a record")
    return record


def _hex(n: int) -> str:
    text = format(n, "X")
    if len(text) % 2:
        text = "0" + text
    return "0x" + text


def bitmap(positions: Iterable[int]) -> str:
    """``"0x"`` + even-length UPPERCASE hex with bit *i* set for each position *i*."""
    n = 0
    for p in positions:
        n |= 1 << p
    return _hex(n)


def child_bitmap(parent_pos: int, positions: Iterable[int]) -> str:
    """``"<parentPos>-0x<HEX>"`` over the children of the compound at ``parent_pos``."""
    return f"{parent_pos}-{bitmap(positions)}"


def _branches(type_: Any) -> list[Any]:
    """The branches of an Avro field type (a union is a list; anything else is one)."""
    return list(type_) if isinstance(type_, list) else [type_]


def decode_bitmaps(schema: Mapping[str, Any] | str, bitmaps: Sequence[str]) -> list[str]:
    """Field names named by a bitmap list (reference §2.4): ``Name.LastName`` for children."""
    spec: Mapping[str, Any] = json.loads(schema) if isinstance(schema, str) else schema
    fields = spec["fields"]
    # Avro defines a named record once; a second compound of the same type (Account's
    # ShippingAddress after BillingAddress) refers to it by name.
    records = {t["name"]: t for f in fields for t in _branches(f["type"]) if isinstance(t, dict)}
    names: list[str] = []
    for item in bitmaps:
        if item.startswith("0x"):
            n = int(item, 16)
            names += [f["name"] for i, f in enumerate(fields) if n >> i & 1]
            continue
        pos, hex_part = item.split("-", 1)
        parent = fields[int(pos)]
        record = next(
            t if isinstance(t, dict) else records[t.rsplit(".", 1)[-1]]
            for t in _branches(parent["type"])
            if isinstance(t, dict) or t.rsplit(".", 1)[-1] in records
        )
        n = int(hex_part, 16)
        names += [
            f"{parent['name']}.{c['name']}" for i, c in enumerate(record["fields"]) if n >> i & 1
        ]
    return names


def to_avro(type_: str, value: Any) -> Any:
    """A stored Python value -> the Avro value of its field type."""
    if value is None:
        return None
    if type_ == "datetime":
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if type_ == "date":
        return (value - _EPOCH_DATE).days
    if type_ in ("double", "currency", "percent"):
        return float(value)
    if type_ == "int":
        return int(value)
    if type_ == "boolean":
        return bool(value)
    if isinstance(value, (Decimal, datetime, date)):
        return str(value)
    return value


class EventLayout:
    """The compiled CDC layout of one SObjectDef: schema, id, field positions, body builder."""

    def __init__(self, spec: SObjectDef) -> None:
        self.spec = spec
        self.schema = avro_schema(spec)
        self.schema_json = schema_json(self.schema)
        self.schema_id = schema_id(self.schema)
        self.parsed = _parsed(self.schema)
        self.top_names = [f["name"] for f in self.schema["fields"]]
        self.top_pos = {name: i for i, name in enumerate(self.top_names)}
        # stored component field -> (parent position, child position, child avro name)
        self.component: dict[str, tuple[int, int, str]] = {}
        self.compounds: dict[int, list[tuple[str, FieldDef | None]]] = {}
        self.top_fields: list[tuple[str, FieldDef]] = []
        # in the schema, always null, never in a bitmap: events don't carry formulas (§2.3)
        self.formulas = frozenset(f.name for f in spec.fields if f.is_formula)
        for f in spec.fields:
            if f.name not in self.top_pos:
                continue
            pos = self.top_pos[f.name]
            if f.type == "address" or _is_person_name(spec, f):
                children = _compound_children(spec, f)
                record_fields = self._record_fields(self.schema["fields"][pos])
                layout = []
                for child_pos, child_name in enumerate(record_fields):
                    component = children.get(child_name)
                    layout.append((child_name, component))
                    if component is not None:
                        self.component[component.name] = (pos, child_pos, child_name)
                self.compounds[pos] = layout
            else:
                self.top_fields.append((f.name, f))

    def _record_fields(self, field: Mapping[str, Any]) -> list[str]:
        record = field["type"][1]
        if isinstance(record, str):  # named reference to an already defined Address
            return list(ADDRESS_PARTS)
        return [c["name"] for c in record["fields"]]

    def body(self, values: Mapping[str, Any], only: Collection[str] | None = None) -> dict:
        """Avro body fields (no header) from stored values; ``only`` restricts to those
        stored fields (UPDATE), everything else is null."""
        out: dict[str, Any] = {}
        for name, f in self.top_fields:
            if name in self.formulas or (only is not None and name not in only):
                out[name] = None
            else:
                out[name] = to_avro(f.type, values.get(name))
        for pos, children in self.compounds.items():
            record: dict[str, Any] = {}
            touched = False
            for child_name, component in children:
                if component is None or (only is not None and component.name not in only):
                    record[child_name] = None
                    continue
                record[child_name] = to_avro(component.type, values.get(component.name))
                touched = True
            # CREATE/UNDELETE: an all-empty compound is null; UPDATE: present when touched
            present = touched if only is not None else any(v is not None for v in record.values())
            out[self.top_names[pos]] = record if present else None
        return out

    def bitmaps(self, fields: Iterable[str]) -> list[str]:
        """Bitmap list naming stored fields ``fields`` (top level first, then children)."""
        top: list[int] = []
        children: dict[int, list[int]] = {}
        for name in fields:
            if name in self.formulas:
                continue
            if name in self.component:
                parent, child, _ = self.component[name]
                children.setdefault(parent, []).append(child)
            elif name in self.top_pos and self.top_pos[name] not in self.compounds:
                # a compound parent (the derived person Name) is named by its child bitmap
                top.append(self.top_pos[name])
        if not top and not children:
            return []
        out = [bitmap(top)]
        out += [child_bitmap(p, children[p]) for p in sorted(children)]
        return out

    def cost_fields(self, fields: Iterable[str]) -> int:
        """How many event fields a change touches (overflow accounting): compounds count once."""
        seen: set[str] = set()
        for name in fields:
            if name in self.formulas:
                continue
            if name in self.component:
                seen.add(self.top_names[self.component[name][0]])
            elif name in self.top_pos and self.top_pos[name] not in self.compounds:
                seen.add(name)
        return len(seen)

    def encode(self, header: Mapping[str, Any], body: Mapping[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, {"ChangeEventHeader": header, **body})
        return buf.getvalue()

"""OrgSchema: the live, mutable object catalog of the emulated org.

Starts from :data:`sfdc_emulator.describe.DEFAULT_OBJECTS`; admin commands add or remove
fields and change picklist values. Every change bumps the object's version. The store
registers a hook (``on_change``) that applies the DDL (ALTER TABLE) and persists the
catalog JSON in its ``_meta`` table inside one transaction, before the in-memory catalog
changes: a failed ALTER leaves both untouched.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sfdc_emulator.describe import SYSTEM_FIELDS, FieldDef, SObjectDef, default_catalog
from sfdc_emulator.formulas import referencing

_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
_SUPPORTED_TYPES = frozenset(
    {
        "boolean",
        "string",
        "textarea",
        "int",
        "double",
        "currency",
        "percent",
        "date",
        "datetime",
        "reference",
        "picklist",
        "multipicklist",
        "email",
        "phone",
        "url",
    }
)


@dataclass(frozen=True)
class SchemaChange:
    """What changed, handed to the store's hook before the catalog is updated."""

    kind: Literal["add_field", "remove_field", "set_picklist"]
    object: str
    field: FieldDef
    new_spec: SObjectDef
    catalog_json: str  # the whole catalog after the change, for persistence


class OrgSchema:
    """The live ``{object name: SObjectDef}`` with per-object versions; thread-safe."""

    def __init__(
        self,
        objects: Mapping[str, SObjectDef] | None = None,
        versions: Mapping[str, int] | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._objects: dict[str, SObjectDef] = dict(objects or default_catalog())
        self._versions: dict[str, int] = {name: 1 for name in self._objects}
        self._versions.update(versions or {})
        self.on_change: Callable[[SchemaChange], None] | None = None

    def get(self, name: str) -> SObjectDef:
        """The SObjectDef for ``name`` (case-insensitive); KeyError if unknown."""
        with self._lock:
            spec = self._objects.get(name)
            if spec is not None:
                return spec
            for key, value in self._objects.items():
                if key.lower() == name.lower():
                    return value
        raise KeyError(f"sObject type '{name}' is not supported.")

    def __getitem__(self, name: str) -> SObjectDef:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        with self._lock:
            return list(self._objects)

    def objects(self) -> list[SObjectDef]:
        with self._lock:
            return list(self._objects.values())

    def version(self, obj: str) -> int:
        with self._lock:
            return self._versions[self.get(obj).name]

    def add_field(self, obj: str, spec: FieldDef) -> SObjectDef:
        """Add a field at the end of the object (custom fields: name must end in ``__c``)."""
        with self._lock:
            current = self.get(obj)
            if not _FIELD_NAME.match(spec.name.removesuffix("__c")):
                raise ValueError(f"invalid field name {spec.name!r}")
            if spec.type not in _SUPPORTED_TYPES:
                raise ValueError(f"unsupported field type {spec.type!r} for {obj}.{spec.name}")
            if current.has_field(spec.name):
                raise ValueError(f"field {current.name}.{spec.name} already exists")
            if spec.name.endswith("__c") and not spec.custom:
                spec = dataclasses.replace(spec, custom=True)
            new = dataclasses.replace(current, fields=(*current.fields, spec))
            self._apply("add_field", new, spec)
            return new

    def remove_field(self, obj: str, name: str) -> SObjectDef:
        """Remove a (non-system, non-compound-component) field."""
        with self._lock:
            current = self.get(obj)
            field = current.field(name)
            if field.name in SYSTEM_FIELDS or field.name == "OwnerId":
                raise ValueError(f"cannot remove system field {current.name}.{field.name}")
            if field.compound_field_name is not None or field.type == "address":
                raise ValueError(f"cannot remove compound field {current.name}.{field.name}")
            if field.calculated or not (field.createable or field.updateable):
                raise ValueError(f"cannot remove derived field {current.name}.{field.name}")
            # as in Salesforce: a field a formula reads cannot be deleted
            readers = referencing(self._objects.values(), current.name, field.name)
            if readers:
                raise ValueError(
                    f"cannot remove {current.name}.{field.name}: the formula of "
                    f"{', '.join(readers)} reads it"
                )
            kept = tuple(f for f in current.fields if f.name != field.name)
            new = dataclasses.replace(current, fields=kept)
            self._apply("remove_field", new, field)
            return new

    def set_picklist(
        self, obj: str, field_name: str, values: list[str] | tuple[str, ...]
    ) -> SObjectDef:
        """Replace the value set of a picklist field (values are text: no data change)."""
        with self._lock:
            current = self.get(obj)
            field = current.field(field_name)
            if field.type not in ("picklist", "multipicklist"):
                raise ValueError(f"{current.name}.{field.name} is not a picklist")
            changed = dataclasses.replace(field, picklist_values=tuple(values))
            fields = tuple(changed if f.name == field.name else f for f in current.fields)
            new = dataclasses.replace(current, fields=fields)
            self._apply("set_picklist", new, changed)
            return new

    def _apply(self, kind: Any, new: SObjectDef, field: FieldDef) -> None:
        objects = {**self._objects, new.name: new}
        versions = {**self._versions, new.name: self._versions[new.name] + 1}
        if self.on_change is not None:
            self.on_change(SchemaChange(kind, new.name, field, new, _dump(objects, versions)))
        self._objects = objects
        self._versions = versions

    def to_json(self) -> str:
        with self._lock:
            return _dump(self._objects, self._versions)

    @classmethod
    def from_json(cls, text: str) -> OrgSchema:
        data = json.loads(text)
        objects = {o["name"]: SObjectDef.from_dict(o) for o in data["objects"]}
        return cls(objects, data.get("versions", {}))


def _dump(objects: Mapping[str, SObjectDef], versions: Mapping[str, int]) -> str:
    return json.dumps(
        {"objects": [o.to_dict() for o in objects.values()], "versions": dict(versions)},
        default=str,
    )

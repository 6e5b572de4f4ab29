"""Cross-object formula fields: a child's field the org evaluates from its parent record.

A formula such as ``TEXT(Account.Rating)`` on Opportunity reads the parent through the
lookup whose relationship name is ``Account`` (``AccountId``). Salesforce evaluates
formulas when a record is read, so a parent change alters the child's value while nothing
happens to the child: no change event, no SystemModstamp or LastModifiedDate (and change
events never carry formula fields anyway, reference §2.3).

The emulator keeps the evaluated value in the child's column and refreshes it inside the
writing DuckDB transaction, for the children a commit wrote and for the children of the
parents whose source field it changed or whose row it purged (a purged parent reads as
null). Every reader (Bulk, REST, SOQL ``WHERE``, truth) then sees what Salesforce would
show, without a join on every query (the SQL is :func:`sfdc_emulator.tables.refresh_formula`).
Formulas of the shapes ``Rel.Field`` and ``TEXT(Rel.Field)`` are evaluated here; the other
formulas (``ExpectedRevenue``, ``TotalPrice``) read their own record and are computed on
write by :func:`sfdc_emulator.values.derive`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sfdc_emulator.describe import SObjectDef

_CROSS_OBJECT = re.compile(r"^\s*(TEXT\(\s*)?([A-Za-z]\w*)\.([A-Za-z]\w*)\s*(\))?\s*$")


@dataclass(frozen=True)
class CrossObjectFormula:
    """``object.field`` = ``parent.parent_field`` of the record ``object.lookup`` points to."""

    object: str
    field: str
    lookup: str
    parent: str
    parent_field: str
    field_type: str  # the formula's result type (TEXT() of a picklist: "string")


def cross_object_formulas(catalog: Iterable[SObjectDef]) -> list[CrossObjectFormula]:
    """The cross-object formulas of ``catalog`` whose lookup and parent field exist."""
    specs = {spec.name: spec for spec in catalog}
    out: list[CrossObjectFormula] = []
    for spec in specs.values():
        for f in spec.fields:
            match = _CROSS_OBJECT.match(f.formula or "") if f.is_formula else None
            if match is None or bool(match.group(1)) != bool(match.group(4)):
                continue
            relationship, source = match.group(2), match.group(3)
            lookup = next(
                (
                    r
                    for r in spec.fields
                    if r.type == "reference"
                    and r.relationship_name == relationship
                    and len(r.reference_to) == 1
                ),
                None,
            )
            parent = specs.get(lookup.reference_to[0]) if lookup is not None else None
            if lookup is None or parent is None or not parent.has_field(source):
                continue
            out.append(
                CrossObjectFormula(
                    spec.name,
                    f.name,
                    lookup.name,
                    parent.name,
                    parent.field(source).name,
                    f.type,
                )
            )
    return out


def referencing(catalog: Iterable[SObjectDef], object: str, field: str) -> list[str]:
    """``Obj.Field`` names of the formulas that read ``object.field`` (its lookup or source)."""
    return [
        f"{fx.object}.{fx.field}"
        for fx in cross_object_formulas(catalog)
        if (fx.parent, fx.parent_field) == (object, field)
        or (fx.object, fx.lookup) == (object, field)
    ]


def children_to_refresh(fx: CrossObjectFormula, changes: Iterable[Any]) -> list[str]:
    """Child ids of one commit whose formula must be evaluated: created, or re-pointed to
    another parent (a child written for any other reason keeps a value that is right, or
    is re-evaluated with its parent's children when the parent changed too)."""
    return [
        ch.record_id
        for ch in changes
        if ch.object == fx.object
        and (ch.change_type == "CREATE" or (ch.fields and fx.lookup in ch.fields))
    ]


def parents_to_refresh(
    fx: CrossObjectFormula,
    changes: Iterable[Any],
    dirty: Mapping[str, Mapping[str, Mapping[str, Any] | None]],
    loaded: Mapping[str, Collection[str]],
) -> list[str]:
    """Parent ids of one commit whose children must be re-evaluated: the source field
    changed (UPDATE, GAP_UPDATE), or the parent row was purged."""
    ids = [
        ch.record_id for ch in changes if ch.object == fx.parent and fx.parent_field in ch.fields
    ]
    existed = loaded.get(fx.parent, ())
    ids += [rid for rid, row in dirty.get(fx.parent, {}).items() if row is None and rid in existed]
    return list(dict.fromkeys(ids))

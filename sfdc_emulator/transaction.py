"""One commit's working set: :class:`Mutation` s applied in memory, before anything is written.

A :class:`Transaction` loads the rows it touches, checks every mutation as Salesforce
would (field access, types, required fields, the recycle bin), stamps the system fields
and records a :class:`Change` per record for the CDC events. Nothing reaches DuckDB until
the store writes ``dirty`` in one DuckDB transaction; a refused mutation (StoreError)
leaves nothing behind.

Recycle bin: ``delete`` sets IsDeleted (the row stays, queryAll sees it), ``undelete``
clears it; ``purge`` removes the row physically with no event, as emptying the recycle bin
or a Bulk hardDelete does in Salesforce.

Cascade: deleting an Account or an Opportunity takes its children to the Recycle Bin with
it (CASCADES), and undeleting it brings back the ones that delete took; the children get
the commit's stamps (so getDeleted and queryAll list them) but no change event
(docs/emulator.md, "Cascade deletes").
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb

from sfdc_emulator import ids as idmod
from sfdc_emulator.describe import SObjectDef
from sfdc_emulator.schema import OrgSchema
from sfdc_emulator.tables import fetch_rows, quote
from sfdc_emulator.values import StoreError, coerce, derive

# Changes to these are not changes an UPDATE event reports.
_NON_EVENT_FIELDS = frozenset({"Id", "IsDeleted", "SystemModstamp"})
# Only the org sets these, even through gap().
_SYSTEM_WRITE = frozenset(
    {"Id", "IsDeleted", "CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById"}
)


# Parent object -> (child object, the child's lookup to it) a delete of the parent takes
# along: an Account its Contacts, Opportunities and the activities on it, an Opportunity its
# line items and the activities on it (SOAP API Developer Guide, delete(): "cascade
# deletes ... as long as each child object can be deleted"; the children per Salesforce
# Help, a secondary source). Activities on a Contact (WhoId) are left alone: not documented.
CASCADES: dict[str, tuple[tuple[str, str], ...]] = {
    "Account": (
        ("Contact", "AccountId"),
        ("Opportunity", "AccountId"),
        ("Task", "WhatId"),
        ("Event", "WhatId"),
    ),
    "Opportunity": (
        ("OpportunityLineItem", "OpportunityId"),
        ("Task", "WhatId"),
        ("Event", "WhatId"),
    ),
}


@dataclass(frozen=True)
class Mutation:
    """One DML operation of a transaction."""

    op: Literal["create", "update", "delete", "undelete", "purge"]
    object: str
    id: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Change:
    """What one mutation changed, for the CDC events (a purge has none)."""

    object: str
    change_type: str
    record_id: str
    fields: list[str]  # UPDATE: changed stored fields an event reports (never a formula)
    nulled: list[str]
    row: dict[str, Any] | None  # values for the body


class Transaction:
    """The in-memory working set of one commit: rows, then changes."""

    def __init__(
        self,
        schema: OrgSchema,
        ids: idmod.IdAllocator,
        cur: duckdb.DuckDBPyConnection,
        ts: int,
        user: str,
        automation: bool,
        gap: bool = False,
    ) -> None:
        self.schema = schema
        self.ids = ids
        self.cur = cur
        self.ts = ts
        # Salesforce keeps the system stamps to the second, from the commit's one clock
        # read: a deleted record's LastModifiedDate is its DELETE event's commit second.
        self.stamp = datetime.fromtimestamp(ts // 1000, UTC).replace(tzinfo=None)
        self.user = user
        self.automation = automation
        self.gap = gap
        self.rows: dict[str, dict[str, dict[str, Any] | None]] = {}
        self.loaded_ids: dict[str, set[str]] = {}
        # the rows as read, before this commit changed them (the store writes the diff)
        self.loaded_rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.dirty: dict[str, dict[str, dict[str, Any] | None]] = {}
        self.changes: list[Change] = []
        self.result_ids: list[str] = []
        self.created = False
        # commitNumber (the SCN) is diagnostic only; commit timestamps are unique per store
        self.commit_number = ts * 1000
        self.transaction_key = str(uuid.uuid4())

    def prefetch(self, mutations: Sequence[Mutation]) -> None:
        """Load every row the mutations name, one query per object."""
        by_obj: dict[str, list[str]] = {}
        for m in mutations:
            if m.op != "create" and m.id and idmod.is_valid_id(m.id):
                by_obj.setdefault(self.schema.get(m.object).name, []).append(idmod.to_18(m.id))
        for obj, wanted in by_obj.items():
            cache = self.rows.setdefault(obj, {})
            missing = [i for i in dict.fromkeys(wanted) if i not in cache]
            fetched = fetch_rows(self.cur, obj, missing)
            for rid in missing:
                cache[rid] = fetched.get(rid)
            self.loaded_ids.setdefault(obj, set()).update(fetched)
            self.loaded_rows.setdefault(obj, {}).update(fetched)

    def apply(self, m: Mutation) -> None:
        """Apply one mutation to the working set (StoreError when the org refuses it)."""
        spec = self.schema.get(m.object)
        if m.op == "create":
            self._create(spec, m)
            return
        rid, row = self._row(spec, m.id)
        if m.op == "update":
            self._update(spec, rid, row, m.values)
        elif m.op == "delete":
            self._delete(spec, rid, row)
        elif m.op == "undelete":
            self._undelete(spec, rid, row)
        elif m.op == "purge":
            self._mark(spec.name, rid, None)
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
        rid = self.ids.next(spec.key_prefix)
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
        self.changes.append(Change(spec.name, "CREATE", rid, [], [], row))
        self.result_ids.append(rid)

    def _update(
        self, spec: SObjectDef, rid: str, row: dict[str, Any], values: Mapping[str, Any]
    ) -> None:
        checked = self._values(spec, values, "update")
        if row["IsDeleted"]:
            raise StoreError(f"entity is deleted: {spec.name} {rid}", "ENTITY_IS_DELETED")
        new = self._stamped(row, **checked)
        derive(spec, new, row, checked.keys(), self.stamp)
        self._check_required(spec, new)
        # formula fields change with their inputs but are never reported (reference §2.3)
        changed = [
            f.name
            for f in spec.stored_fields()
            if f.name not in _NON_EVENT_FIELDS and not f.is_formula and new[f.name] != row[f.name]
        ]
        self._mark(spec.name, rid, new)
        if changed:
            nulled = [c for c in changed if new[c] is None]
            kind = "GAP_UPDATE" if self.gap else "UPDATE"
            self.changes.append(Change(spec.name, kind, rid, changed, nulled, new))

    def _delete(self, spec: SObjectDef, rid: str, row: dict[str, Any]) -> None:
        if row["IsDeleted"]:
            raise StoreError(f"entity is deleted: {spec.name} {rid}", "ENTITY_IS_DELETED")
        self._mark(spec.name, rid, self._stamped(row, IsDeleted=True))
        self.changes.append(Change(spec.name, "DELETE", rid, [], [], None))
        self._cascade(spec.name, [rid], delete=True)

    def _undelete(self, spec: SObjectDef, rid: str, row: dict[str, Any]) -> None:
        if not row["IsDeleted"]:
            raise StoreError(
                f"entity is not in the recycle bin: {spec.name} {rid}", "UNDELETE_FAILED"
            )
        new = self._stamped(row, IsDeleted=False)
        self._mark(spec.name, rid, new)
        self.changes.append(Change(spec.name, "UNDELETE", rid, [], [], new))
        self._cascade(spec.name, [rid], delete=False, deleted_at=row["SystemModstamp"])

    def _cascade(
        self, parent: str, parent_ids: list[str], *, delete: bool, deleted_at: Any = None
    ) -> None:
        """Delete (or undelete) the children of ``parent_ids``, and theirs, with no event.

        An undelete brings back the children the parent's delete took: deleted with it, so
        stamped in the same second (a child deleted on its own in that second comes back
        too, which Salesforce would not do).
        """
        for child, lookup in CASCADES.get(parent, ()):
            if child not in self.schema:
                continue
            spec = self.schema.get(child)
            marks = ", ".join("?" * len(parent_ids))
            where = f'{quote(lookup)} IN ({marks}) AND {"NOT " if delete else ""}"IsDeleted"'
            params: list[Any] = list(parent_ids)
            if not delete:
                where += ' AND "SystemModstamp" = ?'
                params.append(deleted_at)
            found = self.cur.execute(
                f'SELECT "Id" FROM {quote(spec.name)} WHERE {where}', params
            ).fetchall()
            taken = []
            for (cid,) in found:
                _, row = self._row(spec, cid)  # this commit's version if it changed it
                if row["IsDeleted"] == delete:
                    continue
                self._mark(spec.name, cid, self._stamped(row, IsDeleted=delete))
                taken.append(cid)
            if taken:
                self._cascade(spec.name, taken, delete=delete, deleted_at=deleted_at)

    def _stamped(self, row: Mapping[str, Any], **values: Any) -> dict[str, Any]:
        """A copy of ``row`` with ``values`` and this commit's stamps: SystemModstamp
        always, LastModifiedDate/ById unless automation made the change."""
        new = dict(row)
        new.update(values)
        if not self.automation:
            new["LastModifiedDate"] = self.stamp
            new["LastModifiedById"] = self.user
        new["SystemModstamp"] = self.stamp
        return new

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
            fetched = fetch_rows(self.cur, spec.name, [rid])
            cache[rid] = fetched.get(rid)
            if rid in fetched:
                self.loaded_ids.setdefault(spec.name, set()).add(rid)
                self.loaded_rows.setdefault(spec.name, {})[rid] = fetched[rid]
        row = cache[rid]
        if row is None:
            raise StoreError(
                f"entity is deleted or does not exist: {spec.name} {rid}",
                "ENTITY_IS_DELETED",
            )
        return rid, row

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

"""The executable specification of DESIGN §4, in plain Python.

`fold(spec, changes)` takes any iterable of change rows (dicts shaped like a change batch,
duplicates and any order allowed) and returns what `sfdc.<object>` (current) and
`sfdc_history.<object>` (scd2) must contain. The SQL engines are tested against it.

The rules, literally:
- changes are deduplicated by change_id and ordered per record by version;
- a change sets exactly its set_fields (IsDeleted is a field); GAP_* changes set nothing
  and are not applied;
- a field's value is the value of the highest-version change that set it;
- an unset field is null, except is_deleted which is false until a change sets it;
- scd2 has a row per state change: the first change of a record always opens one, a
  change that leaves the state equal opens none; valid_from is the version time of the
  change, valid_to the next row's valid_from; the state is every field but
  SystemModstamp (`ObjectSpec.versioned_columns`): a change that moves only the stamp
  opens no row, and a row keeps the stamp it was opened with;
- a fill (column-only read of new fields, version below every real change) sets its
  fields and never opens a row; the first real change after fills always opens one; a
  record with nothing but fills has a current row and no scd2 row;
- current is the last state, with _version/_source of the record's highest version, and
  `_read_whole` true iff some change of the record is whole (SNAPSHOT, CREATE, UNDELETE).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sync_engine.changes import GAP_PREFIX, is_fill_version
from sync_engine.spec import IS_DELETED_COLUMN, IS_DELETED_FIELD, ObjectSpec
from sync_engine.statements import WHOLE_CHANGE_TYPES


@dataclass
class FoldResult:
    """Expected table contents (load-time columns such as _synced_at left out)."""

    current: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]


def dedupe(changes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One row per change_id; if an id repeats with different versions keep the lowest."""
    best: dict[str, Mapping[str, Any]] = {}
    for c in changes:
        cur = best.get(c["change_id"])
        if cur is None or c["version"] < cur["version"]:
            best[c["change_id"]] = c
    return list(best.values())


def fold(spec: ObjectSpec, changes: Iterable[Mapping[str, Any]]) -> FoldResult:
    """Fold changes into the expected current and scd2 tables."""
    by_record: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for c in dedupe(changes):
        if not c["change_type"].startswith(GAP_PREFIX):
            by_record[c["record_id"]].append(c)

    current: dict[str, dict[str, Any]] = {}
    history: list[dict[str, Any]] = []
    field_cols = [(f.name, f.column) for f in spec.fields] + [(IS_DELETED_FIELD, IS_DELETED_COLUMN)]
    for record_id in sorted(by_record):
        state: dict[str, Any] = {col: None for _, col in field_cols}
        state[IS_DELETED_COLUMN] = False
        rows: list[dict[str, Any]] = []
        versioned = spec.versioned_columns
        last = None
        for c in sorted(by_record[record_id], key=lambda c: c["version"]):
            sets = set(c["set_fields"])
            for name, col in field_cols:
                if name in sets:
                    state[col] = c[col]
            if state[IS_DELETED_COLUMN] is None:
                state[IS_DELETED_COLUMN] = False
            last = c
            if is_fill_version(c["version"]):
                continue  # a fill sets its fields and opens nothing
            if not rows or any(rows[-1][col] != state[col] for col in versioned):
                rows.append(
                    {
                        "id": record_id,
                        **state,
                        "_version": c["version"],
                        "_source": c["source"],
                        "valid_from": c["version_ts"],
                    }
                )
        for i, row in enumerate(rows):
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            row["valid_to"] = nxt["valid_from"] if nxt else None
            row["is_current"] = nxt is None
        history.extend(rows)
        assert last is not None
        current[record_id] = {
            "id": record_id,
            **state,
            "_version": last["version"],
            "_source": last["source"],
            # TRUE once any whole change of the record was applied (any order, any batching).
            "_read_whole": any(
                c["change_type"] in WHOLE_CHANGE_TYPES for c in by_record[record_id]
            ),
        }
    return FoldResult(current=current, history=history)

"""Hypothesis strategies for change histories and deliveries, and table readers.

A history is a list of change rows of a few records, built with the real builders
(`sync_engine.changes`): creates, partial updates with explicit nulls, deletes (CDC and
delete scans), undeletes, snapshots read at random times, gap events, column-only fills.
Times come from a coarse grid (5 seconds x {0, 1, 500, 998, 999} ms) so same-ms and
same-second ties, including snapshot-vs-event ties, are common. A delivery is that history
shuffled, with duplicates, split into batches.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from sync_engine import changes as ch
from sync_engine.spec import FieldSpec, ObjectSpec
from sync_engine.warehouse import Warehouse

SPEC = ObjectSpec.of(
    "Opportunity",
    [
        ("Name", "string"),
        ("Amount", "currency", 2),
        ("CloseDate", "date"),
        ("IsWon", "boolean"),
        ("LastActivity__c", "datetime"),
        ("Tags__c", "multipicklist"),
        ("Quantity__c", "int"),
        ("AccountId", "reference"),
    ],
)
# The same object with Salesforce's SystemModstamp: CDC changes stamp it with the commit
# second, snapshots carry it, and `histories` adds event-less stamp moves (re-reads of an
# unchanged record with a later stamp), which must never open an scd2 version.
STAMPED_SPEC = ObjectSpec(SPEC.name, (*SPEC.fields, FieldSpec("SystemModstamp", "datetime")))
# With a formula field: no event sets it (CDC omits formulas), snapshots read it, and
# formula refreshes (`changes.formula_change`, versioned by their read) set only it.
FORMULA_SPEC = ObjectSpec(
    SPEC.name,
    (*STAMPED_SPEC.fields, FieldSpec("ExpectedRevenue", "currency", 2, calculated=True)),
)
RECORD_IDS = ("006000000000001AAA", "006000000000002AAA", "006000000000003AAA")
VALUES: dict[str, list[Any]] = {
    "Name": ["Acme", "Globex", None],
    "Amount": [Decimal("100.00"), Decimal("250.50"), None],
    "CloseDate": [dt.date(2024, 1, 31), dt.date(2024, 6, 30), None],
    "IsWon": [True, False, None],
    "LastActivity__c": [
        dt.datetime(2024, 1, 1, 12),
        dt.datetime(2024, 2, 1, 8, 30, 0, 123000),
        None,
    ],
    "Tags__c": ["a;b", "c", None],
    "Quantity__c": [1, 7, None],
    "AccountId": ["001000000000001AAA", None],
    "ExpectedRevenue": [Decimal("50.00"), Decimal("75.25"), None],
}
_STAMP = "SystemModstamp"
BASE_SECOND = 1_700_000_000
MS_IN_SECOND = (0, 1, 500, 998, 999)


def _ms(draw: st.DrawFn) -> int:
    return (BASE_SECOND + draw(st.integers(0, 4))) * 1000 + draw(st.sampled_from(MS_IN_SECOND))


def _values(draw: st.DrawFn, names: list[str]) -> dict[str, Any]:
    return {n: draw(st.sampled_from(VALUES[n])) for n in names}


@st.composite
def change(draw: st.DrawFn, n: int, spec: ObjectSpec = SPEC) -> dict[str, Any]:
    """One change row; `n` makes its event uuid unique."""
    kind = draw(
        st.sampled_from(
            [
                "CREATE",
                "UPDATE",
                "UPDATE",
                "UPDATE",
                "DELETE",
                "UNDELETE",
                "SNAPSHOT",
                "SNAPSHOT",
                "DELETE_SCAN",
                "GAP_UPDATE",
                "FILL",
                *(["REFRESH", "REFRESH"] if spec.calculated_fields else []),
            ]
        )
    )
    rid = draw(st.sampled_from(RECORD_IDS))
    names = [f.name for f in spec.fields if f.name in VALUES]
    if kind == "FILL":
        fields = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
        return ch.fill_change(
            spec,
            record_id=rid,
            fields=fields,
            values=_values(draw, fields),
            read_started_at=ch.ts_of(_ms(draw)),
        )
    if kind == "REFRESH":
        return ch.formula_change(
            spec,
            record_id=rid,
            values=_values(draw, list(spec.calculated_fields)),
            read_started_at=ch.ts_of(_ms(draw)),
        )
    if kind in ("SNAPSHOT", "DELETE_SCAN"):
        second = BASE_SECOND + draw(st.integers(0, 4))
        modstamp = ch.ts_of(second * 1000 + draw(st.sampled_from(MS_IN_SECOND)))
        # Reads starting before, inside and after the modstamp's second.
        read = ch.ts_of(second * 1000 + draw(st.sampled_from([0, 1, 500, 1000, 1001, 3000])))
        if kind == "DELETE_SCAN":
            return ch.deleted_change(spec, record_id=rid, deleted_at=modstamp, read_started_at=read)
        values = _values(draw, names)
        if _STAMP in {f.name for f in spec.fields}:
            values[_STAMP] = modstamp
        return ch.snapshot_change(
            spec,
            record_id=rid,
            values=values,
            system_modstamp=modstamp,
            read_started_at=read,
            is_deleted=draw(st.sampled_from([False, False, True])),
            source=draw(st.sampled_from(["bulk", "rest"])),
        )
    common = {
        "event_uuid": f"evt-{n}",
        "record_id": rid,
        "commit_ms": _ms(draw),
        "transaction_key": draw(st.sampled_from(["tx-a", "tx-b", "tx-c"])),
        "sequence_number": draw(st.integers(1, 3)),
        "replay_id": n + 1,
    }
    if kind == "UPDATE":
        changed = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        nulled = [x for x in changed if draw(st.booleans()) and draw(st.booleans())]
        vals = _values(draw, [x for x in changed if x not in nulled])
        return ch.cdc_change(
            spec,
            change_type="UPDATE",
            values=vals,
            changed_fields=changed,
            nulled_fields=nulled,
            **common,
        )
    vals = _values(draw, names) if kind in ("CREATE", "UNDELETE") else {}
    return ch.cdc_change(spec, change_type=kind, values=vals, **common)


@st.composite
def histories(draw: st.DrawFn, max_size: int = 14, spec: ObjectSpec = SPEC) -> list[dict[str, Any]]:
    """A list of distinct changes (unique event uuids; snapshots may coincide by id).

    With a SystemModstamp field, some snapshots are re-read later with only the stamp
    moved (an automation that wrote an unchanged value: no event, a new stamp).
    """
    size = draw(st.integers(1, max_size))
    rows = [draw(change(i, spec)) for i in range(size)]
    snapshots = [r for r in rows if r["change_type"] == "SNAPSHOT"]
    if _STAMP in {f.name for f in spec.fields} and snapshots:
        for base in draw(st.lists(st.sampled_from(snapshots), max_size=2)):
            rows.append(_touched(draw, spec, base))
    return rows


def _touched(draw: st.DrawFn, spec: ObjectSpec, base: dict[str, Any]) -> dict[str, Any]:
    """`base` re-read after an event-less save moved its SystemModstamp 1-3 s later."""
    stamp = base["system_modstamp"] + dt.timedelta(seconds=draw(st.integers(1, 3)))
    read = stamp + dt.timedelta(milliseconds=draw(st.sampled_from([0, 500, 1000, 3000])))
    values = {f.name: base[f.column] for f in spec.fields}
    values[_STAMP] = stamp
    return ch.snapshot_change(
        spec,
        record_id=base["record_id"],
        values=values,
        system_modstamp=stamp,
        read_started_at=read,
        is_deleted=base["is_deleted"],
        source=base["source"],
    )


@st.composite
def deliveries(draw: st.DrawFn, history: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The history shuffled, some changes repeated, split into 1..4 batches."""
    rows = list(history)
    rows += draw(st.lists(st.sampled_from(history), max_size=len(history) // 2 + 1))
    rows = draw(st.permutations(rows))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=3)))
    bounds = [0, *cuts, len(rows)]
    return [rows[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _norm(v: Any) -> Any:
    if isinstance(v, Decimal) and v == v.to_integral_value() and v.as_tuple().exponent == 0:
        return int(v)
    return v


def read_current(warehouse: Warehouse, spec: ObjectSpec = SPEC) -> dict[str, dict[str, Any]]:
    """current as {id: row}, without load-time columns."""
    s = warehouse.schema_names
    tbl = warehouse.query_arrow(f"SELECT * FROM {_t(warehouse, s.current, spec.table)}")
    out = {}
    for row in tbl.to_pylist():
        row.pop("_synced_at")
        out[row["id"]] = {k: _norm(v) for k, v in row.items()}
    return out


def read_history(warehouse: Warehouse, spec: ObjectSpec = SPEC) -> list[dict[str, Any]]:
    """scd2 rows sorted by (id, _version), without load-time columns."""
    s = warehouse.schema_names
    tbl = warehouse.query_arrow(f"SELECT * FROM {_t(warehouse, s.history, spec.table)}")
    rows = []
    for row in tbl.to_pylist():
        row.pop("_synced_at")
        rows.append({k: _norm(v) for k, v in row.items()})
    return sorted(rows, key=lambda r: (r["id"], r["_version"]))


def normalize_expected(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reference rows in the readers' shape."""
    return sorted(
        ({k: _norm(v) for k, v in r.items()} for r in rows), key=lambda r: (r["id"], r["_version"])
    )


def _t(warehouse: Warehouse, schema: str, table: str) -> str:
    from sync_engine.warehouse import qualified

    return qualified(warehouse, schema, table)


def cdc(kind: str, n: int, rid: str, second: int, ms: int = 0, **kw: Any) -> dict[str, Any]:
    """A CDC row at BASE_SECOND + second (+ ms), event uuid evt-<n>."""
    return ch.cdc_change(
        SPEC,
        event_uuid=f"evt-{n}",
        record_id=rid,
        change_type=kind,
        commit_ms=(BASE_SECOND + second) * 1000 + ms,
        transaction_key=f"tx-{n}",
        sequence_number=1,
        replay_id=n,
        **kw,
    )


def snapshot(rid: str, second: int, read_ms: int, values: dict[str, Any], **kw: Any) -> dict:
    """A Bulk snapshot with SystemModstamp at BASE_SECOND + second, read at read_ms past it."""
    stamp = ch.ts_of((BASE_SECOND + second) * 1000)
    read = ch.ts_of((BASE_SECOND + second) * 1000 + read_ms)
    return ch.snapshot_change(
        SPEC, record_id=rid, values=values, system_modstamp=stamp, read_started_at=read, **kw
    )


FULL = {
    "Name": "Acme",
    "Amount": Decimal("100.00"),
    "CloseDate": dt.date(2024, 1, 31),
    "IsWon": False,
    "LastActivity__c": dt.datetime(2024, 1, 1, 12),
    "Tags__c": "a;b",
    "Quantity__c": 1,
    "AccountId": "001000000000001AAA",
}


def sample_history() -> list[dict[str, Any]]:
    """A fixed history touching every change type (for non-property tests)."""
    a, b = RECORD_IDS[0], RECORD_IDS[1]
    return [
        cdc("CREATE", 1, a, 0, values=FULL),
        cdc("UPDATE", 2, a, 1, values={"Amount": Decimal("250.50")}, changed_fields=["Amount"]),
        cdc("UPDATE", 3, a, 2, changed_fields=["Name"], nulled_fields=["Name"]),
        cdc("DELETE", 4, a, 3),
        cdc("UNDELETE", 5, a, 4, values={**FULL, "Amount": Decimal("250.50")}),
        snapshot(b, 0, 5000, FULL),
        cdc("UPDATE", 6, b, 2, values={"IsWon": True}, changed_fields=["IsWon"]),
        cdc("GAP_UPDATE", 7, b, 3),
    ]

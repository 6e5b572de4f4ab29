"""Column-only fills of a field added to an object (DESIGN §5 schema evolution).

A fill sets only the new field, sorts below every real change (it is the field's initial
value: any real change of the field overrides it) and never opens an scd2 version.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from sync_engine import changes as ch
from sync_engine.apply import apply_batch
from sync_engine.changes import build_batch
from sync_engine.reference_fold import fold
from sync_engine.spec import ObjectSpec
from tests.sync_engine.conftest import fresh_duckdb
from tests.sync_engine.histories import (
    BASE_SECOND,
    FULL,
    RECORD_IDS,
    SPEC,
    cdc,
    normalize_expected,
    read_current,
    read_history,
)

A, B = RECORD_IDS[0], RECORD_IDS[1]
NEW = "Tags__c"
# The object as described before Tags__c was added.
OLD_SPEC = ObjectSpec(SPEC.name, tuple(f for f in SPEC.fields if f.name != NEW))
BEFORE = {k: v for k, v in FULL.items() if k != NEW}


def _old_history() -> list[dict[str, Any]]:
    """Changes landed before the field existed: they do not set it."""
    update = {"Amount": Decimal("250.50")}
    return [
        ch.cdc_change(
            OLD_SPEC,
            event_uuid="evt-1",
            record_id=A,
            change_type="CREATE",
            commit_ms=BASE_SECOND * 1000,
            values=BEFORE,
        ),
        ch.cdc_change(
            OLD_SPEC,
            event_uuid="evt-2",
            record_id=A,
            change_type="UPDATE",
            commit_ms=(BASE_SECOND + 1) * 1000,
            values=update,
            changed_fields=["Amount"],
        ),
    ]


def _fill(rid: str, value: str, read_second: int = 10) -> dict[str, Any]:
    return ch.fill_change(
        SPEC,
        record_id=rid,
        fields=[NEW],
        values={NEW: value, "Name": "ignored: not a filled field"},
        read_started_at=ch.ts_of((BASE_SECOND + read_second) * 1000),
    )


def _apply(wh, *rows):
    return apply_batch(wh, SPEC, build_batch(SPEC, rows))


def test_a_fill_sets_only_its_fields_below_every_real_version():
    fill = _fill(A, "a;b")
    assert fill["set_fields"] == [NEW] and fill["name"] is None
    assert fill["version"] < cdc("UPDATE", 1, A, 0)["version"]
    assert ch.is_fill_version(fill["version"])
    assert _fill(A, "a;b", read_second=20)["version"] > fill["version"]  # later read wins
    with pytest.raises(ValueError, match="known fields"):
        ch.fill_change(
            SPEC, record_id=A, fields=["Nope__c"], values={}, read_started_at=fill["version_ts"]
        )


def test_a_fill_adds_no_scd2_version_and_fills_every_version(duck):
    _apply(duck, *_old_history())
    before = read_history(duck)
    assert len(before) == 2 and {r["tags__c"] for r in before} == {None}

    result = _apply(duck, _fill(A, "a;b"))

    after = read_history(duck)
    assert result.late == 1  # below every version: the record is re-folded, not re-versioned
    assert [{k: v for k, v in r.items() if k != NEW.lower()} for r in after] == [
        {k: v for k, v in r.items() if k != NEW.lower()} for r in before
    ]
    assert [r["tags__c"] for r in after] == ["a;b", "a;b"]
    assert read_current(duck)[A]["tags__c"] == "a;b"


def test_a_later_cdc_change_of_the_field_wins_over_the_fill(duck):
    _apply(duck, *_old_history())
    _apply(duck, _fill(A, "a;b", read_second=30))
    # Committed before the fill's read started: still a real change, so it wins.
    change = cdc("UPDATE", 3, A, 5, values={NEW: "c"}, changed_fields=[NEW])
    _apply(duck, change)
    assert read_current(duck)[A]["tags__c"] == "c"
    assert [r["tags__c"] for r in read_history(duck)] == ["a;b", "a;b", "c"]


def test_any_delivery_of_fills_and_changes_equals_the_reference_fold():
    history = [
        *_old_history(),
        _fill(A, "a;b"),
        _fill(B, "c"),
        cdc("UPDATE", 3, A, 5, values={NEW: "d"}, changed_fields=[NEW]),
    ]
    expected = fold(SPEC, history)
    # B has only a fill: a current row (its record is in Salesforce) and no version yet.
    assert B in expected.current and all(r["id"] != B for r in expected.history)
    want_current = {k: normalize_expected([v])[0] for k, v in expected.current.items()}
    want_history = normalize_expected(expected.history)
    # Every rotation, forwards and backwards, one change per batch and three per batch
    # (random deliveries with fills: the property tests of test_fold_properties.py).
    rotations = [history[i:] + history[:i] for i in range(len(history))]
    orders = [*rotations, *(list(reversed(r)) for r in rotations)]
    for order in orders:
        for cut in (1, 3):
            wh = fresh_duckdb()
            for i in range(0, len(order), cut):
                _apply(wh, *order[i : i + cut])
            assert read_current(wh) == want_current
            assert read_history(wh) == want_history
            wh.close()


def test_a_cdc_event_naming_a_field_the_spec_lacks_does_not_null_it():
    # Landed with the describe from before the field was added: the value cannot be
    # typed here (it stays in the payload), so the change must not set the field at all.
    row = ch.cdc_change(
        OLD_SPEC,
        event_uuid="evt-9",
        record_id=A,
        change_type="UPDATE",
        commit_ms=(BASE_SECOND + 2) * 1000,
        values={NEW: "x", "Amount": Decimal("1.00")},
        changed_fields=[NEW, "Amount"],
        nulled_fields=[NEW],
    )
    assert row["set_fields"] == ["Amount"]

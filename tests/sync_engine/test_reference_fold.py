"""The reference fold itself: small hand-checked cases."""

from __future__ import annotations

from decimal import Decimal

from sync_engine.reference_fold import fold
from tests.sync_engine.histories import FULL, RECORD_IDS, SPEC, cdc, sample_history

A = RECORD_IDS[0]


def test_fold_is_order_and_duplicate_independent():
    history = sample_history()
    assert fold(SPEC, history) == fold(SPEC, [*reversed(history), *history])


def test_update_before_any_create_leaves_other_fields_null_and_record_live():
    result = fold(SPEC, [cdc("UPDATE", 1, A, 0, values={"Name": "X"}, changed_fields=["Name"])])
    row = result.current[A]
    assert row["name"] == "X" and row["amount"] is None and row["is_deleted"] is False


def test_per_field_last_writer_wins():
    result = fold(
        SPEC,
        [
            cdc("CREATE", 1, A, 0, values=FULL),
            cdc("UPDATE", 3, A, 2, values={"Amount": Decimal("3")}, changed_fields=["Amount"]),
            cdc(
                "UPDATE",
                2,
                A,
                1,
                values={"Amount": Decimal("2"), "Name": "N"},
                changed_fields=["Amount", "Name"],
            ),
        ],
    )
    assert (result.current[A]["amount"], result.current[A]["name"]) == (Decimal("3"), "N")
    assert len(result.history) == 3

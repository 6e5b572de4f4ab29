"""Scripted faults on the write path: lost change events (``drop-events``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfdc_emulator.clock import Clock
from sfdc_emulator.faults import Faults
from sfdc_emulator.store import Mutation, OrgStore


def _lost_in(tmp_path: Path, seed: int, fraction: float, n: int) -> tuple[list[str], OrgStore]:
    """``n`` single-record creates on a fresh org with the drop fault armed: the ids
    whose events were lost, and the (open) store."""
    store = OrgStore(tmp_path, Clock(), Faults(seed=seed))
    store.faults.drop_events(fraction)
    lost: list[str] = []
    for i in range(n):
        result = store.commit([Mutation("create", "Account", values={"Name": f"A{i}"})])
        assert bool(result.replay_ids) != bool(result.dropped_ids)  # one event: kept or lost
        lost += result.dropped_ids
    return lost, store


def test_the_drop_fraction_is_honoured_and_reproducible_from_the_org_seed(tmp_path: Path) -> None:
    first, a = _lost_in(tmp_path / "a", seed=11, fraction=0.1, n=400)
    again, b = _lost_in(tmp_path / "b", seed=11, fraction=0.1, n=400)
    other, c = _lost_in(tmp_path / "c", seed=12, fraction=0.1, n=400)
    try:
        # same org seed, same commits: the same events are lost (ids are per-org counters)
        assert first == again
        assert first != other
        assert 20 <= len(first) <= 60  # 10% of 400, binomial sd = 6
        assert a.faults.events_dropped == len(first)
        # a lost event is not in the log at all, yet its commit stands
        logged = {i for e in a.events_after(0, None, 10_000) for i in e.record_ids}
        assert logged.isdisjoint(first) and len(logged) == 400 - len(first)
        assert all(a.get("Account", i) is not None for i in first)
    finally:
        for store in (a, b, c):
            store.close()


def test_the_count_caps_the_losses_then_the_fault_disarms(tmp_path: Path) -> None:
    with OrgStore(tmp_path) as store:
        store.faults.drop_events(1.0, count=2)
        results = [
            store.commit([Mutation("create", "Account", values={"Name": f"A{i}"})])
            for i in range(4)
        ]
        assert [bool(r.dropped_ids) for r in results] == [True, True, False, False]
        assert store.faults.snapshot()["event_drop"] is None
        assert store.faults.snapshot()["events_dropped"] == 2


def test_a_merged_event_is_lost_for_all_its_records(tmp_path: Path) -> None:
    with OrgStore(tmp_path) as store:
        ids = store.commit(
            [Mutation("create", "Account", values={"Name": f"A{i}"}) for i in range(3)]
        ).ids
        store.faults.drop_events(1.0, count=1)
        result = store.commit([Mutation("update", "Account", i, {"Phone": "555"}) for i in ids])
        assert result.replay_ids == [] and result.dropped_ids == ids
        assert all(store.get("Account", i)["Phone"] == "555" for i in ids)  # type: ignore[index]


def test_reset_disarms_the_drop_fault_and_zero_disarms_it_too(tmp_path: Path) -> None:
    with OrgStore(tmp_path) as store:
        store.faults.drop_events(1.0)
        assert store.faults.snapshot()["event_drop"] == {"fraction": 1.0, "remaining": None}
        store.faults.reset()
        created = store.commit([Mutation("create", "Account", values={"Name": "kept"})])
        assert created.replay_ids and not created.dropped_ids
        store.faults.drop_events(1.0)
        store.faults.drop_events(0)
        assert store.faults.snapshot()["event_drop"] is None


@pytest.mark.parametrize("fraction, count", [(-0.1, None), (1.5, None), (0.5, -1)])
def test_bad_drop_arguments_are_refused(fraction: float, count: int | None) -> None:
    with pytest.raises(ValueError):
        Faults().drop_events(fraction, count)

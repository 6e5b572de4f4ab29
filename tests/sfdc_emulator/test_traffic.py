"""Live traffic: mix, automation follow-ups, thread lifecycle, admin one-shots."""

from __future__ import annotations

import time
from datetime import UTC, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest

from sfdc_emulator import cdc
from sfdc_emulator import store as store_module
from sfdc_emulator.clock import Clock
from sfdc_emulator.generator import generate
from sfdc_emulator.store import OrgStore
from sfdc_emulator.traffic import DEFAULT_OBJECTS, Mix, TrafficGenerator
from tests.sfdc_emulator.conftest import ANCHOR


def _headers(store: OrgStore, after: int = 0) -> list[dict]:
    return [
        cdc.decode(store.schema_json(e.schema_id), e.payload)["ChangeEventHeader"]
        for e in store.events_after(after, None, 100_000)
    ]


def test_steps_commit_a_mix_of_changes_that_all_decode(store: OrgStore) -> None:
    traffic = TrafficGenerator(store, rate=0, seed=5, mix=Mix(automation_share=0))
    for _ in range(150):
        traffic.step()
    kinds = {h["changeType"] for h in _headers(store)}
    assert {"CREATE", "UPDATE", "DELETE"} <= kinds


def test_automation_follow_up_changes_system_modstamp_only(store: OrgStore) -> None:
    traffic = TrafficGenerator(
        store, rate=0, seed=7, mix=Mix(ops={"update": 1.0}, objects={"Opportunity": 1.0},
                                       automation_share=1.0, automation_delay=(0.0, 0.0),
                                       recalculation_share=0.0)
    )  # fmt: skip
    result = traffic.step()
    assert result is not None
    record = result.ids[0]
    before = store.get("Opportunity", record)
    store.clock.advance(2)
    traffic._run_due_automation()
    after = store.get("Opportunity", record)
    assert after["LastModifiedDate"] == before["LastModifiedDate"]
    assert after["SystemModstamp"] > before["SystemModstamp"]
    last = _headers(store)[-1]
    assert last["commitUser"] == store.automation_user_id
    assert last["recordIds"] == [record]


def test_a_recalculation_follow_up_moves_system_modstamp_a_later_second_with_no_event(
    store: OrgStore,
) -> None:
    """A workflow or roll-up recalculation after a user edit: nothing an event reports
    changes, yet SystemModstamp moves past the user's event (reference §5)."""
    traffic = TrafficGenerator(
        store, rate=0, seed=7, mix=Mix(ops={"update": 1.0}, objects={"Opportunity": 1.0},
                                       automation_share=1.0, automation_delay=(1.0, 1.0),
                                       recalculation_share=1.0)
    )  # fmt: skip
    result = traffic.step()
    assert result is not None and len(result.replay_ids) == 1
    (record,) = result.ids
    before = store.get("Opportunity", record)
    time.sleep(1.05)  # the follow-up is due 1 s (wall time) after the user's update
    traffic._run_due_automation()
    after = store.get("Opportunity", record)
    assert before is not None and after is not None
    assert store.latest_replay_id() == result.replay_ids[0]  # no further event
    assert after["SystemModstamp"] >= before["SystemModstamp"] + timedelta(seconds=1)
    assert after["SystemModstamp"].replace(tzinfo=UTC).timestamp() > result.commit_ts / 1000
    assert {k: v for k, v in after.items() if k != "SystemModstamp"} == {
        k: v for k, v in before.items() if k != "SystemModstamp"
    }
    assert traffic.stats["recalculation:Opportunity"] == 1


def test_thread_runs_at_roughly_the_rate_and_stops(store: OrgStore) -> None:
    traffic = TrafficGenerator(store, rate=40, seed=1)
    traffic.start()
    time.sleep(1.0)
    traffic.stop()
    assert not traffic.running
    done = store.latest_replay_id()
    assert 10 <= done <= 120
    time.sleep(0.2)
    assert store.latest_replay_id() == done


def test_admin_one_shots(store: OrgStore) -> None:
    traffic = TrafficGenerator(store, rate=0, seed=2)
    updated = traffic.update("Opportunity", 3)
    assert len(updated.ids) == 3
    deleted = traffic.delete("Task", 2)
    assert all(store.get("Task", i)["IsDeleted"] for i in deleted.ids)
    restored = traffic.undelete("Task", 1)
    assert not store.get("Task", restored.ids[0])["IsDeleted"]
    purged = traffic.purge("Lead", 1)
    assert store.get("Lead", purged.ids[0]) is None and purged.replay_ids == []
    gap = traffic.gap("Account", 2)
    assert _headers(store, gap.replay_ids[0] - 1)[0]["changeType"] == "GAP_UPDATE"
    bulk = traffic.overflow("Event", 50)
    assert len(bulk.ids) == 50
    headers = _headers(store, bulk.replay_ids[0] - 1)
    assert {h["changeType"] for h in headers} <= {"UPDATE", "CREATE"}
    assert {h["changeOrigin"] for h in headers} == {"com/salesforce/api/bulkapi/59.0"}


def test_random_picks_are_distinct_existing_records_of_the_asked_state(store: OrgStore) -> None:
    # Picks read a window of consecutive Ids (a range read, not a scan of the table).
    traffic = TrafficGenerator(store, 0.0, seed=11)
    live = set(store.truth("Task").filter(pc.equal(pc.field("IsDeleted"), False))["Id"].to_pylist())
    for count in (1, 5, 40):
        picked = traffic.random_ids("Task", count)
        assert len(picked) == len(set(picked)) == min(count, len(live))
        assert set(picked) <= live
    traffic.delete("Task", 3)
    deleted = traffic.random_ids("Task", 2, deleted=True)
    assert deleted and all(
        r["IsDeleted"] for r in store.truth("Task").to_pylist() if r["Id"] in deleted
    )
    # Different seeds pick different records: the window's start is random.
    other = TrafficGenerator(store, 0.0, seed=12).random_ids("Task", 5)
    assert other != TrafficGenerator(store, 0.0, seed=11).random_ids("Task", 5)


def test_undelete_takes_the_newest_recent_delete_still_in_the_recycle_bin(store: OrgStore) -> None:
    traffic = TrafficGenerator(store, 0.0, seed=4)
    first, second, third = (traffic.delete("Task", 1).ids[0] for _ in range(3))
    assert traffic.undelete("Task", 1).ids == [third]
    # someone else restored the next one: the one before it is picked
    store.commit([store_module.Mutation("undelete", "Task", second)])
    assert traffic.random_ids("Task", 1, deleted=True) == [first]
    assert traffic.random_ids("Task", 5, deleted=True)[-1] == first


class _FixedClock(Clock):
    """Wall time left out: two orgs given the same commits get the same stamps."""

    def now_ms(self) -> int:
        return int(ANCHOR.timestamp() * 1000) + 3_600_000 + self.offset_ms


def test_traffic_writes_the_same_rows_as_setting_every_column_of_an_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small commit's updates write only the columns that changed: the org ends the
    same as when every column of every updated row is written."""
    truths, stats = [], []
    for narrow in (True, False):
        if not narrow:
            monkeypatch.setattr(store_module, "_update_changed", lambda cur, spec, d, b: dict(d))
        org = OrgStore(tmp_path / f"org-{narrow}", clock=_FixedClock())
        generate(org, "tiny", seed=1, anchor=ANCHOR)
        seeded = {obj: org.truth(obj) for obj in DEFAULT_OBJECTS}
        mix = Mix(automation_share=0.5, automation_delay=(0.0, 0.0))
        traffic = TrafficGenerator(org, 0.0, seed=9, mix=mix)
        for _ in range(300):
            traffic.step()
            traffic._run_due_automation()
        truths.append({obj: org.truth(obj) for obj in DEFAULT_OBJECTS})
        stats.append(dict(traffic.stats))
        org.close()
    assert stats[0] == stats[1]
    assert any(k.startswith(("update:", "automation:")) for k in stats[0])
    assert any(truths[0][obj] != seeded[obj] for obj in DEFAULT_OBJECTS)
    for obj in DEFAULT_OBJECTS:
        assert truths[0][obj] == truths[1][obj], obj


def test_user_updates_are_stamped_by_live_users_and_a_new_user_is_picked_at_once(
    store: OrgStore,
) -> None:
    mix = Mix(ops={"update": 1.0}, objects={"Task": 1.0}, automation_share=0)
    traffic = TrafficGenerator(store, 0.0, seed=6, mix=mix)
    users = store.truth("User").to_pylist()
    live = {u["Id"] for u in users if not u["IsDeleted"]}
    for _ in range(20):
        result = traffic.step()
        assert result is not None
        assert store.get("Task", result.ids[0])["LastModifiedById"] in live
    created = store.commit(
        [store_module.Mutation("create", "User", values=traffic._create_values("User"))]
    )
    assert created.ids[0] in {traffic._random_user() for _ in range(500)}


def test_traffic_creates_and_purges_survive_a_restart(tmp_path: Path) -> None:
    """The Id counters and the last physical delete are written with each commit."""
    org = OrgStore(tmp_path / "org")
    generate(org, "tiny", seed=1, anchor=ANCHOR)
    traffic = TrafficGenerator(org, 0.0, seed=8, mix=Mix(ops={"create": 1.0}))
    created = [r.ids[0] for r in (traffic.step() for _ in range(30)) if r is not None]
    purged = traffic.purge("Lead", 1)
    counters = org.ids.counters()
    org.close()
    reopened = OrgStore(tmp_path / "org")
    try:
        assert reopened.ids.counters() == counters
        assert reopened.last_physical_delete("Lead") == purged.commit_ts
        by_prefix = {reopened.schema.get(obj).key_prefix: obj for obj in DEFAULT_OBJECTS}
        assert len(created) > 20
        assert all(reopened.get(by_prefix[i[:3]], i) is not None for i in created)
        fresh = TrafficGenerator(reopened, 0.0, seed=9, mix=Mix(ops={"create": 1.0}))
        again = fresh.step()
        assert again is not None and again.ids[0] not in created
    finally:
        reopened.close()

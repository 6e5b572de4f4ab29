"""Seeded data generation: determinism, relationships, time spread."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sfdc_emulator.generator import generate, plan
from sfdc_emulator.store import OrgStore
from tests.sfdc_emulator.conftest import ANCHOR

OBJECTS = (
    "User",
    "Account",
    "Contact",
    "Lead",
    "Opportunity",
    "OpportunityLineItem",
    "Task",
    "Event",
)


def _ids(store: OrgStore, obj: str) -> set[str]:
    return set(store.truth(obj).column("Id").to_pylist())


def _refs(store: OrgStore, obj: str, column: str) -> set[str]:
    return {v for v in store.truth(obj).column(column).to_pylist() if v is not None}


def test_same_seed_gives_identical_orgs(tmp_path: Path) -> None:
    tables = []
    for name in ("a", "b"):
        store = OrgStore(tmp_path / name)
        generate(store, "tiny", seed=42, anchor=ANCHOR)
        system = pa.array([store.integration_user_id, store.automation_user_id])
        # the two system users are stamped when the store is created, not by the generator
        users = store.truth("User")
        users = users.filter(pc.invert(pc.is_in(users.column("Id"), value_set=system)))
        tables.append({**{obj: store.truth(obj) for obj in OBJECTS}, "User": users})
        store.close()
    for obj in OBJECTS:
        assert tables[0][obj].equals(tables[1][obj]), obj


def test_different_seeds_give_different_orgs(tmp_path: Path) -> None:
    names = []
    for seed in (1, 2):
        store = OrgStore(tmp_path / str(seed))
        generate(store, "tiny", seed=seed, anchor=ANCHOR)
        names.append(store.truth("Opportunity").column("Amount").to_pylist())
        store.close()
    assert names[0] != names[1]


def test_tiny_scale_has_tens_of_rows_per_object(store: OrgStore) -> None:
    for obj in OBJECTS:
        assert 5 <= store.count(obj, include_deleted=True) <= 100, obj


def test_relationships_point_at_existing_records(store: OrgStore) -> None:
    users = _ids(store, "User")
    accounts = _ids(store, "Account")
    assert _refs(store, "Contact", "AccountId") <= accounts
    assert _refs(store, "Opportunity", "AccountId") <= accounts
    assert _refs(store, "Account", "ParentId") <= accounts
    assert _refs(store, "OpportunityLineItem", "OpportunityId") <= _ids(store, "Opportunity")
    for activity in ("Task", "Event"):
        assert _refs(store, activity, "WhatId") <= accounts | _ids(store, "Opportunity")
        assert _refs(store, activity, "WhoId") <= _ids(store, "Contact") | _ids(store, "Lead")
    for obj in OBJECTS:
        if obj != "User" and obj != "OpportunityLineItem":
            assert _refs(store, obj, "OwnerId") <= users, obj
        assert _refs(store, obj, "CreatedById") <= users, obj


def test_system_timestamps_are_ordered_and_spread_over_two_years(tmp_path: Path) -> None:
    store = OrgStore(tmp_path / "org")
    generate(store, 5000, seed=3, anchor=ANCHOR)
    tasks = store.truth("Task")
    created = tasks.column("CreatedDate")
    modified = tasks.column("LastModifiedDate")
    stamp = tasks.column("SystemModstamp")
    assert pc.all(pc.less_equal(created, modified)).as_py()
    assert pc.all(pc.less_equal(modified, stamp)).as_py()
    anchor = ANCHOR.replace(tzinfo=None)
    assert pc.max(stamp).as_py() <= anchor
    assert pc.min(stamp).as_py() < anchor - timedelta(days=600)
    days = pc.count_distinct(pc.cast(stamp, "date32")).as_py()
    assert days > 300
    assert all(v.microsecond == 0 for v in stamp.to_pylist()[:100])
    deleted = pc.sum(tasks.column("IsDeleted")).as_py()
    assert 0 < deleted < tasks.num_rows * 0.05
    assert store.latest_replay_id() == 0
    store.close()


def test_generated_opportunities_are_consistent_with_their_stage(store: OrgStore) -> None:
    for row in store.truth("Opportunity").to_pylist():
        assert row["IsWon"] == (row["StageName"] == "Closed Won")
        assert row["IsClosed"] == row["StageName"].startswith("Closed")
        if row["Amount"] is not None:
            assert row["ExpectedRevenue"] == round(row["Amount"] * int(row["Probability"]) / 100, 2)


def test_int_scale_means_that_many_tasks_with_the_rest_proportional() -> None:
    counts = plan(100_000).counts
    assert counts["Task"] == 100_000
    assert counts["Opportunity"] == 5_000
    assert counts["OpportunityLineItem"] == 2 * counts["Opportunity"]
    with pytest.raises(ValueError):
        plan("enormous")


def test_counts_override_single_objects_and_the_org_holds_exactly_them(tmp_path: Path) -> None:
    # A production-shaped ratio (bench.scale): many Opportunities, few Accounts.
    overrides = {"Opportunity": 300, "Account": 7, "Task": 500}
    store = OrgStore(tmp_path / "org")
    try:
        counts = generate(store, 1000, seed=1, anchor=ANCHOR, counts=overrides)
        assert {k: counts[k] for k in overrides} == overrides
        assert counts["Event"] == plan(1000).counts["Event"]
        for obj in OBJECTS:
            if obj != "User":  # the org also holds its system users (Automated Process, ...)
                assert store.count(obj, include_deleted=True) == counts[obj]
        # Children still point at parents that exist, however few.
        assert _refs(store, "Opportunity", "AccountId") <= _ids(store, "Account")
    finally:
        store.close()


def test_counts_override_refuses_unknown_objects_and_empty_counts() -> None:
    with pytest.raises(ValueError, match="unknown object 'Opportunities'"):
        plan(1000, {"Opportunities": 5})
    with pytest.raises(ValueError, match="at least 1"):
        plan(1000, {"Task": 0})


def test_serve_parses_counts_and_traffic_weights_and_names_a_bad_one() -> None:
    from sfdc_emulator.cli import build_parser

    ns = build_parser().parse_args(
        ["serve", "--state-dir", "x", "--count", "Task=10", "--traffic-object", "Task=0.5"]
    )
    assert ns.count == [("Task", 10)] and ns.traffic_object == [("Task", 0.5)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--state-dir", "x", "--count", "Task"])


def test_the_server_refuses_traffic_weights_for_objects_the_traffic_cannot_change(
    tmp_path: Path,
) -> None:
    from sfdc_emulator.server import EmulatorServer

    with pytest.raises(ValueError, match="traffic object weights"):
        EmulatorServer(tmp_path / "org", traffic_objects={"Invoice__c": 1.0})

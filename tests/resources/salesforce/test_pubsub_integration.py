"""CDC over real gRPC/TLS: exactly-once drains, gaps, overflow, expired replay ids."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from resources.salesforce.errors import ReplayIdExpiredError
from resources.salesforce.pubsub import ReplayPolicy, replay_bytes
from resources.salesforce.resource import SalesforceClient
from tests.resources.salesforce.conftest import CHANNELS, Emulator

REVENUE = "/data/RevenueChannel__chn"


def expected_changes(emulator: Emulator, after: int, entities: list[str]) -> Counter[tuple]:
    """(event uuid, record id) of every event of ``entities`` after replay id ``after``."""
    cur = emulator.store.read_cursor()
    try:
        rows = cur.execute(
            "SELECT event_uuid, record_ids, change_type FROM _events "
            "WHERE replay_id > ? AND list_contains(?, entity) ORDER BY replay_id",
            [after, entities],
        ).fetchall()
    finally:
        cur.close()
    return Counter((uuid, rid) for uuid, ids, ct in rows if ct != "GAP_OVERFLOW" for rid in ids)


def drain_all(client: SalesforceClient, topic: str, cursor: bytes, **kw) -> tuple:  # type: ignore[no-untyped-def]
    rows, resubscribes = [], 0
    client.pubsub.idle_s = 0.5
    for _ in range(kw.get("rounds", 100)):
        res = client.pubsub.drain(topic, cursor, max_events=kw.get("max_events", 25), max_seconds=5)
        rows.extend(res.rows)
        resubscribes += res.resubscribes
        if res.replay_id is not None:
            cursor = res.replay_id
        if res.events == 0:
            break
    return rows, cursor, resubscribes


def test_drain_after_live_traffic_reproduces_every_change_exactly_once(
    emulator: Emulator, client: SalesforceClient
) -> None:
    from sfdc_emulator.traffic import TrafficGenerator
    from sync_engine.changes import cdc_change_id

    start = emulator.store.latest_replay_id()
    traffic = TrafficGenerator(emulator.store, rate=60, seed=7)
    traffic.start()
    time.sleep(1.0)
    # A resubscribe mid-way re-delivers events and a transient UNAVAILABLE forces another.
    emulator.faults.duplicate_on_resubscribe(3)
    emulator.faults.pubsub_error("UNAVAILABLE", count=1)
    client.governor.retry_policy = type(client.governor.retry_policy)(base_s=0.05, cap_s=0.2)
    # Drain while the traffic keeps committing, then stop it and drain the rest.
    rows, cursor, resubscribes = drain_all(client, REVENUE, replay_bytes(start), rounds=4)
    traffic.stop()
    more, cursor, _ = drain_all(client, REVENUE, cursor)
    rows += more

    expected = expected_changes(emulator, start, CHANNELS[REVENUE])
    got = Counter((r.event_id, r.record_id) for r in rows if r.record_id is not None)
    assert len(expected) > 50
    assert set(got) == set(expected)  # nothing lost, nothing invented
    change_ids = [cdc_change_id(e, r) for e, r in got.elements()]
    assert len(set(change_ids)) == len(expected)  # duplicates collapse by change id
    assert resubscribes >= 1


def test_drained_changes_land_as_idempotent_micro_batches(
    emulator: Emulator, client: SalesforceClient, tmp_path
) -> None:
    from resources.landing import LandingStore
    from resources.salesforce.to_changes import land_cdc
    from sfdc_emulator.store import Mutation
    from sync_engine.spec import ObjectSpec

    start = emulator.store.latest_replay_id()
    opp = next(client.rest.query_all("SELECT Id FROM Opportunity WHERE IsDeleted = false LIMIT 1"))
    emulator.store.commit(
        [Mutation("update", "Opportunity", opp["Id"], {"Amount": 1234.5, "Description": "note"})]
    )
    res = client.pubsub.drain(REVENUE, replay_bytes(start), max_events=100, max_seconds=5)
    specs = {"Opportunity": ObjectSpec.from_describe(client.rest.describe_body("Opportunity"))}
    landing = LandingStore(str(tmp_path / "landing"))
    [manifest] = land_cdc(landing, REVENUE, res.rows, specs)
    again = land_cdc(landing, REVENUE, res.rows, specs)
    assert again == [manifest] and len(list(landing.manifests("cdc"))) == 1
    row = landing.read(manifest).row(0, named=True)
    assert row["record_id"] == opp["Id"] and row["change_type"] == "UPDATE"
    assert {"Amount", "Description"} <= set(row["set_fields"])
    assert str(row["amount"]) == "1234.50" and row["description"] == "note"


def test_gap_events_are_classified_for_rest_repair(
    emulator: Emulator, client: SalesforceClient
) -> None:
    start = emulator.store.latest_replay_id()
    ids = [
        r["Id"]
        for r in client.rest.query_all("SELECT Id FROM Opportunity WHERE IsDeleted = false LIMIT 3")
    ]
    emulator.store.gap("Opportunity", ids, {"Description": "changed outside the app server"})
    res = client.pubsub.drain(REVENUE, replay_bytes(start), max_events=100, max_seconds=5)
    assert res.gaps == {"Opportunity": set(ids)}
    assert {r.change_type for r in res.rows} == {"GAP_UPDATE"}
    assert all(r.set_fields == () for r in res.rows)
    repaired = client.rest.retrieve(
        "Opportunity",
        sorted(res.gaps["Opportunity"]),
        ["Id", "Description", "SystemModstamp", "IsDeleted"],
    )
    assert {r["Id"] for r in repaired.records} == set(ids)
    assert repaired.observed_at_ms > 0


def test_overflow_is_classified_for_re_backfill(
    emulator: Emulator, client: SalesforceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sfdc_emulator import store as store_module
    from sfdc_emulator.store import Mutation

    monkeypatch.setattr(store_module, "OVERFLOW_LIMIT", 4)
    start = emulator.store.latest_replay_id()
    ids = [
        r["Id"]
        for r in client.rest.query_all("SELECT Id FROM Account WHERE IsDeleted = false LIMIT 8")
    ]
    result = emulator.store.commit(
        [Mutation("update", "Account", i, {"Industry": f"Industry {n}"}) for n, i in enumerate(ids)]
    )
    res = client.pubsub.drain(REVENUE, replay_bytes(start), max_events=100, max_seconds=5)
    assert res.overflows == {"Account": result.commit_ts}
    assert any(r.change_type == "GAP_OVERFLOW" and r.record_id is None for r in res.rows)


def test_unknown_replay_id_surfaces_as_its_own_error(client: SalesforceClient) -> None:
    with pytest.raises(ReplayIdExpiredError, match="LATEST"):
        client.pubsub.drain(REVENUE, replay_bytes(10**15), max_events=10, max_seconds=3)


def test_no_stored_replay_id_needs_an_explicit_policy(client: SalesforceClient) -> None:
    with pytest.raises(ValueError, match="policy"):
        client.pubsub.drain(REVENUE, None)
    res = client.pubsub.drain(REVENUE, None, policy=ReplayPolicy.LATEST, max_seconds=2)
    assert res.events == 0


def test_expired_replay_id_after_retention_surfaces_as_its_own_error(
    emulator: Emulator, client: SalesforceClient
) -> None:
    from sfdc_emulator.store import Mutation

    # Runs last in this module: it moves the org's clock past the 72 h retention.
    start = emulator.store.latest_replay_id()
    opp = next(client.rest.query_all("SELECT Id FROM Opportunity WHERE IsDeleted = false LIMIT 1"))[
        "Id"
    ]
    emulator.store.commit([Mutation("update", "Opportunity", opp, {"Description": "old"})])
    emulator.store.clock.advance(73 * 3600)
    emulator.store.commit([Mutation("update", "Opportunity", opp, {"Description": "new"})])
    with pytest.raises(ReplayIdExpiredError) as err:
        client.pubsub.drain(REVENUE, replay_bytes(start), max_events=10, max_seconds=3)
    assert err.value.error_code.endswith("replayid.corrupted")

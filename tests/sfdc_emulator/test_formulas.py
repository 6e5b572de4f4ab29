"""Formula fields as Salesforce has them (issue 10): describe says ``calculated`` with a
``calculatedFormula``, reads (truth, REST, Bulk) return the evaluated value, change events
never carry them (null in the body, in no bitmap), and a cross-object formula changes with
its parent while nothing happens to the child: no event, no stamp."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from typing import Any

import pytest

from sfdc_emulator import cdc
from sfdc_emulator.describe import DEFAULT_OBJECTS
from sfdc_emulator.formulas import CrossObjectFormula, cross_object_formulas
from sfdc_emulator.store import Mutation, OrgStore
from tests.sfdc_emulator.http_fixtures import Emulator, emulator

__all__ = ["emulator"]

OPPORTUNITY = {"Name": "Deal", "StageName": "Prospecting", "CloseDate": date(2025, 3, 31)}


def _decode(store: OrgStore, replay_ids: list[int]) -> list[dict[str, Any]]:
    events = store.events_after(min(replay_ids) - 1, None, len(replay_ids))
    return [cdc.decode(store.schema_json(e.schema_id), e.payload) for e in events]


def _named(store: OrgStore, event: dict[str, Any], key: str) -> set[str]:
    """Top-level field names of one bitmap list of a decoded event (reference §2.4)."""
    schema_id = store.current_schema_id(event["ChangeEventHeader"]["entityName"])
    names = [f["name"] for f in json.loads(store.schema_json(schema_id))["fields"]]
    top = [b for b in event["ChangeEventHeader"][key] if b.startswith("0x")]
    return {n for b in top for i, n in enumerate(names) if int(b, 16) >> i & 1}


def _account(store: OrgStore, rating: str | None) -> str:
    values = {"Name": "Parent", "Rating": rating}
    return store.commit([Mutation("create", "Account", values=values)]).ids[0]


def test_the_catalog_declares_formulas_in_describe_and_finds_the_cross_object_one() -> None:
    opportunity = next(s for s in DEFAULT_OBJECTS if s.name == "Opportunity")
    body = {f["name"]: f for f in opportunity.describe_json("59.0")["fields"]}
    for name in ("ExpectedRevenue", "Account_Rating__c"):
        assert body[name]["calculated"] is True and body[name]["calculatedFormula"]
        assert not body[name]["createable"] and not body[name]["updateable"]
    assert body["Account_Rating__c"]["calculatedFormula"] == "TEXT(Account.Rating)"
    assert cross_object_formulas(DEFAULT_OBJECTS) == [
        CrossObjectFormula(
            "Opportunity", "Account_Rating__c", "AccountId", "Account", "Rating", "string"
        )
    ]
    # the person Name is calculated but no formula: it travels as its compound components
    contact = next(s for s in DEFAULT_OBJECTS if s.name == "Contact")
    assert contact.field("Name").calculated and not contact.field("Name").is_formula


def test_formula_fields_are_null_in_create_update_and_undelete_events_and_in_no_bitmap(
    empty_store: OrgStore,
) -> None:
    store = empty_store
    parent = _account(store, "Hot")
    created = store.commit(
        [
            Mutation(
                "create", "Opportunity", values={**OPPORTUNITY, "Amount": 1000, "AccountId": parent}
            )
        ]
    )
    (opp,) = created.ids
    row = store.get("Opportunity", opp)
    assert row is not None
    assert row["ExpectedRevenue"] == 100 and row["Account_Rating__c"] == "Hot"  # truth

    (create,) = _decode(store, created.replay_ids)
    assert create["ExpectedRevenue"] is None and create["Account_Rating__c"] is None
    assert create["Amount"] == 1000.0

    # Amount and StageName move ExpectedRevenue; only the inputs are reported
    updated = store.commit([Mutation("update", "Opportunity", opp, {"StageName": "Closed Won"})])
    (update,) = _decode(store, updated.replay_ids)
    assert store.get("Opportunity", opp)["ExpectedRevenue"] == 1000  # type: ignore[index]
    assert "ExpectedRevenue" not in _named(store, update, "changedFields")
    assert {"StageName", "Probability"} <= _named(store, update, "changedFields")
    assert update["ExpectedRevenue"] is None

    nulled = store.commit([Mutation("update", "Opportunity", opp, {"Amount": None})])
    (nulling,) = _decode(store, nulled.replay_ids)
    assert _named(store, nulling, "nulledFields") == {"Amount"}
    assert _named(store, nulling, "changedFields") - {"LastModifiedDate"} == {"Amount"}

    store.commit([Mutation("update", "Opportunity", opp, {"Amount": 400})])
    store.commit([Mutation("delete", "Opportunity", opp)])
    restored = store.commit([Mutation("undelete", "Opportunity", opp)])
    (undelete,) = _decode(store, restored.replay_ids)
    assert undelete["ChangeEventHeader"]["changeType"] == "UNDELETE"
    assert undelete["Amount"] == 400.0 and undelete["ExpectedRevenue"] is None
    assert undelete["Account_Rating__c"] is None
    assert store.get("Opportunity", opp)["ExpectedRevenue"] == 400  # type: ignore[index]


def test_changes_that_differ_only_in_formula_values_merge_into_one_event(
    empty_store: OrgStore,
) -> None:
    store = empty_store
    ids = store.commit(
        [
            Mutation("create", "Opportunity", values={**OPPORTUNITY, "Probability": p})
            for p in (10, 60)
        ]
    ).ids
    # same Amount, different Probability: different ExpectedRevenue, one identical event
    result = store.commit([Mutation("update", "Opportunity", i, {"Amount": 500}) for i in ids])
    (event,) = _decode(store, result.replay_ids)
    assert event["ChangeEventHeader"]["recordIds"] == ids
    assert [store.get("Opportunity", i)["ExpectedRevenue"] for i in ids] == [50, 300]  # type: ignore[index]


def test_a_parent_change_alters_the_child_formula_without_an_event_or_a_stamp_on_the_child(
    empty_store: OrgStore,
) -> None:
    store = empty_store
    parent = _account(store, "Cold")
    children = store.commit(
        [Mutation("create", "Opportunity", values={**OPPORTUNITY, "AccountId": parent})] * 3
    ).ids
    before = {i: store.get("Opportunity", i) for i in children}
    assert {r["Account_Rating__c"] for r in before.values()} == {"Cold"}  # type: ignore[index]
    store.advance_clock(5)  # any stamp the parent change wrote on a child would show
    mark = store.latest_replay_id()

    changed = store.commit([Mutation("update", "Account", parent, {"Rating": "Hot"})])

    for rid, old in before.items():
        new = store.get("Opportunity", rid)
        assert old is not None and new is not None
        assert new["Account_Rating__c"] == "Hot"
        assert {k: v for k, v in new.items() if k != "Account_Rating__c"} == {
            k: v for k, v in old.items() if k != "Account_Rating__c"
        }
    events = store.events_after(mark, None, 100)
    assert [(e.entity, e.record_ids) for e in events] == [("Account", [parent])]
    assert events[0].replay_id == changed.replay_ids[0]

    # an unrelated Account change leaves the formula alone; nulling the source nulls it
    store.commit([Mutation("update", "Account", parent, {"Phone": "555"})])
    assert store.get("Opportunity", children[0])["Account_Rating__c"] == "Hot"  # type: ignore[index]
    store.commit([Mutation("update", "Account", parent, {"Rating": None})])
    assert store.get("Opportunity", children[0])["Account_Rating__c"] is None  # type: ignore[index]


def test_the_formula_follows_a_reparented_child_a_same_transaction_parent_change_and_a_purge(
    empty_store: OrgStore,
) -> None:
    store = empty_store
    warm, hot = _account(store, "Warm"), _account(store, "Hot")
    (opp,) = store.commit(
        [Mutation("create", "Opportunity", values={**OPPORTUNITY, "AccountId": warm})]
    ).ids
    store.commit([Mutation("update", "Opportunity", opp, {"AccountId": hot})])
    assert store.get("Opportunity", opp)["Account_Rating__c"] == "Hot"  # type: ignore[index]
    # the child is written (stale value in its working row) in the same transaction in
    # which its parent changes: the committed value is the parent's new one
    store.commit(
        [
            Mutation("update", "Opportunity", opp, {"Description": "renewal"}),
            Mutation("update", "Account", hot, {"Rating": "Cold"}),
        ]
    )
    assert store.get("Opportunity", opp)["Account_Rating__c"] == "Cold"  # type: ignore[index]
    store.commit([Mutation("purge", "Account", hot)])
    assert store.get("Opportunity", opp)["Account_Rating__c"] is None  # type: ignore[index]
    # a gap change (outside the app server) of the source field is evaluated too
    store.commit([Mutation("update", "Opportunity", opp, {"AccountId": warm})])
    store.gap("Account", [warm], {"Rating": "Hot"})
    assert store.get("Opportunity", opp)["Account_Rating__c"] == "Hot"  # type: ignore[index]


def test_a_large_transaction_rewriting_children_and_their_parent_commits_the_new_value(
    empty_store: OrgStore,
) -> None:
    """More than tables.SMALL_WRITE rows take the delete + bulk insert path."""
    store = empty_store
    parent = _account(store, "Warm")
    create = Mutation("create", "Opportunity", values={**OPPORTUNITY, "AccountId": parent})
    children = store.commit([create] * 20).ids
    store.commit(
        [Mutation("update", "Opportunity", i, {"NextStep": "sign"}) for i in children]
        + [Mutation("update", "Account", parent, {"Rating": "Hot"})]
    )
    assert {store.get("Opportunity", i)["Account_Rating__c"] for i in children} == {"Hot"}  # type: ignore[index]


def test_seeded_children_read_their_parents_value(store: OrgStore) -> None:
    with store.read_cursor() as cur:
        mismatched, total, rated = cur.execute(
            'SELECT count(*) FILTER (WHERE o."Account_Rating__c" IS DISTINCT FROM a."Rating"), '
            'count(*), count(o."Account_Rating__c") FROM "Opportunity" o '
            'LEFT JOIN "Account" a ON a."Id" = o."AccountId"'
        ).fetchone()
    assert mismatched == 0 and total > 0 and rated > 0


def test_a_field_a_formula_reads_cannot_be_removed(empty_store: OrgStore) -> None:
    with pytest.raises(ValueError, match=r"Opportunity.Account_Rating__c reads it"):
        empty_store.schema.remove_field("Account", "Rating")
    with pytest.raises(ValueError, match=r"Opportunity.Account_Rating__c reads it"):
        empty_store.schema.remove_field("Opportunity", "AccountId")


def test_formula_fields_are_read_only_on_the_write_path(empty_store: OrgStore) -> None:
    with pytest.raises(ValueError, match="Account_Rating__c"):
        empty_store.commit(
            [Mutation("create", "Opportunity", values={**OPPORTUNITY, "Account_Rating__c": "Hot"})]
        )


def _bulk(em: Emulator, soql: str, *, all_rows: bool = False) -> dict[str, dict[str, str]]:
    job = em.sf().bulk2.Opportunity
    pages = (job.query_all if all_rows else job.query)(soql, wait=0.1)
    return {r["Id"]: r for page in pages for r in csv.DictReader(io.StringIO(page))}


def test_bulk_and_rest_read_the_new_formula_value_after_a_parent_change(emulator: Emulator) -> None:
    store, sf = emulator.store, emulator.sf()
    parent = store.commit([Mutation("create", "Account", values={"Name": "P", "Rating": "Warm"})])
    (account,) = parent.ids
    children = store.commit(
        [Mutation("create", "Opportunity", values={**OPPORTUNITY, "AccountId": account})] * 2
    ).ids
    stamps = {i: store.get("Opportunity", i)["SystemModstamp"] for i in children}  # type: ignore[index]
    store.advance_clock(3)
    mark = store.latest_replay_id()
    change = {"op": "update", "object": "Account", "id": account, "values": {"Rating": "Hot"}}
    emulator.admin("commit", mutations=[change])

    # WHERE on normal fields, the formula in the field list, Bulk 2.0 and REST alike
    soql = (
        "SELECT Id, Account_Rating__c, SystemModstamp FROM Opportunity "
        f"WHERE AccountId = '{account}' AND StageName = 'Prospecting'"
    )
    bulk = _bulk(emulator, soql)
    rest = {r["Id"]: r for r in sf.query_all(soql)["records"]}
    assert set(bulk) == set(rest) == set(children)
    assert {r["Account_Rating__c"] for r in bulk.values()} == {"Hot"}
    assert {r["Account_Rating__c"] for r in rest.values()} == {"Hot"}
    for rid in children:
        assert store.get("Opportunity", rid)["SystemModstamp"] == stamps[rid]  # type: ignore[index]
        assert rest[rid]["SystemModstamp"].startswith(stamps[rid].strftime("%Y-%m-%dT%H:%M:%S"))
    record = sf.Opportunity.get(children[0])
    assert record["Account_Rating__c"] == "Hot"
    # filtering on the formula itself works too (Salesforce allows it on formula text)
    hot = _bulk(emulator, f"SELECT Id FROM Opportunity WHERE Account_Rating__c = 'Hot' "
                          f"AND AccountId = '{account}'")  # fmt: skip
    assert set(hot) == set(children)
    # no event of any child
    assert store.events_after(mark, ["Opportunity"], 100) == []
    truth = {r["Id"]: r for r in store.truth("Opportunity").to_pylist() if r["Id"] in children}
    assert {r["Account_Rating__c"] for r in truth.values()} == {"Hot"}

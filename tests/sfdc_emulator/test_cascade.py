"""Cascade deletes: a deleted Account or Opportunity takes its children to the Recycle Bin,
with no change event for them; an undelete brings back what the delete took."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sfdc_emulator.store import Mutation, OrgStore


def _rows(store: OrgStore, name: str) -> list[dict[str, Any]]:
    return store.truth(name).to_pylist()


def _family(store: OrgStore, account: str) -> dict[str, set[str]]:
    """The account's live children and grandchildren, by object."""
    opps = {o["Id"] for o in _rows(store, "Opportunity") if o["AccountId"] == account}
    parents = {account} | opps
    return {
        "Contact": {c["Id"] for c in _rows(store, "Contact") if c["AccountId"] == account},
        "Opportunity": opps,
        "OpportunityLineItem": {
            li["Id"] for li in _rows(store, "OpportunityLineItem") if li["OpportunityId"] in opps
        },
        "Task": {t["Id"] for t in _rows(store, "Task") if t["WhatId"] in parents},
        "Event": {e["Id"] for e in _rows(store, "Event") if e["WhatId"] in parents},
    }


def _busiest_account(store: OrgStore) -> str:
    live = {a["Id"] for a in _rows(store, "Account") if not a["IsDeleted"]}
    counts = Counter(
        o["AccountId"]
        for o in _rows(store, "Opportunity")
        if o["AccountId"] in live and not o["IsDeleted"]
    )
    return max(live, key=lambda a: (counts[a], a))


def _state(store: OrgStore, family: dict[str, set[str]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, ids in family.items():
        for row in _rows(store, name):
            if row["Id"] in ids:
                out[row["Id"]] = (row["IsDeleted"], row["SystemModstamp"])
    return out


def test_a_deleted_account_takes_its_children_with_no_event_for_them(store: OrgStore) -> None:
    account = _busiest_account(store)
    family = _family(store, account)
    before = _state(store, family)
    live = {rid for rid, (deleted, _) in before.items() if not deleted}
    assert family["Opportunity"] and family["OpportunityLineItem"] and family["Contact"]
    mark = store.latest_replay_id()
    result = store.commit([Mutation("delete", "Account", account)])
    after = _state(store, family)
    (stamp,) = {r["SystemModstamp"] for r in _rows(store, "Account") if r["Id"] == account}
    for rid in live:
        assert after[rid] == (True, stamp), rid  # in getDeleted / queryAll, same second
    # One event: the Account's DELETE (none for what the cascade took).
    events = store.events_after(mark, None, 100)
    assert len(events) == 1 and result.replay_ids == [events[0].replay_id]
    assert events[0].record_ids == [account]


def test_an_undelete_brings_back_what_the_delete_took_and_nothing_else(store: OrgStore) -> None:
    account = _busiest_account(store)
    family = _family(store, account)
    before = _state(store, family)
    own = sorted(c for c in family["Contact"] if not before[c][0])[0]
    store.commit([Mutation("delete", "Contact", own)])  # deleted on its own, earlier
    store.advance_clock(2)
    store.commit([Mutation("delete", "Account", account)])
    store.advance_clock(2)
    mark = store.latest_replay_id()
    store.commit([Mutation("undelete", "Account", account)])
    after = _state(store, family)
    for rid, (deleted, _) in before.items():
        expected = deleted or rid == own
        assert after[rid][0] is expected, rid
    events = store.events_after(mark, None, 100)
    assert [e.record_ids for e in events] == [[account]]

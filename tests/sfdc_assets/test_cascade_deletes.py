"""A deleted Account takes its children with it and CDC says so only for the Account.

Salesforce cascade-deletes an Account's Contacts, Opportunities (with their line items)
and the activities on them (the emulator does: docs/emulator.md, "Cascade deletes"), and
no change event is documented for them: the unkind choice. CDC alone leaves those
children live in current; the polled objects (Task, Event) see their moved SystemModstamp
on the next poll; the `recent` reconciliation (Bulk listing of the recent window and
getDeleted) finds the rest, and afterwards every table equals the org. An undelete brings
them back the same way.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator

import polars as pl
import pytest

from tests.sfdc_assets.harness import (
    OBJECTS,
    Platform,
    differences,
    drain_cdc,
    reconcile,
    start_platform,
)

pytestmark = pytest.mark.slow

CDC_CHILDREN = ("Contact", "Opportunity", "OpportunityLineItem")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from start_platform(tmp_path_factory.mktemp("cascade"))


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def _busiest_account(platform: Platform) -> str:
    accounts = pl.from_arrow(platform.store.truth("Account"))
    opps = pl.from_arrow(platform.store.truth("Opportunity"))
    assert isinstance(accounts, pl.DataFrame) and isinstance(opps, pl.DataFrame)
    live = set(accounts.filter(~pl.col("IsDeleted"))["Id"].to_list())
    counts = Counter(
        a for a in opps.filter(~pl.col("IsDeleted"))["AccountId"].to_list() if a in live
    )
    return max(live, key=lambda a: (counts[a], a))


def _commit_and_settle(platform: Platform, op: str, account: str) -> None:
    from sfdc_emulator.store import Mutation

    platform.store.commit([Mutation(op, "Account", account)])
    time.sleep(2.1)  # a read with no server time yet ends 1 s before its clock, whole seconds
    drain_cdc(platform)


def test_the_cascade_is_found_and_repaired(platform: Platform) -> None:
    start = platform.sync.settings.partitions_start
    assert platform.backfill(OBJECTS, start, _today()).success
    drain_cdc(platform)
    account = _busiest_account(platform)
    for op in ("delete", "undelete"):
        _commit_and_settle(platform, op, account)
        assert differences(platform, "Account") == [], op  # its own event
        assert differences(platform, "Task") == [] and differences(platform, "Event") == []
        stale = [name for name in CDC_CHILDREN if differences(platform, name)]
        assert "Opportunity" in stale and "Contact" in stale, (op, stale)
        for name in CDC_CHILDREN:
            evaluation = reconcile(platform, name, "recent")
            found = {k: v.value for k, v in evaluation.metadata.items()}
            assert found["still_differing"] == 0, (op, name, found)
            assert (int(found["repaired"]) > 0) is (name in stale), (op, name, found)
            assert differences(platform, name) == [], (op, name)

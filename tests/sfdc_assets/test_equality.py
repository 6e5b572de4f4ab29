"""Provable equality (issue 10): after the scheduled reconciliation, current == Salesforce.

The emulator does what Salesforce documents CDC does not tell: purges (no event),
automation that moves SystemModstamp after the event, events lost for good, formula
fields absent from every event, a parent change that alters a child's formula with no
event on the child. CDC alone leaves current wrong; after the reconciliation runs the
`sfdc_reconcile` sensor requests, every column of every object's current table equals
the org's truth (purged records stay as deleted rows), scd2 closes each purged record's
history, and the check `reconciled_with_salesforce` says what it found and repaired.

Real parts: the emulator on loopback, a DuckDB file, the real assets, a Dagster instance.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import dagster as dg
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


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from start_platform(tmp_path_factory.mktemp("equality"))


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def purge_live(platform: Platform, name: str, count: int) -> list[str]:
    """Hard-delete `count` live records (no event: what only an ID-set diff can find)."""
    from sfdc_emulator.store import Mutation

    truth = pl.from_arrow(platform.store.truth(name))
    assert isinstance(truth, pl.DataFrame)
    ids = truth.filter(~pl.col("IsDeleted"))["Id"].sort().head(count).to_list()
    platform.store.commit([Mutation("purge", name, i) for i in ids])
    return ids


def lose_events(platform: Platform, name: str, count: int) -> list[str]:
    """Update `count` records whose change events are lost for good (never delivered)."""
    from sfdc_emulator.store import Mutation

    ids = _live_ids(platform, name, count, offset=count)
    platform.store.faults.drop_events(1.0, count=len(ids))
    try:
        for rid in ids:
            platform.store.commit([Mutation("update", name, rid, {"Title": f"lost {rid[-4:]}"})])
    finally:
        platform.store.faults.reset()
    return ids


def rerate_parent_of_an_opportunity(platform: Platform) -> list[str]:
    """Change the Rating of an Account with Opportunities: their `Account_Rating__c`
    formula changes with no event and no SystemModstamp change on them."""
    from sfdc_emulator.store import Mutation

    opps = pl.from_arrow(platform.store.truth("Opportunity"))
    assert isinstance(opps, pl.DataFrame)
    live = opps.filter(~pl.col("IsDeleted") & pl.col("AccountId").is_not_null())
    account = live["AccountId"].sort()[0]
    children = live.filter(pl.col("AccountId") == account)
    rating = "Cold" if children["Account_Rating__c"][0] == "Hot" else "Hot"
    platform.store.commit([Mutation("update", "Account", account, {"Rating": rating})])
    return children["Id"].to_list()


def touch(platform: Platform, name: str, count: int) -> list[str]:
    """Automation that saves and changes no field: SystemModstamp moves, no event."""
    from sfdc_emulator.store import Mutation

    ids = _live_ids(platform, name, count, offset=2 * count)
    platform.store.commit([Mutation("update", name, rid) for rid in ids], automation=True)
    return ids


def _live_ids(platform: Platform, name: str, count: int, offset: int = 0) -> list[str]:
    truth = pl.from_arrow(platform.store.truth(name))
    assert isinstance(truth, pl.DataFrame)
    return truth.filter(~pl.col("IsDeleted"))["Id"].sort().slice(offset, count).to_list()


def slack_posts_for_failing_checks(platform: Platform) -> list[str]:
    """One tick of `slack_on_check_failure` against a capturing webhook: the texts posted
    for the checks failing now (a repair is a WARN failure: its incident opens)."""
    from resources.slack import SlackAlerter
    from sensors.alerts import check_failure_alert_sensor
    from tests.sensors.slack_capture import slack_capture_server

    with slack_capture_server() as capture:
        slack = SlackAlerter(webhook_url=capture.webhook_url, ui_url="http://ui")
        sensor = check_failure_alert_sensor()
        resources = {**platform.resources, "slack": slack}
        defs = dg.Definitions(assets=platform.assets, sensors=[sensor], resources=resources)
        context = dg.build_sensor_context(
            instance=platform.instance, definitions=defs, resources={"slack": slack}
        )
        sensor.evaluate_tick(context)
        texts = [post.text + json.dumps(post.body) for post in capture.posts]
    return [t for t in texts if "reconciled_with_salesforce" in t]


def _meta(evaluation: dg.AssetCheckEvaluation, key: str) -> object:
    return evaluation.metadata[key].value


def test_a_bootstrapped_org_reconciles_with_nothing_to_repair(platform: Platform) -> None:
    start = platform.sync.settings.partitions_start
    assert platform.backfill(OBJECTS, start, _today()).success
    drain_cdc(platform)  # position the cursors (EARLIEST)
    evaluation = reconcile(platform, "Opportunity", "recent")
    assert evaluation.passed
    assert _meta(evaluation, "differing") == 0 and _meta(evaluation, "repaired") == 0
    assert _meta(evaluation, "refolded") == 0


def test_after_purges_and_automation_the_reconciliation_makes_every_table_equal_truth(
    platform: Platform,
) -> None:
    from sfdc_emulator.traffic import Mix

    traffic = platform.server.traffic
    traffic.mix = Mix(
        ops={"create": 0.2, "update": 0.6, "delete": 0.1, "undelete": 0.1},
        automation_share=0.6,
        automation_delay=(1.0, 2.0),
    )
    traffic.start()  # rate 0: the thread only runs the late automation updates
    for _ in range(40):
        traffic.step()
    purged = {name: purge_live(platform, name, 2) for name in ("Opportunity", "Contact", "Task")}
    lost = lose_events(platform, "Lead", 3)
    rerated = rerate_parent_of_an_opportunity(platform)
    touched = touch(platform, "OpportunityLineItem", 3)
    time.sleep(3)  # the automation follow-ups land after the events' re-reads
    traffic.stop()
    drain_cdc(platform)

    stale = [name for name in OBJECTS if differences(platform, name, purged_as_deleted=True)]
    # CDC alone cannot see a purge, a lost event, a parent's formula or a stamp-only save.
    assert {"Opportunity", "Contact", "Task", "Lead", "OpportunityLineItem"} <= set(stale)
    assert any(
        f"Opportunity.Account_Rating__c of {rid}"
        in differences(platform, "Opportunity", purged_as_deleted=True)
        for rid in rerated
    )
    assert lost and touched

    for name in OBJECTS:
        # What the sensor requests: the whole history's Id listing, then the formula one.
        found = [reconcile(platform, name, kind) for kind in ("full", "formulas")]
        assert [_meta(e, "still_differing") for e in found] == [0, 0], name
        repaired = sum(int(_meta(e, "repaired")) for e in found)
        if name in stale:
            # Drift found and repaired: a warning (Slack says so once), nothing left.
            assert any(not e.passed and e.severity == dg.AssetCheckSeverity.WARN for e in found)
            assert repaired > 0, name
        else:
            assert all(e.passed for e in found) and repaired == 0, name
        if name == "Opportunity":
            (post,) = slack_posts_for_failing_checks(platform)
            assert "salesforce/current/opportunity / reconciled_with_salesforce" in post
            assert "repaired: " in post and "still_differing: 0" in post
        # After a purge Salesforce refuses getDeleted windows that start before it
        # (INVALID_REPLICATION_DATE): the run reads what the log still holds, says so.
        assert _meta(found[0], "deleted_log_complete") is (name not in purged), name
        for kind in ("recent", "full", "formulas"):
            again = reconcile(platform, name, kind)
            assert again.passed, (name, kind, again.description)
        assert differences(platform, name, purged_as_deleted=True) == [], name
    formulas = reconcile(platform, "Opportunity", "formulas")
    assert _meta(formulas, "formula_differing") == 0

    for name, ids in purged.items():
        history = platform.table("sfdc_history", name).filter(pl.col("id").is_in(ids))
        closing = history.filter(pl.col("is_current"))
        assert sorted(closing["id"].to_list()) == sorted(ids), name
        assert closing["is_deleted"].all(), name
        assert (closing["_source"] == "delete_scan").all(), name
        assert history.height > len(ids), name  # the live version was closed, not replaced


def test_rows_changed_outside_the_platform_are_rebuilt_from_raw(platform: Platform) -> None:
    # A manual DELETE of a current row and its scd2 rows, and an UPDATE of another's:
    # the re-reads land versions raw already holds (applied once, so a no-op); only the
    # refold after them restores the tables (docs/operations.md, "When a reconciliation
    # fails").
    drain_cdc(platform)
    live = platform.table("sfdc", "Opportunity").filter(~pl.col("is_deleted")).sort("id")
    gone, edited = live["id"][0], live["id"][1]
    before = platform.table("sfdc_history", "Opportunity").filter(
        pl.col("id").is_in([gone, edited])
    )
    wh = platform.warehouse()
    try:
        wh.execute(f"DELETE FROM sfdc.opportunity WHERE id = '{gone}'")
        wh.execute(f"DELETE FROM sfdc_history.opportunity WHERE id = '{gone}'")
        wh.execute(
            "UPDATE sfdc.opportunity SET amount = -1, "
            f"systemmodstamp = systemmodstamp - INTERVAL 1 DAY WHERE id = '{edited}'"
        )
        wh.execute(f"UPDATE sfdc_history.opportunity SET amount = -1 WHERE id = '{edited}'")
    finally:
        wh.close()
    assert differences(platform, "Opportunity", purged_as_deleted=True)

    found = reconcile(platform, "Opportunity", "full")
    assert not found.passed and found.severity == dg.AssetCheckSeverity.WARN
    assert _meta(found, "stale") == 2 and _meta(found, "reread") == 2
    assert _meta(found, "refolded") == 2 and _meta(found, "still_differing") == 0
    assert differences(platform, "Opportunity", purged_as_deleted=True) == []
    after = platform.table("sfdc_history", "Opportunity").filter(pl.col("id").is_in([gone, edited]))
    key = ["id", "_version"]
    assert after.drop("_synced_at").sort(key).equals(before.drop("_synced_at").sort(key))
    assert reconcile(platform, "Opportunity", "full").passed

"""`sensors.reconcile.reconcile_tick`: each object's reconciliation kinds on their cadence."""

from __future__ import annotations

from sensors.reconcile import Scheduled, reconcile_tick
from sfdc_assets.keys import REASON_TAG, raw_op_name, reconciled_check
from sfdc_assets.objects import ReconcileSettings, load_config, parse_config

SETTINGS = ReconcileSettings(recent_minutes=15, full_hours=24, formula_minutes=60)
MIN = 60_000
T0 = 1_800_000_000_000
KEY = "2026-12-02"


def tick(objects, cursor, now, ready=lambda n: True, busy=lambda n: False):
    return reconcile_tick(objects, cursor, now, ready, busy, KEY)


def kinds(requests) -> list[tuple[str, str]]:
    return [(r.tags["sfdc/object"], r.tags[REASON_TAG]) for r in requests]


def test_the_clock_starts_at_first_sight_and_each_kind_comes_due_on_its_interval() -> None:
    opp = Scheduled("Opportunity", SETTINGS, has_formulas=True)
    first, cursor = tick([opp], {}, T0)
    assert first == []  # just bootstrapped: it was read whole moments ago
    assert cursor == {"Opportunity": {"recent": T0, "full": T0, "formulas": T0}}

    early, _ = tick([opp], cursor, T0 + 14 * MIN)
    assert early == []
    due, cursor = tick([opp], cursor, T0 + 15 * MIN)
    assert kinds(due) == [("Opportunity", "recent")]
    (request,) = due
    assert request.partition_key == KEY
    assert request.run_config == {
        "ops": {raw_op_name("Opportunity"): {"config": {"reconcile": "recent"}}}
    }
    assert reconciled_check("Opportunity") in request.asset_check_keys

    # At 60 min both recent and formulas are due: the wider goes first, one per tick.
    both, cursor = tick([opp], cursor, T0 + 60 * MIN)
    assert kinds(both) == [("Opportunity", "formulas")]
    nxt, cursor = tick([opp], cursor, T0 + 61 * MIN)
    assert kinds(nxt) == [("Opportunity", "recent")]
    nightly, cursor = tick([opp], cursor, T0 + 24 * 60 * MIN)
    assert kinds(nightly) == [("Opportunity", "full")]
    assert cursor["Opportunity"]["recent"] == T0 + 24 * 60 * MIN  # covered by the full one


def test_objects_not_bootstrapped_or_busy_wait_and_formulas_need_formula_fields() -> None:
    user = Scheduled("User", SETTINGS, has_formulas=False)
    lead = Scheduled("Lead", SETTINGS, has_formulas=False)
    _, cursor = tick([user, lead], {}, T0)
    assert "formulas" not in cursor["User"]

    later = T0 + 15 * MIN
    requests, after = tick(
        [user, lead], cursor, later, ready=lambda n: n != "Lead", busy=lambda n: n == "User"
    )
    assert requests == []
    assert after["User"]["recent"] == T0  # still owed: requested once the run is done
    freed, _ = tick([user], after, later + MIN)
    assert kinds(freed) == [("User", "recent")]


def test_a_kind_set_to_zero_is_never_requested_and_overrides_are_per_object() -> None:
    sync = parse_config(
        """
settings:
  reconcile: {recent_minutes: 10, full_hours: 0}
channel_groups:
  revenue: {channel: /data/RevenueChannel__chn}
objects:
  - {name: Account, group: revenue}
  - {name: Task, group: revenue, reconcile: {recent_minutes: 60, formula_minutes: 0}}
"""
    )
    account, task = (sync.reconcile_for(o) for o in sync.objects)
    assert (account.recent_minutes, account.full_hours, account.formula_minutes) == (10, 0, 60)
    assert (task.recent_minutes, task.full_hours, task.formula_minutes) == (60, 0, 0)
    objects = [Scheduled("Account", account, True), Scheduled("Task", task, True)]
    _, cursor = tick(objects, {}, T0)
    assert set(cursor["Account"]) == {"recent", "formulas"}
    assert set(cursor["Task"]) == {"recent"}


def test_an_invalid_override_is_refused_naming_the_object() -> None:
    import pytest

    with pytest.raises(ValueError, match="Task: invalid reconcile override"):
        parse_config(
            """
channel_groups:
  revenue: {channel: /data/RevenueChannel__chn}
objects:
  - {name: Task, group: revenue, reconcile: {recent_days: 0}}
"""
        )


def test_the_shipped_config_reconciles_every_object() -> None:
    sync = load_config()
    for obj in sync.objects:
        settings = sync.reconcile_for(obj)
        assert settings.recent_minutes > 0 and settings.full_hours > 0, obj.name


def test_a_full_comparison_owed_after_a_purge_is_requested_at_once() -> None:
    # getDeleted's log cut short by a purge (INVALID_REPLICATION_DATE): only the whole
    # history's Id listing finds those deletes, so it goes ahead of the cadence.
    opp = Scheduled("Opportunity", SETTINGS, has_formulas=False)
    _, cursor = tick([opp], {}, T0)
    owed = Scheduled("Opportunity", SETTINGS, has_formulas=False, full_owed=True)
    requests, cursor = tick([owed], cursor, T0 + MIN)
    assert kinds(requests) == [("Opportunity", "full")]
    assert cursor["Opportunity"]["recent"] == T0 + MIN

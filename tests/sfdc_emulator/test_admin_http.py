"""Admin endpoint over real HTTPS through ``admin_call`` (the CLI's client)."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
)

from sfdc_emulator.admin import admin_call
from tests.sfdc_emulator.http_fixtures import Emulator, clean_faults, emulator

__all__ = ["clean_faults", "emulator"]


def counts(em: Emulator, obj: str) -> tuple[int, int]:
    return em.store.count(obj), em.store.count(obj, include_deleted=True)


def test_record_commands_change_the_org(emulator: Emulator) -> None:
    live, total = counts(emulator, "Lead")
    assert emulator.admin("delete", object="Lead", count=4)["count"] == 4
    assert counts(emulator, "Lead") == (live - 4, total)
    assert emulator.admin("undelete", object="Lead", count=2)["count"] == 2
    assert counts(emulator, "Lead") == (live - 2, total)
    assert emulator.admin("purge", object="Lead", count=1, deleted=True)["count"] == 1
    assert counts(emulator, "Lead") == (live - 2, total - 1)
    updated = emulator.admin("update", object="Lead", count=3, fields={"Rating": "Hot"})
    assert all(emulator.store.get("Lead", i)["Rating"] == "Hot" for i in updated["ids"])


def test_gap_and_overflow_commands(emulator: Emulator) -> None:
    gap = emulator.admin("gap", object="Account", count=2)
    assert gap["count"] == 2
    overflow = emulator.admin("overflow", object="Account", changes=40)
    assert overflow["changes"] >= 40


def test_schema_commands_are_visible_to_describe_and_soql(emulator: Emulator) -> None:
    sf = emulator.sf()
    emulator.admin("add-field", object="Opportunity", field="Health__c", type="picklist",
                   values=["Green", "Red"])  # fmt: skip
    fields = {f["name"]: f for f in sf.Opportunity.describe()["fields"]}
    assert [v["value"] for v in fields["Health__c"]["picklistValues"]] == ["Green", "Red"]
    assert sf.query("SELECT Id, Health__c FROM Opportunity LIMIT 1")["records"]
    emulator.admin("set-picklist", object="Opportunity", field="Health__c", values=["Amber"])
    fields = {f["name"]: f for f in sf.Opportunity.describe()["fields"]}
    assert [v["value"] for v in fields["Health__c"]["picklistValues"]] == ["Amber"]
    emulator.admin("remove-field", object="Opportunity", field="Health__c")
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query("SELECT Id, Health__c FROM Opportunity")
    assert info.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_fail_rest_counts_down(clean_faults: Emulator) -> None:
    em = clean_faults
    em.admin("fail", target="rest", status=503, count=2)
    sf = em.sf()
    for _ in range(2):
        with pytest.raises(SalesforceGeneralError):
            sf.limits()
    assert sf.limits()


def test_slow_responses(clean_faults: Emulator) -> None:
    em = clean_faults
    em.admin("slow", target="rest", seconds=0.4, count=1)
    started = time.monotonic()
    em.sf().limits()
    assert time.monotonic() - started >= 0.4


def test_expire_sessions_then_admin_call_reauthenticates(clean_faults: Emulator) -> None:
    em = clean_faults
    old_token = em.server.access_token
    em.admin("expire-sessions")
    with pytest.raises(SalesforceExpiredSession):
        em.sf(token=old_token).limits()
    info = dict(em.info, access_token=old_token)
    status = admin_call(info, "status")
    assert info["access_token"] != old_token
    assert status["objects"]["Opportunity"]["total"] > 0


def test_advance_clock(emulator: Emulator) -> None:
    before = emulator.store.clock.now_ms()
    result = emulator.admin("advance-clock", duration="73h")
    assert result["now_ms"] - before >= 73 * 3600 * 1000


def test_unknown_command_and_missing_auth_are_refused(emulator: Emulator) -> None:
    with pytest.raises(RuntimeError, match="unknown command"):
        emulator.admin("explode")
    response = emulator.session().post(emulator.info["admin_url"], json={"command": "status"})
    assert response.status_code == 401


def test_admin_calls_are_not_counted(emulator: Emulator) -> None:
    used = emulator.admin("status")["api_usage"]["used"]
    assert emulator.admin("status")["api_usage"]["used"] == used


def test_truth_command_writes_parquet(emulator: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "opportunity.parquet"
    result = emulator.admin("truth", object="Opportunity", out=str(out))
    assert (
        result["rows"]
        == pq.read_table(out).num_rows
        == emulator.store.truth("Opportunity").num_rows
    )


def test_drop_events_loses_events_until_reset_faults(clean_faults: Emulator) -> None:
    em = clean_faults
    armed = em.admin("drop-events", fraction=1.0, count=3)
    assert armed == {"fraction": 1.0, "count": 3}
    assert em.admin("status")["faults"]["event_drop"] == {"fraction": 1.0, "remaining": 3}
    lost = em.admin("update", object="Contact", count=2, fields={"Title": "Lost"})
    assert lost["replay_ids"] == [] and set(lost["dropped_ids"]) == set(lost["ids"])
    assert all(em.store.get("Contact", i)["Title"] == "Lost" for i in lost["ids"])
    em.admin("drop-events", fraction=1.0)
    em.admin("reset-faults")
    kept = em.admin("update", object="Contact", count=1, fields={"Title": "Kept"})
    assert kept["replay_ids"] and kept["dropped_ids"] == []
    assert em.admin("status")["faults"]["events_dropped"] >= 1


def test_touch_moves_system_modstamp_only_and_publishes_nothing(emulator: Emulator) -> None:
    em = emulator
    before = {r["Id"]: r for r in em.store.truth("Task").to_pylist()}
    em.store.advance_clock(2)
    touched = em.admin("touch", object="Task", count=3)
    assert touched["count"] == 3 and touched["replay_ids"] == []
    for rid in touched["ids"]:
        after = em.store.get("Task", rid)
        assert after is not None
        assert after["SystemModstamp"] > before[rid]["SystemModstamp"]
        assert {k: v for k, v in after.items() if k != "SystemModstamp"} == {
            k: v for k, v in before[rid].items() if k != "SystemModstamp"
        }


def test_cli_words_for_the_new_commands() -> None:
    from sfdc_emulator.cli import admin_arguments

    assert admin_arguments("fail", ["limit", "deliveries", "--max", "25000"]) == {
        "target": "limit",
        "kind": "deliveries",
        "max": 25000,
    }

    assert admin_arguments("drop-events", ["--fraction", "0.1", "--count", "5"]) == {
        "fraction": 0.1,
        "count": 5,
    }
    assert admin_arguments("touch", ["Opportunity", "--count", "3"]) == {
        "object": "Opportunity",
        "count": 3,
    }


def test_the_delivery_allocation_flag_defaults_to_its_variable_then_to_unlimited_edition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sfdc_emulator.cli import build_parser

    def parsed(*words: str) -> int:
        return build_parser().parse_args(["serve", "--state-dir", "x", *words]).delivery_limit

    monkeypatch.delenv("SFDC_EMULATOR_DELIVERY_LIMIT", raising=False)
    assert parsed() == 50_000
    monkeypatch.setenv("SFDC_EMULATOR_DELIVERY_LIMIT", "25000")
    assert parsed() == 25_000
    assert parsed("--delivery-limit", "125000") == 125_000
    with pytest.raises(SystemExit):
        parsed("--delivery-limit", "0")

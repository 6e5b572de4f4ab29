"""API budget governor: limit parsing, refusals, ledger across runs, retries with backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from resources.salesforce.budget import ApiBudget, RetryPolicy, UsageLedger
from resources.salesforce.errors import BudgetExhaustedError, TransientApiError


def test_limit_info_header_updates_org_usage() -> None:
    b = ApiBudget()
    b.observe_limit_info("api-usage=25/15000; per-app-api-usage=17/250(appName=sync)")
    assert b.org_usage("api") == (15000, 14975)


def test_limits_body_updates_every_kind() -> None:
    b = ApiBudget()
    b.observe_limits(
        {
            "DailyApiRequests": {"Max": 1000, "Remaining": 900},
            "DailyBulkV2QueryJobs": {"Max": 100, "Remaining": 100},
        }
    )
    assert b.org_usage("api") == (1000, 900)
    assert b.org_usage("bulk_jobs") == (100, 100)


def test_run_share_is_refused_with_a_clear_error() -> None:
    b = ApiBudget(run_pct=1)
    b.observe_limits({"DailyApiRequests": {"Max": 1000, "Remaining": 1000}})
    for _ in range(10):
        b.acquire("api")
        b.record("api")
    with pytest.raises(BudgetExhaustedError, match=r"DailyApiRequests.*1% share"):
        b.acquire("api", what="describe Account")
    assert b.refused == 1


def test_bulk_result_megabytes_are_a_budget_kind_of_their_own() -> None:
    b = ApiBudget(total_pct=100, run_pct=100, floor_pct=10)
    assert b.org_usage("bulk_mb") == (976_562, None)  # 1 TB until /limits says otherwise
    b.observe_limits({"DailyBulkV2QueryFileStorageMB": {"Max": 100, "Remaining": 12}})
    b.acquire("bulk_mb")
    b.record("bulk_mb", 2)  # remaining decays locally: 10 left, the floor
    assert b.org_usage("bulk_mb") == (100, 10) and b.snapshot()["bulk_mb"] == 2
    with pytest.raises(BudgetExhaustedError, match="DailyBulkV2QueryFileStorageMB") as info:
        b.acquire("bulk_mb", what="Bulk results 750x")
    assert info.value.limit == "DailyBulkV2QueryFileStorageMB"
    b.acquire("api")  # other kinds are not affected


def test_org_floor_protects_other_integrations() -> None:
    b = ApiBudget(run_pct=100, floor_pct=10)
    b.observe_limit_info("api-usage=905/1000")
    with pytest.raises(BudgetExhaustedError, match="floor"):
        b.acquire("api")


def test_total_share_spans_runs_through_the_ledger(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "usage.json")
    first = ApiBudget(total_pct=2, run_pct=100, ledger=ledger)
    first.observe_limits({"DailyApiRequests": {"Max": 1000, "Remaining": 1000}})
    for _ in range(15):
        first.record("api")
    first.flush()
    first.flush()  # idempotent
    second = ApiBudget(total_pct=2, run_pct=100, ledger=ledger)
    second.observe_limits({"DailyApiRequests": {"Max": 1000, "Remaining": 1000}})
    second.acquire("api", 5)
    with pytest.raises(BudgetExhaustedError, match="24 h"):
        second.acquire("api", 6)


def test_transient_failures_are_retried_with_jittered_backoff() -> None:
    sleeps: list[float] = []
    b = ApiBudget(retry=RetryPolicy(attempts=4, base_s=1, cap_s=8), sleep=sleeps.append)
    calls = iter([TransientApiError("503"), TransientApiError("503"), "ok"])

    def flaky() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert b.call(flaky) == "ok"
    assert len(sleeps) == 2 and all(0 <= s <= 8 for s in sleeps)
    assert (b.retries, b.throttled) == (2, 2)


def test_retries_stop_after_the_policy_attempts() -> None:
    b = ApiBudget(retry=RetryPolicy(attempts=3), sleep=lambda s: None)

    def down() -> None:
        raise TransientApiError("503")

    with pytest.raises(TransientApiError):
        b.call(down)
    assert b.throttled == 3

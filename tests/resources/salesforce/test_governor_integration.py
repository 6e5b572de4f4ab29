"""The API budget governor against the emulator: retries, refusals, counters that match."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from resources.landing import LandingStore
from resources.salesforce.budget import RetryPolicy
from resources.salesforce.bulk import BulkOptions
from resources.salesforce.errors import BudgetExhaustedError
from resources.salesforce.resource import SalesforceClient
from tests.resources.salesforce.conftest import Emulator

FAST = RetryPolicy(attempts=5, base_s=0.01, cap_s=0.05)


def org_used(emulator: Emulator) -> int:
    return emulator.http.ctx.usage.used()


def test_503_and_concurrent_limit_are_retried_and_counters_match_the_org(
    emulator: Emulator, client: SalesforceClient, tmp_path: Path
) -> None:
    client.governor.retry_policy = FAST
    client.rest.count("Task")  # token + first call outside the measured span
    before, ours_before = org_used(emulator), client.governor.used["api"]
    emulator.faults.rest_error(503, "SERVER_UNAVAILABLE", count=2)
    assert client.rest.count("Account") == 20
    emulator.faults.rest_error(
        403, "REQUEST_LIMIT_EXCEEDED:ConcurrentPerOrgLongTxn Limit exceeded."
    )
    assert len(list(client.rest.query_all("SELECT Id FROM Lead"))) == 20
    store = LandingStore(str(tmp_path / "landing"))
    client.bulk(store, BulkOptions(page_size=10, lag=timedelta(0), poll_initial_s=0.05)).backfill(
        "Event",
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime.now(UTC) + timedelta(seconds=5),
        now=datetime.now(UTC) + timedelta(seconds=5),
    )
    client.rest.limits()
    assert client.governor.retries == 3 and client.governor.throttled == 3
    assert client.governor.used["api"] - ours_before == org_used(emulator) - before
    api_max, remaining = client.governor.org_usage("api")
    assert api_max - remaining == org_used(emulator)


def test_governor_refuses_before_the_org_is_exhausted(emulator: Emulator) -> None:
    client = emulator.client(api_budget_run_pct=100, api_budget_pct=100)
    client.rest.count("Account")
    used = org_used(emulator)
    # The org has 40 requests left today; we keep 10% of the daily limit for others.
    emulator.faults.daily_limit(used + 40)
    client.rest.limits()
    refused_at = None
    for n in range(60):
        try:
            client.rest.count("Account")
        except BudgetExhaustedError as exc:
            refused_at = n
            assert "floor" in str(exc)
            break
    assert refused_at is not None
    assert org_used(emulator) < used + 40  # never pushed the org to REQUEST_LIMIT_EXCEEDED
    emulator.faults.daily_limit(None)
    client.close()


def test_exhausted_org_limit_is_not_retried(emulator: Emulator, client: SalesforceClient) -> None:
    client.governor.retry_policy = FAST
    client.rest.count("Account")
    emulator.faults.rest_error(403, "REQUEST_LIMIT_EXCEEDED")
    with pytest.raises(BudgetExhaustedError, match="daily API limit"):
        client.rest.count("Account")
    assert client.governor.retries == 0


def test_expired_session_is_refreshed_once(emulator: Emulator, client: SalesforceClient) -> None:
    client.rest.count("Account")
    emulator.faults.expire_sessions()
    assert client.rest.count("Account") == 20
    assert client.conn.token_refreshes == 1 and client.tokens.requests_made == 2


def test_run_share_refuses_work_with_a_clear_error(emulator: Emulator) -> None:
    client = emulator.client(api_budget_run_pct=0.01)  # 10 requests of 100,000
    client.rest.limits()
    with pytest.raises(BudgetExhaustedError, match="this run used 10 of"):
        for _ in range(20):
            client.rest.count("Account")
    assert client.governor.used["api"] == 10
    client.close()


def test_deleted_and_updated_windows_need_aware_datetimes(
    emulator: Emulator, client: SalesforceClient
) -> None:
    from sfdc_emulator.store import Mutation

    lead = next(client.rest.query_all("SELECT Id FROM Lead WHERE IsDeleted = false LIMIT 1"))
    emulator.store.commit([Mutation("delete", "Lead", lead["Id"])])
    # getDeleted covers whole minutes only (latestDateCovered): let this one complete.
    emulator.store.clock.advance(120)
    now = emulator.store.clock.now()
    deleted = client.rest.deleted("Lead", now - timedelta(hours=1), now)
    assert lead["Id"] in {d["id"] for d in deleted["deletedRecords"]}
    updated = client.rest.updated("Lead", now - timedelta(hours=1), now)
    assert "ids" in updated
    with pytest.raises(ValueError, match="timezone-aware"):
        client.rest.deleted("Lead", datetime(2026, 1, 1), datetime(2026, 1, 2))

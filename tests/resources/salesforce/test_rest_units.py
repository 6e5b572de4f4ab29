"""REST plumbing that needs no org: CA pinning, error mapping, the server-clock bound."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
from simple_salesforce.exceptions import (
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from resources.salesforce.auth import make_session
from resources.salesforce.errors import ApiCallError, BudgetExhaustedError, TransientApiError
from resources.salesforce.rest import ServerClock, classify_error
from resources.salesforce.settings import SalesforceSettings


def test_configured_ca_bundle_wins_over_requests_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/other.pem")
    s = SalesforceSettings(instance_url="https://x.my.salesforce.com", ca_bundle="/ours/ca.pem")
    merged = make_session(s).merge_environment_settings("https://x", {}, False, None, None)
    assert merged["verify"] == "/ours/ca.pem"


def refused(message: str) -> SalesforceRefusedRequest:
    return SalesforceRefusedRequest(
        "u", 403, "r", [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": message}]
    )


def test_limit_errors_split_into_transient_and_exhausted() -> None:
    concurrent = classify_error(refused("ConcurrentPerOrgLongTxn Limit exceeded."), what="q")
    daily = classify_error(refused("TotalRequests Limit exceeded."), what="q")
    assert isinstance(concurrent, TransientApiError)
    assert isinstance(daily, BudgetExhaustedError)


@pytest.mark.parametrize(
    ("code", "message", "limit"),
    [
        ("EXCEEDED_QUOTA", "Max bulk v2 query jobs per 24 hrs exceeded", "DailyBulkV2QueryJobs"),
        ("LIMIT_EXCEEDED", "Query results storage MB exceeded", "DailyBulkV2QueryFileStorageMB"),
        ("EXCEEDED_QUOTA", "quota exceeded", ""),
    ],
)
def test_an_exhausted_bulk_allocation_is_budget_exhaustion_naming_it(
    code: str, message: str, limit: str
) -> None:
    refusal = SalesforceMalformedRequest("u", 400, "r", [{"errorCode": code, "message": message}])
    err = classify_error(refusal, what="create Bulk job Task")
    assert isinstance(err, BudgetExhaustedError) and err.limit == limit
    assert "rolling 24 h" in str(err)
    daily = classify_error(refused("TotalRequests Limit exceeded."), what="q")
    assert isinstance(daily, BudgetExhaustedError) and daily.limit == "DailyApiRequests"


def test_503_is_transient_and_a_bad_query_is_not() -> None:
    unavailable = SalesforceGeneralError("u", 503, "r", [{"errorCode": "SERVER_UNAVAILABLE"}])
    assert isinstance(classify_error(unavailable, what="q"), TransientApiError)
    bad = SalesforceGeneralError("u", 400, "r", [{"errorCode": "MALFORMED_QUERY", "message": "x"}])
    err = classify_error(bad, what="q")
    assert isinstance(err, ApiCallError) and not isinstance(err, TransientApiError)
    assert err.error_code == "MALFORMED_QUERY"


def test_server_clock_never_runs_ahead_of_the_org() -> None:
    clock = ServerClock()
    received = time.time()
    # The org's clock is 2 minutes ahead; its Date header is truncated to the second.
    clock.observe(formatdate(received + 120, usegmt=True), received)
    estimate = clock.now_ms(received)
    assert (received + 119) * 1000 <= estimate <= (received + 120) * 1000

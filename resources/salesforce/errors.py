"""Errors raised by the Salesforce extraction layer.

Every error names what failed (object, job, topic) and what to do next; none carries a
token, a key or a field value.
"""

from __future__ import annotations

from sync_engine import warehouse


class SalesforceError(Exception):
    """Base class of every extraction error."""


class AuthError(SalesforceError):
    """The token endpoint refused our credentials (JWT bearer or client credentials)."""


class InvalidIdentifierError(SalesforceError, warehouse.InvalidIdentifierError):
    """An object or field name that is not a valid Salesforce API name reached SOQL.

    The engine's `InvalidIdentifierError` (a `ValueError`), raised by the extraction
    layer: `except` clauses for either catch it.
    """


class ApiCallError(SalesforceError):
    """A REST/Bulk call failed with a Salesforce error that retrying will not fix."""

    def __init__(self, message: str, *, status: int | None = None, error_code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class TransientApiError(ApiCallError):
    """A failure worth retrying with backoff: 503, concurrent-request limit, UNAVAILABLE."""


class BudgetExhaustedError(SalesforceError):
    """The configured share of the org's API limits is spent; work is refused, not queued.

    ``limit`` names the allocation (``DailyApiRequests``, ``DailyBulkV2QueryJobs``, …) when
    it is known; ``scope`` says whose share: ``run`` (this run's or tick's ``run_pct``),
    ``platform`` (``total_pct`` over 24 h) or ``org`` (the org itself is at its floor or out).

    Runbook: wait for the rolling 24 h window to free capacity, or raise
    ``SFDC_API_BUDGET_PCT`` if the org has headroom (docs/extraction.md, "API budget").
    """

    def __init__(self, message: str, *, limit: str = "", scope: str = "run") -> None:
        super().__init__(message)
        self.limit = limit
        self.scope = scope


class BulkAllocationError(BudgetExhaustedError):
    """A backfill stopped because a daily allocation ran out before every piece landed.

    The pieces already landed stay landed (committed batches) and the plan checkpoint
    records them, so the same backfill call after the rolling 24 h window frees capacity
    skips them and lands the rest (docs/extraction.md, "Daily Bulk allocations").
    """

    def __init__(
        self, obj: str, limit: str, landed: int, planned: int, cause: str, scope: str = "org"
    ) -> None:
        super().__init__(
            f"Bulk backfill of {obj} stopped: the {limit or 'daily Bulk'} allocation is used up "
            f"({cause}); {landed} of {planned} pieces landed and are kept. Run the same backfill "
            "again once the rolling 24 h window frees capacity (the next day): it skips the "
            "landed pieces. See docs/extraction.md#daily-bulk-allocations.",
            limit=limit,
            scope=scope,
        )
        self.object = obj
        self.landed = landed
        self.planned = planned


class DeliveryAllocationExhaustedError(BudgetExhaustedError):
    """Salesforce refused CDC delivery: the org's 24 h delivered-events allocation is spent.

    Pub/Sub ends the Subscribe with ``subscription.limit.exceeded``; the events stay
    retained for 72 h. Runbook: docs/operations.md, "CDC delivery allocation used up".
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, limit="DailyDeliveredPlatformEvents", scope="org")


class BulkJobFailedError(SalesforceError):
    """A Bulk 2.0 query job ended Failed or Aborted."""


class PubSubError(SalesforceError):
    """A Pub/Sub API call failed; ``error_code`` is Salesforce's ``error-code`` trailer."""

    def __init__(self, message: str, *, status: str = "", error_code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class ReplayIdExpiredError(PubSubError):
    """The stored replay id is outside the 72 h retention window or unknown to the org.

    Recovery (DESIGN §5): resubscribe at LATEST, then re-backfill from the last applied
    commit time minus a margin; the version rule reconciles the overlap.
    """


class SchemaNotFoundError(PubSubError):
    """An event referenced a schema id that GetSchema could not resolve."""

"""REST API access through simple-salesforce with our own token handling.

:class:`SalesforceConnection` owns the plumbing shared with Bulk: one ``requests.Session``
(custom CA bundle, response hook that feeds the budget governor and the server-clock
estimate), the token provider, and a simple-salesforce client rebuilt whenever the token
changes (its ``session_id`` mode never refreshes by itself). :class:`SalesforceRest` adds
the calls the platform needs: describe, queryAll, retrieve by Ids, deleted/updated,
``SELECT COUNT()`` (checks only: it scans), ``/limits`` and ``/limits/recordCount``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests

from resources.salesforce import soql
from resources.salesforce.auth import Token, TokenProvider, make_session
from resources.salesforce.budget import ApiBudget
from resources.salesforce.errors import (
    ApiCallError,
    BudgetExhaustedError,
    TransientApiError,
)
from resources.salesforce.settings import SalesforceSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
# Salesforce caps SOQL statements at 100,000 characters; 300 Ids (~6.3 KB) per IN list
# keeps the GET URL well under common proxy limits of 16 KB.
RETRIEVE_CHUNK = 300
REQUEST_TIMEOUT_S = 300
# Describe types that are compound parents: their values live in component fields and
# Bulk 2.0 rejects them in SELECT (reference §3.2).
COMPOUND_TYPES = frozenset({"address", "location"})
_UNCOUNTED = frozenset({401, 403})
# Error codes of an exhausted allocation (Bulk 2.0 query jobs or result storage per 24 h):
# ExceededQuota in the Bulk error list, EXCEEDED_QUOTA / LIMIT_EXCEEDED as REST codes.
_QUOTA_CODES = frozenset({"EXCEEDED_QUOTA", "ExceededQuota", "LIMIT_EXCEEDED"})


@dataclass(frozen=True)
class FieldInfo:
    """One field of an object, from describe, with our PII flag."""

    name: str
    type: str
    nillable: bool = True
    length: int = 0
    precision: int = 0
    scale: int = 0
    calculated: bool = False
    custom: bool = False
    compound_field_name: str | None = None
    reference_to: tuple[str, ...] = ()
    pii: bool = False


@dataclass(frozen=True)
class ObjectDescribe:
    """The extractable shape of an object: describe fields minus compound parents."""

    name: str
    key_prefix: str | None
    fields: tuple[FieldInfo, ...]
    compound_parents: tuple[str, ...] = ()

    @property
    def field_names(self) -> list[str]:
        """API names in describe order."""
        return [f.name for f in self.fields]

    def field(self, name: str) -> FieldInfo:
        """The field called ``name`` (case-insensitive, like Salesforce)."""
        low = name.lower()
        for f in self.fields:
            if f.name.lower() == low:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")

    @property
    def pii_fields(self) -> list[str]:
        """Fields flagged as personal data by configuration."""
        return [f.name for f in self.fields if f.pii]


@dataclass(frozen=True)
class SnapshotRows:
    """Rows read by one REST read, with its observation start time (DESIGN §4)."""

    object: str
    records: list[dict[str, Any]] = field(repr=False)
    observed_at_ms: int


def parse_describe(body: Mapping[str, Any], pii_fields: Collection[str] = ()) -> ObjectDescribe:
    """Turn a describe body into an :class:`ObjectDescribe` (pure; unit-tested)."""
    raw = list(body.get("fields", []))
    pii = {p.lower() for p in pii_fields}
    # Person-name "Name" is itself a queryable (calculated) string; only address/location
    # style parents are dropped, whether flagged by type or named as a compound parent.
    parents = {f["compoundFieldName"] for f in raw if f.get("compoundFieldName")} - {"Name"}
    parents |= {f["name"] for f in raw if f.get("type") in COMPOUND_TYPES}
    fields = tuple(
        FieldInfo(
            name=soql.identifier(f["name"]),
            type=str(f.get("type", "string")),
            nillable=bool(f.get("nillable", True)),
            length=int(f.get("length") or 0),
            precision=int(f.get("precision") or 0),
            scale=int(f.get("scale") or 0),
            calculated=bool(f.get("calculated", False)),
            custom=bool(f.get("custom", False)),
            compound_field_name=f.get("compoundFieldName"),
            reference_to=tuple(f.get("referenceTo") or ()),
            pii=f["name"].lower() in pii,
        )
        for f in raw
        if f["name"] not in parents
    )
    return ObjectDescribe(
        name=soql.identifier(body["name"]),
        key_prefix=body.get("keyPrefix"),
        fields=fields,
        compound_parents=tuple(sorted(parents)),
    )


class ServerClock:
    """A lower bound of the org's clock, learned from HTTP ``Date`` headers.

    The observation time R of a REST read must never be later than the moment the org
    started reading (an overestimate could let a snapshot beat an event it does not
    reflect; an underestimate only lets a reflected event win, which is harmless). A
    ``Date`` header is truncated to the second and generated before we receive it, so
    ``Date - received_at`` is a lower bound of the clock offset.
    """

    def __init__(self) -> None:
        self._offset_ms: int | None = None

    def observe(self, date_header: str | None, received_at: float) -> None:
        """Record the offset implied by one response."""
        if not date_header:
            return
        try:
            server = parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError):
            return
        self._offset_ms = int((server - received_at) * 1000)

    def now_ms(self, local: float | None = None) -> int:
        """Lower bound of the org's current time (epoch ms)."""
        t = time.time() if local is None else local
        return int(t * 1000) + (self._offset_ms if self._offset_ms is not None else -1000)


def classify_error(exc: Exception, *, what: str) -> Exception:
    """Map a simple-salesforce / requests failure to our error types."""
    from simple_salesforce.exceptions import SalesforceError as SfError

    if isinstance(exc, requests.RequestException):
        return TransientApiError(f"{what}: connection failed ({type(exc).__name__})")
    if not isinstance(exc, SfError):
        return exc
    status = getattr(exc, "status", None)
    code, message = _error_code(getattr(exc, "content", None))
    if code == "REQUEST_LIMIT_EXCEEDED":
        if "concurrent" in message.lower():
            return TransientApiError(
                f"{what}: concurrent long-request limit", status=status, error_code=code
            )
        return BudgetExhaustedError(
            f"{what}: the org's daily API limit is exhausted (REQUEST_LIMIT_EXCEEDED). "
            "Stop and wait for the rolling 24 h window; see docs/extraction.md#api-budget.",
            limit="DailyApiRequests",
            scope="org",
        )
    if code in _QUOTA_CODES:
        return BudgetExhaustedError(
            f"{what}: the org refused it, a daily allocation is used up ({code}). Stop and "
            "wait for the rolling 24 h window; see docs/extraction.md#daily-bulk-allocations.",
            limit=_allocation_named(message),
            scope="org",
        )
    if status in (502, 503, 504) or code == "SERVER_UNAVAILABLE":
        return TransientApiError(f"{what}: HTTP {status} {code}", status=status, error_code=code)
    return ApiCallError(f"{what}: HTTP {status} {code}: {message}", status=status, error_code=code)


def _allocation_named(message: str) -> str:
    """Which Bulk allocation an org's quota error is about (its message names it)."""
    low = message.lower()
    if "storage" in low or "mb" in low.split() or "size" in low:
        return "DailyBulkV2QueryFileStorageMB"
    if "job" in low:
        return "DailyBulkV2QueryJobs"
    return ""


def _error_code(content: Any) -> tuple[str, str]:
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        return str(content[0].get("errorCode", "")), str(content[0].get("message", ""))
    if isinstance(content, Mapping):
        return str(content.get("errorCode", "")), str(content.get("message", ""))
    return "", ""


def _is_invalid_session(exc: Exception) -> bool:
    from simple_salesforce.exceptions import SalesforceExpiredSession

    return isinstance(exc, SalesforceExpiredSession) or getattr(exc, "status", None) == 401


class SalesforceConnection:
    """Session, token, governor and simple-salesforce client for one org (thread-safe)."""

    def __init__(
        self,
        settings: SalesforceSettings,
        *,
        tokens: TokenProvider | None = None,
        governor: ApiBudget | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.settings = settings
        self.session = session or make_session(settings)
        self.session.hooks["response"].append(self._on_response)
        self.tokens = tokens or TokenProvider(settings)
        self.governor = governor or ApiBudget(
            total_pct=settings.api_budget_pct, run_pct=settings.api_budget_run_pct
        )
        self.clock = ServerClock()
        self._lock = threading.Lock()
        self._client: tuple[Token, Any] | None = None
        self.token_refreshes = 0

    def _on_response(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        # Requests to the data API count against DailyApiRequests, retries included, as
        # the org counts them: not the token endpoint, and not requests the org refused
        # before serving them (401 invalid session, 403 limit exceeded, 5xx unavailable).
        status = resp.status_code
        if "/services/data/" in resp.url and status not in _UNCOUNTED and status < 500:
            self.governor.record("api")
        self.governor.observe_limit_info(resp.headers.get("Sforce-Limit-Info"))
        self.clock.observe(resp.headers.get("Date"), time.time())

    def client(self) -> tuple[Token, Any]:
        """The simple-salesforce client for the current token."""
        from simple_salesforce import Salesforce

        token = self.tokens.token()
        with self._lock:
            if self._client is None or self._client[0] is not token:
                sf = Salesforce(
                    instance_url=token.instance_url,
                    session_id=token.access_token,
                    version=self.settings.api_version,
                    session=self.session,
                )
                self._client = (token, sf)
            return self._client

    @property
    def data_url(self) -> str:
        """``https://host/services/data/vXX.X/`` for the current token's instance."""
        return f"{self.tokens.token().instance_url}/services/data/v{self.settings.api_version}/"

    def call(
        self,
        fn: Callable[[Any], T],
        *,
        what: str,
        long: bool = False,
        cost: int = 1,
    ) -> T:
        """Run ``fn(sf)`` under the budget, with token refresh and transient retries."""
        self.governor.acquire("api", cost, what=what)

        def attempt() -> T:
            for refreshed in (False, True):
                token, sf = self.client()
                try:
                    if long:
                        with self.governor.long_request():
                            return fn(sf)
                    return fn(sf)
                except Exception as exc:
                    if _is_invalid_session(exc) and not refreshed:
                        log.info("session expired during %s; refreshing the token", what)
                        self.tokens.refresh(token)
                        self.token_refreshes += 1
                        continue
                    mapped = classify_error(exc, what=what)
                    if mapped is exc:
                        raise
                    raise mapped from exc
            raise AssertionError("unreachable")  # pragma: no cover

        return self.governor.call(attempt, what=what)


class SalesforceRest:
    """The REST calls of the extraction layer."""

    def __init__(
        self, conn: SalesforceConnection, pii_fields: Mapping[str, Collection[str]] | None = None
    ) -> None:
        self.conn = conn
        self.pii_fields = {k.lower(): v for k, v in (pii_fields or {}).items()}

    def describe_body(self, obj: str) -> dict[str, Any]:
        """The raw describe of ``obj`` (for the schema registry and the engine's spec)."""
        name = soql.identifier(obj)
        return self.conn.call(lambda sf: getattr(sf, name).describe(), what=f"describe {name}")

    def describe(self, obj: str) -> ObjectDescribe:
        """Fields of ``obj`` minus compound parents, PII flags from configuration."""
        name = soql.identifier(obj)
        return parse_describe(self.describe_body(name), self.pii_fields.get(name.lower(), ()))

    def limits(self) -> dict[str, Any]:
        """``/limits``; also feeds the governor."""
        body = self.conn.call(lambda sf: sf.limits(), what="limits")
        self.conn.governor.observe_limits(body)
        return body

    def query_all(self, query: str, *, what: str = "queryAll") -> Iterator[dict[str, Any]]:
        """Stream the records of a queryAll (deletes included), one API call per page."""
        result = self.conn.call(
            lambda sf: sf.query(query, include_deleted=True), what=what, long=True
        )
        while True:
            for rec in result.get("records", []):
                rec.pop("attributes", None)
                yield rec
            next_url = result.get("nextRecordsUrl")
            if result.get("done", True) or not next_url:
                return

            # The url is bound as a default, not closed over: it is a loop variable (B023).
            def next_page(sf: Any, url: str = next_url) -> Any:
                return sf.query_more(url, identifier_is_url=True, include_deleted=True)

            result = self.conn.call(next_page, what=what, long=True)

    def record_counts(self, objects: Sequence[str]) -> dict[str, int]:
        """Approximate live row counts from ``/limits/recordCount?sObjects=…``.

        Salesforce documents the counts as approximate (a periodically refreshed figure,
        not a query), without soft-deleted or archived rows; objects it does not know are
        left out of the answer (REST API guide, "Record Count"). Cheap whatever the size.
        """
        names = [soql.identifier(o) for o in objects]
        body = self.conn.call(
            lambda sf: sf.restful("limits/recordCount", params={"sObjects": ",".join(names)}),
            what="record counts",
        )
        return {
            str(entry["name"]): int(entry["count"])
            for entry in (body or {}).get("sObjects", [])
            if isinstance(entry, Mapping) and "name" in entry and "count" in entry
        }

    def count(self, obj: str, where: str | None = None, *, include_deleted: bool = True) -> int:
        """``SELECT COUNT() FROM obj [WHERE …]`` (queryAll by default, so deletes count).

        It scans every matching row, so the Bulk planner never uses it (over 500M rows it
        risks QUERY_TIMEOUT); checks that need an exact count do."""
        q = f"SELECT COUNT() FROM {soql.identifier(obj)}" + (f" WHERE {where}" if where else "")
        body = self.conn.call(
            lambda sf: sf.query(q, include_deleted=include_deleted), what=f"count {obj}"
        )
        return int(body["totalSize"])

    def retrieve(self, obj: str, ids: Sequence[str], fields: Sequence[str]) -> SnapshotRows:
        """Current state of ``ids`` (deleted ones included, IsDeleted=true) for gap repair.

        Ids missing from the answer were purged (hard-deleted past the recycle bin).
        """
        observed = self.conn.clock.now_ms()
        records: list[dict[str, Any]] = []
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), RETRIEVE_CHUNK):
            chunk = unique[start : start + RETRIEVE_CHUNK]
            q = soql.select(obj, fields, soql.ids_in(chunk))
            records.extend(self.query_all(q, what=f"retrieve {obj}"))
        return SnapshotRows(obj, records, observed)

    def deleted(self, obj: str, start: datetime, end: datetime) -> dict[str, Any]:
        """getDeleted over [start, end] (15 days max; tz-aware datetimes)."""
        name = soql.identifier(obj)
        _require_aware(start, end)
        return self.conn.call(
            lambda sf: getattr(sf, name).deleted(start, end), what=f"deleted {name}"
        )

    def updated(self, obj: str, start: datetime, end: datetime) -> dict[str, Any]:
        """getUpdated over [start, end] (30 days max; tz-aware datetimes)."""
        name = soql.identifier(obj)
        _require_aware(start, end)
        return self.conn.call(
            lambda sf: getattr(sf, name).updated(start, end), what=f"updated {name}"
        )


def _require_aware(*values: datetime) -> None:
    # simple-salesforce mangles naive datetimes into a malformed query string (ref §6.2).
    for v in values:
        if v.tzinfo is None:
            raise ValueError("deleted/updated need timezone-aware datetimes")

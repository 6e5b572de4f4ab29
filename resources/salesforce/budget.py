"""API budget governor: one budget over REST calls, Bulk jobs, long requests and CDC delivery.

Salesforce limits are per org and per rolling 24 h (reference §3.5, §4.1, §2.7); other
integrations share them. The governor:

- counts every HTTP request we send to the org (the emulator and Salesforce count the same
  thing), every Bulk query job, every MB of Bulk results downloaded and every CDC event
  requested for delivery;
- learns the org's limits from ``/limits`` and from the ``Sforce-Limit-Info`` header that
  every REST response carries;
- refuses work with :class:`BudgetExhaustedError` once this run has used its share
  (``run_pct``), this platform its share over 24 h (``total_pct``, across runs when a usage
  ledger file is configured), or the org is close to its limit (``floor_pct`` left for
  everyone else) — refusing is better than exhausting the org for every other integration;
- bounds concurrent long requests (Salesforce allows 25 requests running >= 20 s per org,
  5 on Developer Edition), and
- retries transient failures (503, concurrent-limit REQUEST_LIMIT_EXCEEDED, gRPC
  UNAVAILABLE) with exponential backoff and full jitter.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from resources.salesforce.errors import BudgetExhaustedError, TransientApiError

log = logging.getLogger(__name__)

T = TypeVar("T")
Kind = Literal["api", "bulk_jobs", "bulk_mb", "cdc_events"]

# Names of the /limits entries each budget kind is governed by.
LIMIT_NAMES: dict[Kind, str] = {
    "api": "DailyApiRequests",
    "bulk_jobs": "DailyBulkV2QueryJobs",
    "bulk_mb": "DailyBulkV2QueryFileStorageMB",
    "cdc_events": "DailyDeliveredPlatformEvents",
}
# Used until /limits or a header tells us the org's real numbers: Enterprise Edition-ish
# values (reference §2.7, §3.5), low enough to be safe. Bulk results: 1 TB = 976,562 MB
# per rolling 24 h, the same in every edition.
DEFAULT_MAX: dict[Kind, int] = {
    "api": 15_000,
    "bulk_jobs": 10_000,
    "bulk_mb": 976_562,
    "cdc_events": 25_000,
}
_DAY_S = 86_400
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")


@dataclass
class _Usage:
    max: int
    remaining: int | None = None  # org-wide, as last reported
    observed_at: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient failures: exponential with full jitter, bounded attempts."""

    attempts: int = 6
    base_s: float = 0.5
    cap_s: float = 30.0


class UsageLedger:
    """This platform's usage per hour bucket, persisted so ``total_pct`` spans runs.

    A small JSON file (one per org); concurrent runs may race on it, which can only make the
    total slightly under-counted for a moment, so the org floor stays the hard guard.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, int]]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def used_24h(self, kind: Kind, now: float) -> int:
        """Units of ``kind`` used by the platform in the last 24 h."""
        horizon = int(now // 3600) - 24
        with self._lock:
            buckets = self._load().get(kind, {})
        return sum(n for hour, n in buckets.items() if int(hour) > horizon)

    def add(self, counts: Mapping[Kind, int], now: float) -> None:
        """Add this run's usage to the current hour bucket and drop buckets older than 24 h."""
        hour = int(now // 3600)
        with self._lock:
            data = self._load()
            for kind, n in counts.items():
                if n:
                    buckets = data.setdefault(kind, {})
                    buckets[str(hour)] = buckets.get(str(hour), 0) + n
            for buckets in data.values():
                for old in [h for h in buckets if int(h) <= hour - 24]:
                    del buckets[old]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.path)


class ApiBudget:
    """The governor. Thread-safe; one per process (shared by REST, Bulk and Pub/Sub)."""

    def __init__(
        self,
        *,
        total_pct: float = 25.0,
        run_pct: float = 10.0,
        floor_pct: float = 10.0,
        max_concurrent_long: int = 4,
        retry: RetryPolicy | None = None,
        ledger: UsageLedger | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.total_pct = total_pct
        self.run_pct = run_pct
        self.floor_pct = floor_pct
        self.retry_policy = retry or RetryPolicy()
        self.ledger = ledger
        self._sleep = sleep
        self._lock = threading.Lock()
        self._long = threading.BoundedSemaphore(max_concurrent_long)
        self._usage: dict[Kind, _Usage] = {k: _Usage(DEFAULT_MAX[k]) for k in LIMIT_NAMES}
        self._ledger_base: dict[Kind, int] = {}
        self._flushed: dict[Kind, int] = dict.fromkeys(LIMIT_NAMES, 0)
        # Counters (also reported as run metadata).
        self.used: dict[Kind, int] = dict.fromkeys(LIMIT_NAMES, 0)
        self.retries = 0
        self.throttled = 0
        self.refused = 0

    def observe_limit_info(self, header: str | None) -> None:
        """Update the API-request usage from a ``Sforce-Limit-Info`` header."""
        if not header:
            return
        m = _LIMIT_INFO.search(header)
        if m:
            used, total = int(m.group(1)), int(m.group(2))
            with self._lock:
                self._usage["api"] = _Usage(total, max(total - used, 0), time.time())

    def observe_limits(self, limits: Mapping[str, Any]) -> None:
        """Update every budget kind from a ``/limits`` response body."""
        with self._lock:
            for kind, name in LIMIT_NAMES.items():
                entry = limits.get(name)
                if isinstance(entry, Mapping) and "Max" in entry:
                    self._usage[kind] = _Usage(
                        int(entry["Max"]), int(entry.get("Remaining", entry["Max"])), time.time()
                    )

    def org_usage(self, kind: Kind) -> tuple[int, int | None]:
        """(org max, org remaining or None if never reported) for a budget kind."""
        with self._lock:
            u = self._usage[kind]
            return u.max, u.remaining

    def record(self, kind: Kind, n: int = 1) -> None:
        """Count ``n`` units actually consumed (called by the HTTP hook, job creation...)."""
        with self._lock:
            self.used[kind] += n
            usage = self._usage[kind]
            if usage.remaining is not None and kind != "api":
                # The API count is re-read from every response header; others decay locally.
                usage.remaining = max(usage.remaining - n, 0)

    def acquire(self, kind: Kind, n: int = 1, *, what: str = "") -> None:
        """Check that ``n`` more units of ``kind`` fit every budget, or refuse."""
        with self._lock:
            usage = self._usage[kind]
            run_cap = int(usage.max * self.run_pct / 100)
            total_cap = int(usage.max * self.total_pct / 100)
            floor = int(usage.max * self.floor_pct / 100)
            used = self.used[kind]
            reason = scope = ""
            if used + n > run_cap:
                reason = f"this run used {used} of its {self.run_pct}% share ({run_cap})"
                scope = "run"
            elif self.ledger is not None:
                base = self._ledger_base.get(kind)
                if base is None:
                    base = self.ledger.used_24h(kind, time.time()) - self._flushed[kind]
                    self._ledger_base[kind] = base
                if base + used + n > total_cap:
                    reason = (
                        f"the platform used {base + used} in 24 h, over its {self.total_pct}% "
                        f"share ({total_cap})"
                    )
                    scope = "platform"
            if not reason and usage.remaining is not None and usage.remaining - n < floor:
                reason = (
                    f"the org has {usage.remaining} of {usage.max} left, under the "
                    f"{self.floor_pct}% floor kept for other integrations"
                )
                scope = "org"
            if reason:
                self.refused += 1
        if reason:
            raise BudgetExhaustedError(
                f"API budget ({LIMIT_NAMES[kind]}) refuses {what or kind}: {reason}. "
                "See docs/extraction.md#api-budget.",
                limit=LIMIT_NAMES[kind],
                scope=scope,
            )

    @contextmanager
    def long_request(self) -> Iterator[None]:
        """Hold one of the concurrent long-request slots for the duration of a call."""
        with self._long:
            yield

    def call(self, fn: Callable[[], T], *, what: str = "") -> T:
        """Run ``fn``, retrying :class:`TransientApiError` with full-jitter backoff."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt
        from tenacity.wait import wait_random_exponential

        policy = self.retry_policy

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception()
            with self._lock:
                self.retries += 1
            log.warning(
                "transient Salesforce failure on %s (%s); retry %d in %.2fs",
                what or "call",
                getattr(exc, "error_code", "") or getattr(exc, "status", ""),
                state.attempt_number,
                state.upcoming_sleep,
            )

        def counted() -> T:
            try:
                return fn()
            except TransientApiError:
                with self._lock:
                    self.throttled += 1
                raise

        retrying = Retrying(
            retry=retry_if_exception_type(TransientApiError),
            wait=wait_random_exponential(multiplier=policy.base_s, max=policy.cap_s),
            stop=stop_after_attempt(policy.attempts),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(counted)

    def flush(self) -> None:
        """Persist this run's usage to the ledger (idempotent; call at the end of a run)."""
        if self.ledger is None:
            return
        with self._lock:
            delta: dict[Kind, int] = {k: self.used[k] - self._flushed[k] for k in LIMIT_NAMES}
            self._flushed = dict(self.used)
        self.ledger.add(delta, time.time())

    def snapshot(self) -> dict[str, Any]:
        """Counters for run metadata and logs."""
        with self._lock:
            return {
                "api_requests": self.used["api"],
                "bulk_jobs": self.used["bulk_jobs"],
                "bulk_mb": self.used["bulk_mb"],
                "cdc_events": self.used["cdc_events"],
                "retries": self.retries,
                "throttled": self.throttled,
                "refused": self.refused,
                "org": {
                    k: {"max": u.max, "remaining": u.remaining} for k, u in self._usage.items()
                },
            }

"""Scripted faults: thread-safe state the admin endpoint arms and the servers consume.

Each ``take_*`` call consumes one armed fault (or returns the "no fault" value), so a test
can say "the next 2 REST calls fail with 503" and get exactly that.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

# CDC events delivered per rolling 24 h of org time (DailyDeliveredPlatformEvents):
# Performance/Unlimited Edition's 50,000 (Enterprise 25,000; each add-on +100,000; reference
# §2.7). The larger edition keeps every test and ~7 h of demo traffic inside it (2 changes/s
# with activities polled: ~6,500 events/h with automation updates); `--delivery-limit 25000`
# is the Enterprise org.
DEFAULT_DELIVERY_LIMIT = 50_000
DELIVERY_LIMIT_ENV = "SFDC_EMULATOR_DELIVERY_LIMIT"

Target = Literal["rest", "bulk", "pubsub"]


@dataclass(frozen=True)
class EventDelay:
    """Delivery delay: ``fraction`` of events are published ``seconds`` (emulator time) late."""

    fraction: float
    seconds: float


@dataclass(frozen=True)
class EventDrop:
    """Lost events: ``fraction`` of new events are never persisted; ``remaining`` caps how
    many more are dropped (None: no cap) before the fault disarms itself."""

    fraction: float
    remaining: int | None


class Faults:
    """Armed faults for REST, Bulk, Pub/Sub and CDC delivery."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._drop_rng = random.Random(f"drop-events:{seed}")
        self._session_epoch = 0
        self._events_dropped = 0
        self._clear()

    def _clear(self) -> None:
        self._rest_errors: deque[tuple[int, str]] = deque()
        self._bulk_failures: deque[str] = deque()
        self._pubsub_errors: deque[tuple[str, str]] = deque()
        self._slow: dict[str, deque[float]] = {"rest": deque(), "bulk": deque(), "pubsub": deque()}
        self._daily_limit: int | None = None
        self._delivery_limit: int | None = None
        self._concurrent_limit: int | None = None
        self._bulk_jobs_limit: int | None = None
        self._bulk_mb_limit: int | None = None
        self._event_delay: EventDelay | None = None
        self._event_drop: EventDrop | None = None
        self._duplicates = 0

    def rest_error(self, status: int, error_code: str, count: int = 1) -> None:
        """The next ``count`` REST (and Bulk HTTP) calls fail with ``status``/``error_code``."""
        with self._lock:
            self._rest_errors.extend([(int(status), error_code)] * count)

    def bulk_failure(self, message: str = "InternalServerError", count: int = 1) -> None:
        """The next ``count`` Bulk query jobs end in state ``Failed`` with ``message``."""
        with self._lock:
            self._bulk_failures.extend([message] * count)

    def pubsub_error(
        self,
        status: str = "UNAVAILABLE",
        error_code: str = "sfdc.platform.eventbus.grpc.service.unavailable",
        count: int = 1,
    ) -> None:
        """The next ``count`` Pub/Sub RPCs abort with gRPC ``status`` + ``error-code`` trailer."""
        with self._lock:
            self._pubsub_errors.extend([(status, error_code)] * count)

    def slow(self, target: Target, seconds: float, count: int = 1) -> None:
        """The next ``count`` calls of ``target`` take ``seconds`` longer."""
        if target not in self._slow:
            raise ValueError(f"unknown slow target {target!r}: rest, bulk or pubsub")
        with self._lock:
            self._slow[target].extend([float(seconds)] * count)

    def expire_sessions(self) -> None:
        """Every access token issued so far becomes invalid (INVALID_SESSION_ID)."""
        with self._lock:
            self._session_epoch += 1

    def daily_limit(self, max: int | None) -> None:
        """Set DailyApiRequests Max (None: back to the default)."""
        with self._lock:
            self._daily_limit = max

    def delivery_limit(self, max: int | None) -> None:
        """Set the CDC delivered-events allocation (DailyDeliveredPlatformEvents Max) over the
        org's configured one (None: back to it)."""
        with self._lock:
            self._delivery_limit = max

    def concurrent_limit(self, n: int | None) -> None:
        """Concurrent long-running request limit (None: unlimited)."""
        with self._lock:
            self._concurrent_limit = n

    def bulk_jobs_limit(self, max: int | None) -> None:
        """Set DailyBulkV2QueryJobs Max (None: back to Salesforce's 10,000)."""
        with self._lock:
            self._bulk_jobs_limit = max

    def bulk_mb_limit(self, max: int | None) -> None:
        """Set DailyBulkV2QueryFileStorageMB Max (None: back to Salesforce's 976,562)."""
        with self._lock:
            self._bulk_mb_limit = max

    def delay_events(self, fraction: float, seconds: float) -> None:
        """``fraction`` of new CDC events are appended ``seconds`` late (0 disarms)."""
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        with self._lock:
            self._event_delay = EventDelay(fraction, seconds) if fraction > 0 else None

    def drop_events(self, fraction: float, count: int | None = None) -> None:
        """``fraction`` of new CDC events are lost: never delivered, never replayable, while
        their commits stand (at most ``count`` of them; 0 disarms). The choice is
        deterministic: each arming restarts a generator seeded from the org seed, so the
        same commits after the same arming lose the same events."""
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            armed = fraction > 0 and count != 0
            self._event_drop = EventDrop(fraction, count) if armed else None
            self._drop_rng = random.Random(f"drop-events:{self._seed}")

    def duplicate_on_resubscribe(self, n: int) -> None:
        """The next resubscribe re-delivers ``n`` events before its replay position."""
        with self._lock:
            self._duplicates = int(n)

    def reset(self) -> None:
        """Disarm everything (session epoch keeps counting: expired tokens stay expired;
        ``events_dropped`` keeps counting what was lost)."""
        with self._lock:
            self._clear()

    def take_rest_fault(self) -> tuple[int, str] | None:
        with self._lock:
            return self._rest_errors.popleft() if self._rest_errors else None

    def take_bulk_failure(self) -> str | None:
        with self._lock:
            return self._bulk_failures.popleft() if self._bulk_failures else None

    def take_pubsub_fault(self) -> tuple[str, str] | None:
        with self._lock:
            return self._pubsub_errors.popleft() if self._pubsub_errors else None

    def take_slow(self, target: Target) -> float:
        """Extra seconds for this call of ``target`` (0.0 when none armed)."""
        with self._lock:
            queue = self._slow[target]
            return queue.popleft() if queue else 0.0

    @property
    def session_epoch(self) -> int:
        """Tokens record the epoch they were issued in; older epochs are expired."""
        with self._lock:
            return self._session_epoch

    @property
    def daily_limit_max(self) -> int | None:
        with self._lock:
            return self._daily_limit

    @property
    def delivery_limit_max(self) -> int | None:
        with self._lock:
            return self._delivery_limit

    @property
    def concurrent_limit_value(self) -> int | None:
        with self._lock:
            return self._concurrent_limit

    @property
    def bulk_jobs_max(self) -> int | None:
        with self._lock:
            return self._bulk_jobs_limit

    @property
    def bulk_mb_max(self) -> int | None:
        with self._lock:
            return self._bulk_mb_limit

    def take_event_delay(self) -> float | None:
        """Seconds to hold back one new event, or None to publish it now."""
        with self._lock:
            delay = self._event_delay
            if delay is None or self._rng.random() >= delay.fraction:
                return None
            return delay.seconds

    def take_event_drop(self) -> bool:
        """True when one new event is to be lost (one draw per event while armed)."""
        with self._lock:
            drop = self._event_drop
            if drop is None or self._drop_rng.random() >= drop.fraction:
                return False
            self._events_dropped += 1
            if drop.remaining is not None:
                left = drop.remaining - 1
                self._event_drop = EventDrop(drop.fraction, left) if left > 0 else None
            return True

    @property
    def events_dropped(self) -> int:
        """How many events the drop fault has lost since the server started."""
        with self._lock:
            return self._events_dropped

    def take_duplicates(self) -> int:
        with self._lock:
            n, self._duplicates = self._duplicates, 0
            return n

    def snapshot(self) -> dict[str, Any]:
        """Armed state, for the admin status command."""
        with self._lock:
            return {
                "rest_errors": list(self._rest_errors),
                "bulk_failures": list(self._bulk_failures),
                "pubsub_errors": list(self._pubsub_errors),
                "slow": {k: list(v) for k, v in self._slow.items()},
                "session_epoch": self._session_epoch,
                "daily_limit": self._daily_limit,
                "delivery_limit": self._delivery_limit,
                "concurrent_limit": self._concurrent_limit,
                "bulk_jobs_limit": self._bulk_jobs_limit,
                "bulk_mb_limit": self._bulk_mb_limit,
                "event_delay": None
                if self._event_delay is None
                else {"fraction": self._event_delay.fraction, "seconds": self._event_delay.seconds},
                "event_drop": None
                if self._event_drop is None
                else {
                    "fraction": self._event_drop.fraction,
                    "remaining": self._event_drop.remaining,
                },
                "events_dropped": self._events_dropped,
                "duplicate_on_resubscribe": self._duplicates,
            }

"""Pub/Sub API subscriber (grpcio + fastavro): bounded CDC drains for a sensor.

A drain subscribes to one topic from a stored replay id (or LATEST/EARLIEST, chosen
explicitly: no stored id and no policy is an error, because guessing either loses or
re-reads three days of events), requests events with Salesforce's pull flow control
(``num_requested`` is additive, 100 outstanding at most), decodes each event with the
schema cached by schema id, explodes it into one change row per record id, and stops after
``max_events`` events, ``max_seconds`` seconds, or once the stream has been quiet for
``idle_s`` (caught up). Transient failures (UNAVAILABLE, token expiry) resubscribe from the
last processed replay id, so a drain delivers each event once; a redelivery across drains
is deduplicated downstream by change id. An expired or unknown replay id raises
:class:`ReplayIdExpiredError`. A budget refusal (this run's CDC share, the org's floor, or
Salesforce's own ``subscription.limit.exceeded``) does not raise: the drain returns what
it received, ``stopped_by`` set, so the caller lands it and resumes after it.

The message classes come from the repository's compiled ``pubsub_api.proto``
(``resources.salesforce.pubsub_api``, which the emulator's server imports too): protobuf
allows one registration of ``eventbus.v1`` per process, and the emulator runs in-process
in tests.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from resources.salesforce.auth import TokenProvider
from resources.salesforce.budget import ApiBudget
from resources.salesforce.cdc_decode import (
    GAP_TYPES,
    OVERFLOW,
    ChangeRow,
    EventSchema,
    decode_event,
    explode,
)
from resources.salesforce.errors import (
    BudgetExhaustedError,
    DeliveryAllocationExhaustedError,
    PubSubError,
    ReplayIdExpiredError,
    SchemaNotFoundError,
    TransientApiError,
)
from resources.salesforce.settings import SalesforceSettings

log = logging.getLogger(__name__)

MAX_OUTSTANDING = 100  # Salesforce caps outstanding requested events at 100
_ERR = "sfdc.platform.eventbus.grpc."
_CHANNEL_OPTIONS = [
    # Events are up to 1 MB and the server batches several per response.
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    # HTTP/2 pings no more often than servers tolerate by default (5 min); Salesforce also
    # sends an empty keepalive response at least every 270 s on an idle stream.
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]


class ReplayPolicy(StrEnum):
    """Where to start when no replay id is stored."""

    LATEST = "LATEST"
    EARLIEST = "EARLIEST"


@dataclass
class DrainResult:
    """What one drain produced; ``replay_id`` is the cursor to store after landing."""

    topic: str
    rows: list[ChangeRow] = field(default_factory=list, repr=False)
    events: int = 0
    replay_id: bytes | None = None
    # entity -> record ids to re-fetch by REST (gap events, diff-encoded fields)
    gaps: dict[str, set[str]] = field(default_factory=dict)
    # entity -> earliest commit time (ms) to re-backfill from (GAP_OVERFLOW, wildcard ids)
    overflows: dict[str, int] = field(default_factory=dict)
    resubscribes: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    seen_event_ids: set[str] = field(default_factory=set, repr=False)
    # Set when the budget or the org's delivery allocation stopped the drain early: what
    # was drained before it is still here, and ``replay_id`` is the last of it.
    stopped_by: BudgetExhaustedError | None = field(default=None, repr=False)

    @property
    def cut_short(self) -> bool:
        """Whether a budget refusal ended the drain before it caught up or filled."""
        return self.stopped_by is not None


def replay_bytes(value: int) -> bytes:
    """An integer replay id in Salesforce's 8-byte big-endian wire form."""
    return value.to_bytes(8, "big")


def _error_code(err: Any) -> str:
    try:
        for key, value in err.trailing_metadata() or ():
            if key == "error-code":
                return str(value)
    except Exception:  # a locally cancelled call has no trailers
        return ""
    return ""


def classify_rpc_error(err: Any, *, what: str) -> Exception:
    """Map a grpc.RpcError to our error types (by status and ``error-code`` trailer)."""
    import grpc

    status = err.code() if hasattr(err, "code") else None
    code = _error_code(err)
    details = err.details() if hasattr(err, "details") else str(err)
    name = status.name if status is not None else ""
    if code.endswith("replayid.corrupted"):
        return ReplayIdExpiredError(
            f"{what}: the stored replay id is expired or invalid ({details}). Resubscribe at "
            "LATEST and re-backfill from the last applied commit time (docs/extraction.md).",
            status=name,
            error_code=code,
        )
    if code.endswith("subscription.limit.exceeded"):
        return DeliveryAllocationExhaustedError(
            f"{what}: the org's CDC delivery allocation (DailyDeliveredPlatformEvents, rolling "
            "24 h) is used up; see docs/operations.md#cdc-delivery-allocation-used-up"
        )
    if status in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
    ) or code.endswith("service.unavailable"):
        return TransientApiError(f"{what}: {name} {code}", error_code=code or name)
    return PubSubError(f"{what}: {name} {code}: {details}", status=name, error_code=code)


class _AuthExpired(Exception):
    pass


class PubSubSubscriber:
    """Subscribes to CDC topics of one org; one gRPC channel, schemas cached by id."""

    def __init__(
        self,
        settings: SalesforceSettings,
        tokens: TokenProvider,
        governor: ApiBudget | None = None,
        *,
        idle_s: float = 1.5,
        first_response_s: float = 3.0,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.governor = governor or ApiBudget()
        self.idle_s = idle_s
        self.first_response_s = first_response_s
        self._channel: Any = None
        self._stub: Any = None
        self._schemas: dict[str, EventSchema] = {}
        self._lock = threading.Lock()
        self.schema_fetches = 0

    @staticmethod
    def _pb() -> tuple[Any, Any]:
        from resources.salesforce.pubsub_api import pubsub_api_pb2, pubsub_api_pb2_grpc

        return pubsub_api_pb2, pubsub_api_pb2_grpc

    def stub(self) -> Any:
        """The PubSub stub on a shared channel (TLS with the custom CA bundle if set)."""
        import grpc

        with self._lock:
            if self._stub is None:
                target = self.settings.pubsub_target
                if self.settings.pubsub_tls:
                    roots = None
                    if self.settings.ca_bundle:
                        with open(self.settings.ca_bundle, "rb") as fh:
                            roots = fh.read()
                    creds = grpc.ssl_channel_credentials(root_certificates=roots)
                    self._channel = grpc.secure_channel(target, creds, options=_CHANNEL_OPTIONS)
                else:
                    self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
                self._stub = self._pb()[1].PubSubStub(self._channel)
            return self._stub

    def close(self) -> None:
        """Close the gRPC channel."""
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = self._stub = None

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.tokens.token()
        return (
            ("accesstoken", token.access_token),
            ("instanceurl", token.instance_url),
            ("tenantid", self.settings.tenant_id),
        )

    def _unary(self, fn_name: str, request: Any, what: str) -> Any:
        import grpc

        for attempt in (0, 1):
            try:
                return getattr(self.stub(), fn_name)(request, metadata=self._metadata(), timeout=60)
            except grpc.RpcError as err:
                if _error_code(err).endswith("auth.error") and attempt == 0:
                    self.tokens.refresh(self.tokens.token())
                    continue
                raise classify_rpc_error(err, what=what) from err
        raise AssertionError("unreachable")  # pragma: no cover

    def topic_schema_id(self, topic: str) -> str:
        """The topic's current schema id (GetTopic)."""
        pb2, _ = self._pb()
        info = self._unary("GetTopic", pb2.TopicRequest(topic_name=topic), f"GetTopic {topic}")
        return str(info.schema_id)

    def schema(self, schema_id: str) -> EventSchema:
        """The parsed schema for an id, fetched once (GetSchema) and cached."""
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        pb2, _ = self._pb()
        try:
            info = self._unary(
                "GetSchema", pb2.SchemaRequest(schema_id=schema_id), f"GetSchema {schema_id}"
            )
        except PubSubError as exc:
            raise SchemaNotFoundError(str(exc), error_code=exc.error_code) from exc
        self.schema_fetches += 1
        parsed = EventSchema(info.schema_json)
        self._schemas[schema_id] = parsed
        return parsed

    def drain(
        self,
        topic: str,
        replay_id: bytes | None,
        *,
        policy: ReplayPolicy | None = None,
        max_events: int = 1000,
        max_seconds: float = 10.0,
    ) -> DrainResult:
        """Receive up to ``max_events`` events or for ``max_seconds``, whichever is first."""
        if replay_id is None and policy is None:
            raise ValueError(
                f"no stored replay id for {topic}: pass policy=ReplayPolicy.LATEST or EARLIEST"
            )
        if max_events <= 0:
            raise ValueError("max_events must be positive")
        result = DrainResult(topic, replay_id=replay_id)
        started = time.monotonic()
        deadline = started + max_seconds
        auth_retried = False

        def once() -> None:
            nonlocal auth_retried
            try:
                self._subscribe_once(topic, policy, result, max_events, deadline)
            except _AuthExpired:
                if auth_retried:
                    raise PubSubError(f"Subscribe {topic}: authentication failed twice") from None
                auth_retried = True
                self.tokens.refresh(self.tokens.token())
                result.resubscribes += 1
                raise TransientApiError(f"Subscribe {topic}: session refreshed") from None
            except TransientApiError:
                result.resubscribes += 1
                raise

        try:
            self.governor.call(once, what=f"Subscribe {topic}")
        except BudgetExhaustedError as exc:
            # Raising would throw away the events already processed and leave the caller's
            # cursor where it was: the next drain would meet the same refusal at the same
            # place, for ever. Return them with the reason instead.
            result.stopped_by = exc
        result.seconds = time.monotonic() - started
        return result

    def _subscribe_once(
        self,
        topic: str,
        policy: ReplayPolicy | None,
        result: DrainResult,
        max_events: int,
        deadline: float,
    ) -> None:
        import grpc

        pb2, _ = self._pb()
        wanted = max_events - result.events
        if wanted <= 0 or time.monotonic() >= deadline:
            return
        requests: queue.Queue[Any] = queue.Queue()

        def request_iter() -> Iterator[Any]:
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        def ask(n: int, first: bool) -> int:
            n = min(n, MAX_OUTSTANDING)
            self.governor.acquire("cdc_events", n, what=f"CDC delivery on {topic}")
            if first:
                if result.replay_id is not None:
                    req = pb2.FetchRequest(
                        topic_name=topic,
                        replay_preset=pb2.CUSTOM,
                        replay_id=result.replay_id,
                        num_requested=n,
                    )
                else:
                    preset = pb2.EARLIEST if policy == ReplayPolicy.EARLIEST else pb2.LATEST
                    req = pb2.FetchRequest(topic_name=topic, replay_preset=preset, num_requested=n)
            else:
                req = pb2.FetchRequest(topic_name=topic, num_requested=n)
            requests.put(req)
            return n

        # Refuse before opening the stream: a channel whose budget is spent (the org out of
        # its delivery allocation) then costs no Subscribe call per tick.
        self.governor.acquire(
            "cdc_events", min(wanted, MAX_OUTSTANDING), what=f"CDC delivery on {topic}"
        )
        call = self.stub().Subscribe(request_iter(), metadata=self._metadata())
        responses: queue.Queue[Any] = queue.Queue()

        def read() -> None:
            try:
                for resp in call:
                    responses.put(resp)
            except grpc.RpcError as err:
                responses.put(err)
            finally:
                responses.put(StopIteration)

        reader = threading.Thread(target=read, name=f"pubsub-{topic}", daemon=True)
        reader.start()
        outstanding = ask(wanted, first=True)
        got_any = False
        try:
            while result.events < max_events:
                now = time.monotonic()
                if now >= deadline:
                    return
                wait = self.idle_s if got_any else self.first_response_s
                try:
                    item = responses.get(timeout=min(wait, deadline - now))
                except queue.Empty:
                    return  # caught up (quiet stream) or out of time
                if item is StopIteration:
                    raise TransientApiError(f"Subscribe {topic}: stream closed by server")
                if isinstance(item, grpc.RpcError):
                    if _error_code(item).endswith("auth.error"):
                        raise _AuthExpired()
                    raise classify_rpc_error(item, what=f"Subscribe {topic}")
                got_any = True
                for ev in item.events:
                    self._process(ev, result)
                outstanding = item.pending_num_requested
                if not item.events and item.latest_replay_id:
                    # Keepalive: nothing of ours is pending before this id.
                    result.replay_id = bytes(item.latest_replay_id)
                remaining = max_events - result.events
                # Top up at half-empty rather than at zero so the server always has
                # requests in hand (one round trip per 50 events instead of a stall per 100);
                # never ask for more than the drain still wants.
                top_up = min(MAX_OUTSTANDING - outstanding, remaining - outstanding)
                if outstanding <= MAX_OUTSTANDING // 2 and top_up > 0:
                    outstanding += ask(top_up, first=False)
        finally:
            requests.put(None)
            call.cancel()
            reader.join(timeout=5)

    def _process(self, ev: Any, result: DrainResult) -> None:
        self.governor.record("cdc_events")
        if ev.event.id in result.seen_event_ids:
            # Redelivered after a resubscribe within this drain; still advances the cursor.
            result.duplicates += 1
            result.replay_id = bytes(ev.replay_id)
            return
        result.seen_event_ids.add(ev.event.id)
        schema = self.schema(ev.event.schema_id)
        started = time.perf_counter()
        event = decode_event(
            schema,
            ev.event.payload,
            replay_id=bytes(ev.replay_id),
            event_id=ev.event.id,
            schema_id=ev.event.schema_id,
        )
        rows = explode(event, schema)
        result.decode_seconds += time.perf_counter() - started
        result.rows.extend(rows)
        result.events += 1
        result.replay_id = event.replay_id
        entity = event.entity
        if event.change_type == OVERFLOW or any(r.endswith("*") for r in event.record_ids):
            prev = result.overflows.get(entity)
            result.overflows[entity] = min(prev, event.commit_ts) if prev else event.commit_ts
        elif event.change_type in GAP_TYPES or event.diff_fields:
            result.gaps.setdefault(entity, set()).update(event.record_ids)

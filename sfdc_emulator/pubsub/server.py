"""The emulator's Salesforce Pub/Sub API (``eventbus.v1.PubSub``) gRPC server.

Serves Change Data Capture events from the store's event log to unmodified grpcio clients:
``GetTopic``, ``GetSchema`` and the pull-based bidirectional ``Subscribe`` with Salesforce's
flow control (additive ``num_requested``, 100 outstanding at most), replay presets, 8-byte
big-endian replay ids, empty keepalive responses, the idle close, and errors reported the
Salesforce way: a gRPC status whose message ends in ``rpcId: <uuid>`` plus the
Salesforce error code in the ``error-code`` trailer. Publishing is not offered (CDC topics
are read-only) and managed subscriptions are not emulated; both fail cleanly.

Events are stored already Avro-encoded by the store, so delivery never re-encodes: a batch
read from the log becomes ``ConsumerEvent`` messages byte for byte.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from resources.salesforce.pubsub_api import pubsub_api_pb2 as pb2
from resources.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb2_grpc

log = logging.getLogger(__name__)

REPLAY_ID_BYTES = 8
MAX_OUTSTANDING = 100
DEFAULT_KEEPALIVE_S = 270.0
DEFAULT_IDLE_TIMEOUT_S = 60.0
# Clients keep grpc's default 4 MiB receive limit, so one FetchResponse must stay below it
# even when events approach Salesforce's 1 MB event size.
MAX_RESPONSE_BYTES = 3 * 1024 * 1024
_DAY_MS = 24 * 3600 * 1000
CHANGE_EVENTS_TOPIC = "/data/ChangeEvents"
_TOPIC_PREFIX = "/data/"
_CHANGE_EVENT_SUFFIX = "ChangeEvent"
_CUSTOM_CHANGE_EVENT_SUFFIX = "__ChangeEvent"

_P = "sfdc.platform.eventbus.grpc."
ERR_AUTH = _P + "service.auth.error"
ERR_UNAVAILABLE = _P + "service.unavailable"
ERR_INTERNAL = _P + "service.internal.error"
ERR_REPLAY_CORRUPTED = _P + "subscription.fetch.replayid.corrupted"
ERR_REPLAY_VALIDATION = _P + "subscription.fetch.replayid.validation.failed"
ERR_REQUESTED_INVALID = _P + "subscription.fetch.requested.events.invalid"
ERR_TOPIC_MISMATCH = _P + "subscription.fetch.topic.mismatch"
ERR_LIMIT_EXCEEDED = _P + "subscription.limit.exceeded"
ERR_TOPIC_NOT_FOUND = _P + "topic.not.found"
# Not in Salesforce's documented table; chosen in the same naming scheme.
ERR_SCHEMA_NOT_FOUND = _P + "schema.not.found"
ERR_PUBLISH_UNSUPPORTED = _P + "topic.cannot.publish"
ERR_MANAGED_UNSUPPORTED = _P + "managed.subscription.unsupported"


def encode_replay_id(replay_id: int) -> bytes:
    """The wire form of a store replay id: 8-byte big-endian unsigned integer."""
    return replay_id.to_bytes(REPLAY_ID_BYTES, "big", signed=False)


def decode_replay_id(raw: bytes) -> int | None:
    """The store replay id for wire bytes, or None if they are not 8 bytes."""
    if len(raw) != REPLAY_ID_BYTES:
        return None
    return int.from_bytes(raw, "big", signed=False)


class PubSubError(Exception):
    """A failure to report as gRPC status + ``error-code`` trailer."""

    def __init__(self, status: grpc.StatusCode, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def _abort(context: grpc.ServicerContext, err: PubSubError, rpc_id: str) -> None:
    # Salesforce clients read the code from the trailer and the rpc id from the message tail.
    context.set_trailing_metadata((("error-code", err.error_code),))
    context.abort(err.status, f"{err.message} rpcId: {rpc_id}")


@dataclass(frozen=True)
class Topic:
    """A subscribable CDC topic and the entities it carries (None = every entity)."""

    name: str
    entities: tuple[str, ...] | None


@dataclass(frozen=True)
class _Event:
    replay_id: int
    event_uuid: str
    schema_id: str
    payload: bytes


def _as_event(stored: Any) -> _Event:
    """Adapt a store ``StoredEvent`` (attribute or mapping access) to what we send."""
    if isinstance(stored, Mapping):
        get = stored.__getitem__
    else:

        def get(name: str) -> Any:
            return getattr(stored, name)

    return _Event(
        replay_id=int(get("replay_id")),
        event_uuid=str(get("event_uuid")),
        schema_id=str(get("schema_id")),
        payload=bytes(get("payload")),
    )


class _FaultHooks:
    """The Pub/Sub part of ``sfdc_emulator.faults.Faults``; a no-op without a faults object."""

    def __init__(self, faults: Any | None) -> None:
        self._faults = faults

    def call_error(self) -> PubSubError | None:
        """An armed ``pubsub_error`` fault for this RPC, as the error to abort with."""
        if self._faults is None:
            return None
        fault = self._faults.take_pubsub_fault()
        if fault is None:
            return None
        status_name, error_code = fault
        status = getattr(grpc.StatusCode, str(status_name).upper(), grpc.StatusCode.UNAVAILABLE)
        return PubSubError(status, error_code, "The service is temporarily unavailable.")

    def slow_seconds(self) -> float:
        return float(self._faults.take_slow("pubsub")) if self._faults is not None else 0.0

    def duplicate_count(self) -> int:
        return int(self._faults.take_duplicates()) if self._faults is not None else 0

    def delivery_limit(self) -> int | None:
        """An armed ``fail limit deliveries`` override of the allocation, if any."""
        return self._faults.delivery_limit_max if self._faults is not None else None


class _Subscription:
    """State of one Subscribe stream, shared by the request reader and the sender."""

    def __init__(
        self,
        server: PubSubServer,
        topic: Topic,
        cursor: int,
        rpc_id: str,
    ) -> None:
        self.server = server
        self.topic = topic
        self.rpc_id = rpc_id
        # Last replay id handed to the sender's buffer (read position) / sent to the client.
        self.read_pos = cursor
        self.sent_pos = cursor
        self.buffer: deque[_Event] = deque()
        self.cond = threading.Condition()
        self.pending = 0
        self.error: PubSubError | None = None
        self.client_done = False
        self.cancelled = False
        # When the client last showed life (request) or last got events; the idle close
        # counts from here, keepalives do not reset it.
        self.active_at = time.monotonic()

    def add_request(self, req: pb2.FetchRequest) -> None:
        """Reader thread: one FetchRequest of the client (more events wanted)."""
        with self.cond:
            if req.topic_name and req.topic_name != self.topic.name:
                self.error = PubSubError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    ERR_TOPIC_MISMATCH,
                    f"Topic {req.topic_name} does not match the subscription's topic "
                    f"{self.topic.name}.",
                )
            elif req.num_requested <= 0:
                self.error = _requested_invalid(req.num_requested)
            else:
                self.pending = min(MAX_OUTSTANDING, self.pending + req.num_requested)
                self.active_at = time.monotonic()
            self.cond.notify_all()

    def read_requests(self, requests: Iterator[pb2.FetchRequest]) -> None:
        try:
            for req in requests:
                self.add_request(req)
                if self.error is not None:
                    break
        except Exception:  # the call ended (cancel/deadline): the sender notices via cancel()
            log.debug("subscribe request stream ended", exc_info=True)
        finally:
            with self.cond:
                self.client_done = True
                self.cond.notify_all()

    def cancel(self) -> None:
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()

    def _fill(self) -> None:
        """Handler thread (as the methods below): read ahead from the store when the buffer
        is empty (batched, already encoded)."""
        if self.buffer:
            return
        stored = self.server.store.events_after(
            self.read_pos, self.topic.entities, self.server.read_batch
        )
        if stored:
            events = [_as_event(s) for s in stored]
            self.buffer.extend(events)
            self.read_pos = events[-1].replay_id

    def _take(self, limit: int) -> list[_Event]:
        self._fill()
        batch: list[_Event] = []
        size = 0
        while self.buffer and len(batch) < limit:
            ev = self.buffer[0]
            if batch and size + len(ev.payload) > MAX_RESPONSE_BYTES:
                break
            batch.append(self.buffer.popleft())
            size += len(ev.payload)
        return batch

    def _latest_for_keepalive(self) -> int:
        """The replay id a keepalive may advertise without letting a client skip events.

        The store's latest id, unless events of this topic up to it are still undelivered:
        then the last delivered id (a client that stores it resumes without a hole).
        """
        latest = self.server.store.latest_replay_id()
        if self.buffer:
            return self.sent_pos
        if self.server.store.events_after(self.sent_pos, self.topic.entities, 1):
            return self.sent_pos
        return max(latest, self.sent_pos)

    def run(self, context: grpc.ServicerContext) -> Iterator[pb2.FetchResponse]:
        server = self.server
        hooks = server.hooks
        last_response = time.monotonic()
        while True:
            with self.cond:
                if self.error is not None:
                    raise self.error
                if self.cancelled or server.stopping:
                    return
                pending = self.pending
            if pending > 0:
                batch = self._take(pending)
                if batch:
                    allowed = server.reserve_deliveries(len(batch))
                    if allowed < len(batch):
                        # Hand back what the allocation does not cover; fail once it is empty.
                        self.buffer.extendleft(reversed(batch[allowed:]))
                        batch = batch[:allowed]
                        if not batch:
                            raise PubSubError(
                                grpc.StatusCode.RESOURCE_EXHAUSTED,
                                ERR_LIMIT_EXCEEDED,
                                "The org has exceeded the event delivery limit.",
                            )
                    delay = hooks.slow_seconds()
                    if delay > 0:
                        time.sleep(delay)
                    with self.cond:
                        self.pending -= len(batch)
                        pending_after = self.pending
                        now = time.monotonic()
                        if pending_after == 0:
                            self.active_at = now
                    self.sent_pos = batch[-1].replay_id
                    yield pb2.FetchResponse(
                        events=[
                            pb2.ConsumerEvent(
                                event=pb2.ProducerEvent(
                                    id=ev.event_uuid, schema_id=ev.schema_id, payload=ev.payload
                                ),
                                replay_id=encode_replay_id(ev.replay_id),
                            )
                            for ev in batch
                        ],
                        latest_replay_id=encode_replay_id(self.sent_pos),
                        rpc_id=self.rpc_id,
                        pending_num_requested=pending_after,
                    )
                    last_response = now
                    continue
            now = time.monotonic()
            if now - last_response >= server.keepalive_s:
                yield pb2.FetchResponse(
                    latest_replay_id=encode_replay_id(self._latest_for_keepalive()),
                    rpc_id=self.rpc_id,
                    pending_num_requested=pending,
                )
                last_response = now
                continue
            with self.cond:
                if self.pending == 0 and self.error is None:
                    if self.client_done:
                        return  # half-closed and nothing owed: nothing more can happen
                    if now - self.active_at >= server.idle_timeout_s:
                        log.info("closing idle subscription on %s", self.topic.name)
                        return
                # With events owed we poll the log for new ones; otherwise we only wake for
                # a request, the keepalive or the idle deadline.
                wait = server.keepalive_s - (now - last_response)
                if self.pending > 0:
                    wait = min(wait, server.poll_interval_s)
                else:
                    wait = min(wait, server.idle_timeout_s - (now - self.active_at))
                if self.error is None and not self.cancelled:
                    self.cond.wait(timeout=max(wait, 0.001))
            if not context.is_active():
                return


def _requested_invalid(n: int) -> PubSubError:
    return PubSubError(
        grpc.StatusCode.INVALID_ARGUMENT,
        ERR_REQUESTED_INVALID,
        f"num_requested must be greater than 0, got {n}.",
    )


class _Servicer(pb2_grpc.PubSubServicer):
    def __init__(self, server: PubSubServer) -> None:
        self.server = server

    def GetTopic(self, request: pb2.TopicRequest, context: grpc.ServicerContext) -> pb2.TopicInfo:
        rpc_id = str(uuid.uuid4())
        try:
            self.server.check_call(context)
            topic = self.server.resolve_topic(request.topic_name)
            return pb2.TopicInfo(
                topic_name=topic.name,
                tenant_guid=self.server.tenant_id,
                can_publish=False,
                can_subscribe=True,
                schema_id=self.server.topic_schema_id(topic),
                rpc_id=rpc_id,
            )
        except PubSubError as err:
            _abort(context, err, rpc_id)
            raise  # unreachable: abort raises

    def GetSchema(
        self, request: pb2.SchemaRequest, context: grpc.ServicerContext
    ) -> pb2.SchemaInfo:
        rpc_id = str(uuid.uuid4())
        try:
            self.server.check_call(context)
            try:
                schema_json = self.server.store.schema_json(request.schema_id)
            except (KeyError, LookupError, ValueError):
                raise PubSubError(
                    grpc.StatusCode.NOT_FOUND,
                    ERR_SCHEMA_NOT_FOUND,
                    f"Schema {request.schema_id!r} not found.",
                ) from None
            return pb2.SchemaInfo(
                schema_json=schema_json, schema_id=request.schema_id, rpc_id=rpc_id
            )
        except PubSubError as err:
            _abort(context, err, rpc_id)
            raise

    def Publish(
        self, request: pb2.PublishRequest, context: grpc.ServicerContext
    ) -> pb2.PublishResponse:
        rpc_id = str(uuid.uuid4())
        try:
            self.server.check_call(context)
            raise self.server.publish_error(request.topic_name)
        except PubSubError as err:
            _abort(context, err, rpc_id)
            raise

    def PublishStream(
        self, request_iterator: Iterator[pb2.PublishRequest], context: grpc.ServicerContext
    ) -> Iterator[pb2.PublishResponse]:
        rpc_id = str(uuid.uuid4())
        try:
            self.server.check_call(context)
            first = next(request_iterator, None)
            if first is None:
                return
            raise self.server.publish_error(first.topic_name)
        except PubSubError as err:
            _abort(context, err, rpc_id)
        yield from ()

    def ManagedSubscribe(
        self,
        request_iterator: Iterator[pb2.ManagedFetchRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[pb2.ManagedFetchResponse]:
        rpc_id = str(uuid.uuid4())
        try:
            self.server.check_call(context)
            raise PubSubError(
                grpc.StatusCode.UNIMPLEMENTED,
                ERR_MANAGED_UNSUPPORTED,
                "Managed subscriptions are not supported by the emulator; use Subscribe.",
            )
        except PubSubError as err:
            _abort(context, err, rpc_id)
        yield from ()

    def Subscribe(
        self, request_iterator: Iterator[pb2.FetchRequest], context: grpc.ServicerContext
    ) -> Iterator[pb2.FetchResponse]:
        rpc_id = str(uuid.uuid4())
        server = self.server
        sub: _Subscription | None = None
        first: pb2.FetchRequest | None = None
        try:
            server.check_call(context)
            first = next(request_iterator, None)
            if first is None:
                return
            topic = server.resolve_topic(first.topic_name)
            if first.num_requested <= 0:
                raise _requested_invalid(first.num_requested)
            cursor = server.start_cursor(topic, first)
            sub = _Subscription(server, topic, cursor, rpc_id)
            sub.add_request(first)
            context.add_callback(sub.cancel)
            server.track(sub)
            reader = threading.Thread(
                target=sub.read_requests,
                args=(request_iterator,),
                name="pubsub-fetch-reader",
                daemon=True,
            )
            reader.start()
            yield from sub.run(context)
        except PubSubError as err:
            _abort(context, err, rpc_id)
        except Exception:
            # A store failure must reach the client as a status it can retry on, not as
            # grpc's generic UNKNOWN "Exception iterating responses".
            log.exception("Subscribe failed on %s", first.topic_name if first else "?")
            internal = PubSubError(grpc.StatusCode.INTERNAL, ERR_INTERNAL, "Internal error.")
            _abort(context, internal, rpc_id)
        finally:
            if sub is not None:
                sub.cancel()
                server.untrack(sub)


class PubSubServer:
    """The emulator's Pub/Sub API endpoint over a store's CDC event log.

    ``store`` must offer ``events_after``, ``latest_replay_id``,
    ``earliest_retained_replay_id``, ``schema_json`` and ``current_schema_id`` (see
    ``docs/emulator-internals.md``). ``access_tokens`` is either a predicate over a token
    or a collection of valid tokens (a predicate follows token rotation). ``channels``
    maps custom channel topics (``/data/Name__chn``) to the entities they carry.
    ``faults`` is the shared ``Faults`` (``pubsub_error``, ``slow("pubsub")`` per response,
    ``duplicate_on_resubscribe``). ``tls`` serves ``cert_pem`` (leaf + chain) / ``key_pem``.

    Timing knobs (Salesforce defaults; tests shorten them): ``keepalive_s`` between empty
    keepalive responses, ``idle_timeout_s`` before a stream that owes nothing and gets no
    FetchRequest is closed, ``poll_interval_s`` between log polls while events are owed.
    ``delivery_limit`` caps events delivered per rolling 24 h of org time (None =
    unlimited), settable at runtime and overridden by the ``delivery_limit`` fault
    (``effective_delivery_limit()``); usage is ``delivered_last_24h()``. Past it, Subscribe
    ends with RESOURCE_EXHAUSTED + ``subscription.limit.exceeded``.
    """

    def __init__(
        self,
        store: Any,
        faults: Any | None = None,
        tenant_id: str = "",
        access_tokens: Callable[[str], bool] | Collection[str] = (),
        channels: Mapping[str, Sequence[str]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        *,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        poll_interval_s: float = 0.05,
        read_batch: int = 500,
        max_workers: int = 64,
        delivery_limit: int | None = None,
    ) -> None:
        if tls and (cert_pem is None or key_pem is None):
            raise ValueError("tls=True needs cert_pem and key_pem")
        self.store = store
        self.hooks = _FaultHooks(faults)
        self.tenant_id = tenant_id
        self._tokens = access_tokens
        self.channels: dict[str, tuple[str, ...]] = {
            name: tuple(entities) for name, entities in (channels or {}).items()
        }
        self.host = host
        self._requested_port = port
        self.tls = tls
        self._cert_pem = cert_pem
        self._key_pem = key_pem
        self.keepalive_s = keepalive_s
        self.idle_timeout_s = idle_timeout_s
        self.poll_interval_s = poll_interval_s
        self.read_batch = read_batch
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._port: int | None = None
        self._lock = threading.Lock()
        self._subs: set[_Subscription] = set()
        # Rolling 24 h delivery allocation (DailyDeliveredPlatformEvents); None = unlimited.
        self.delivery_limit = delivery_limit
        self._deliveries: deque[tuple[int, int]] = deque()
        self._delivered = 0
        self.stopping = False

    def start(self) -> PubSubServer:
        """Bind and start serving; returns self (``target`` is then valid)."""
        if self._server is not None:
            raise RuntimeError("PubSubServer already started")
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="pubsub-rpc"
            ),
            # A fixed port must fail loudly when taken rather than be shared silently.
            options=[("grpc.so_reuseport", 0)],
        )
        pb2_grpc.add_PubSubServicer_to_server(_Servicer(self), server)
        address = f"{self.host}:{self._requested_port}"
        if self.tls:
            assert self._cert_pem is not None and self._key_pem is not None
            creds = grpc.ssl_server_credentials([(self._key_pem, self._cert_pem)])
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"could not bind the Pub/Sub server to {address}")
        server.start()
        self._server = server
        self._port = port
        self.stopping = False
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving; open subscriptions are ended."""
        server = self._server
        if server is None:
            return
        self.stopping = True
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.cancel()
        server.stop(grace).wait()
        self._server = None

    def __enter__(self) -> PubSubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        if self._port is None:
            raise RuntimeError("PubSubServer not started")
        return self._port

    @property
    def target(self) -> str:
        """``host:port`` for ``grpc.insecure_channel`` / ``grpc.secure_channel``."""
        return f"{self.host}:{self.port}"

    def track(self, sub: _Subscription) -> None:
        with self._lock:
            self._subs.add(sub)

    def untrack(self, sub: _Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def reserve_deliveries(self, count: int) -> int:
        """Count up to ``count`` delivered events against the rolling 24 h allocation.

        Returns how many may be sent (0 when ``delivery_limit`` is used up). The window uses
        emulator time, so advancing the clock a day frees the allocation.
        """
        now = self._now_ms()
        with self._lock:
            horizon = now - _DAY_MS
            while self._deliveries and self._deliveries[0][0] <= horizon:
                self._delivered -= self._deliveries.popleft()[1]
            limit = self.effective_delivery_limit()
            if limit is not None:
                count = max(0, min(count, limit - self._delivered))
            if count:
                self._deliveries.append((now, count))
                self._delivered += count
            return count

    def effective_delivery_limit(self) -> int | None:
        """The allocation in force: the fault's override, else the configured one."""
        override = self.hooks.delivery_limit()
        return override if override is not None else self.delivery_limit

    def delivered_last_24h(self) -> int:
        """Events delivered in the last 24 h (DailyDeliveredPlatformEvents usage)."""
        self.reserve_deliveries(0)
        with self._lock:
            return self._delivered

    def _now_ms(self) -> int:
        clock = getattr(self.store, "clock", None)
        return int(clock.now_ms()) if clock is not None else time.time_ns() // 1_000_000

    @property
    def active_subscriptions(self) -> int:
        """Open Subscribe streams (for tests and admin)."""
        with self._lock:
            return len(self._subs)

    def _token_ok(self, token: str) -> bool:
        if callable(self._tokens):
            return bool(self._tokens(token))
        return token in self._tokens

    def check_call(self, context: grpc.ServicerContext) -> None:
        """Authenticate the call's metadata and apply an armed unavailability fault."""
        md = {key.lower(): value for key, value in context.invocation_metadata()}
        token = md.get("accesstoken", "")
        instance_url = md.get("instanceurl", "")
        tenant = md.get("tenantid", "")
        if not token or not instance_url or not tenant:
            raise PubSubError(
                grpc.StatusCode.UNAUTHENTICATED,
                ERR_AUTH,
                "Missing accesstoken, instanceurl or tenantid header.",
            )
        if (self.tenant_id and tenant != self.tenant_id) or not self._token_ok(str(token)):
            # Never echo the token: it is a credential.
            raise PubSubError(
                grpc.StatusCode.UNAUTHENTICATED,
                ERR_AUTH,
                "Authentication failed: invalid or expired session, or wrong tenant.",
            )
        fault = self.hooks.call_error()
        if fault is not None:
            raise fault

    def _entity_exists(self, entity: str) -> bool:
        try:
            self.store.current_schema_id(entity)
        except (KeyError, LookupError, ValueError):
            return False
        return True

    def all_entities(self) -> list[str]:
        """Entities of the store's live catalog (``OrgSchema.names()``), in catalog order."""
        return list(self.store.schema.names())

    def resolve_topic(self, name: str) -> Topic:
        """The topic for a name, or NOT_FOUND (names are case-sensitive, as on Salesforce)."""
        if name == CHANGE_EVENTS_TOPIC:
            return Topic(name, None)
        if name in self.channels:
            return Topic(name, self.channels[name])
        if name.startswith(_TOPIC_PREFIX) and name.endswith(_CHANGE_EVENT_SUFFIX):
            base = name[len(_TOPIC_PREFIX) : -len(_CHANGE_EVENT_SUFFIX)]
            if name.endswith(_CUSTOM_CHANGE_EVENT_SUFFIX):
                base = name[len(_TOPIC_PREFIX) : -len(_CUSTOM_CHANGE_EVENT_SUFFIX)] + "__c"
            if base and self._entity_exists(base):
                return Topic(name, (base,))
        raise PubSubError(
            grpc.StatusCode.NOT_FOUND,
            ERR_TOPIC_NOT_FOUND,
            f"Topic {name or '<empty>'} not found or not accessible.",
        )

    def topic_schema_id(self, topic: Topic) -> str:
        """The current schema id; multi-entity topics report their first entity's schema."""
        entities = topic.entities if topic.entities is not None else self.all_entities()
        return self.store.current_schema_id(entities[0])

    def publish_error(self, topic_name: str) -> PubSubError:
        """Why a publish fails: unknown topic, or CDC topics are read-only."""
        self.resolve_topic(topic_name)
        return PubSubError(
            grpc.StatusCode.UNIMPLEMENTED,
            ERR_PUBLISH_UNSUPPORTED,
            f"Publishing to {topic_name} is not allowed: change event topics are read-only.",
        )

    def start_cursor(self, topic: Topic, first: pb2.FetchRequest) -> int:
        """The replay id to deliver *after*, from the first FetchRequest's preset."""
        store = self.store
        preset = first.replay_preset
        if preset == pb2.LATEST:
            return int(store.latest_replay_id())
        if preset == pb2.EARLIEST:
            earliest = store.earliest_retained_replay_id()
            if earliest is None:
                return int(store.latest_replay_id())
            return int(earliest) - 1
        if preset != pb2.CUSTOM:
            raise PubSubError(
                grpc.StatusCode.INVALID_ARGUMENT,
                ERR_REPLAY_VALIDATION,
                f"Unknown replay preset {preset}.",
            )
        if not first.replay_id:
            raise PubSubError(
                grpc.StatusCode.INVALID_ARGUMENT,
                ERR_REPLAY_VALIDATION,
                "A CUSTOM replay preset needs a replay_id.",
            )
        replay_id = decode_replay_id(first.replay_id)
        latest = int(store.latest_replay_id())
        if replay_id is None or replay_id > latest:
            raise _corrupted("The replay ID is invalid.")
        earliest = store.earliest_retained_replay_id()
        # Delivery starts at replay_id + 1; if that event (or anything after it up to the
        # retained window) has expired, the position is lost.
        if replay_id < latest and (earliest is None or replay_id + 1 < int(earliest)):
            raise _corrupted("The replay ID is outside the retention window.")
        duplicates = self.hooks.duplicate_count()
        if duplicates > 0:
            return self._rewind(topic, replay_id, duplicates, earliest)
        return replay_id

    def _rewind(self, topic: Topic, replay_id: int, count: int, earliest: int | None) -> int:
        """Cursor that re-delivers the ``count`` topic events up to ``replay_id`` (fault)."""
        floor = int(earliest) - 1 if earliest is not None else replay_id
        ids = self._topic_replay_ids_upto(topic, replay_id, count, floor)
        return (min(ids) - 1) if ids else replay_id

    def _topic_replay_ids_upto(
        self, topic: Topic, replay_id: int, count: int, floor: int
    ) -> list[int]:
        # The store contract has no "events before" call; read the documented _events table.
        cursor = self.store.read_cursor()
        try:
            sql = "SELECT replay_id FROM _events WHERE replay_id <= ? AND replay_id > ?"
            params: list[Any] = [replay_id, floor]
            if topic.entities is not None:
                sql += " AND list_contains(?, entity)"
                params.append(list(topic.entities))
            sql += " ORDER BY replay_id DESC LIMIT ?"
            params.append(count)
            return [int(row[0]) for row in cursor.execute(sql, params).fetchall()]
        finally:
            with contextlib.suppress(Exception):
                cursor.close()


def _corrupted(message: str) -> PubSubError:
    return PubSubError(grpc.StatusCode.INVALID_ARGUMENT, ERR_REPLAY_CORRUPTED, message)

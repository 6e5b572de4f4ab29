"""Client-side helpers for the Pub/Sub server tests: a real grpcio client, as a sync would use.

``SubscribeClient`` drives one bidirectional Subscribe stream (requests through a queue,
responses read on a thread so tests can wait with timeouts); ``bitmap_field_names`` decodes
CDC bitmaps exactly as Salesforce documents it (reference §2.4), independently of
``sfdc_emulator.cdc``, so the tests check the wire format rather than the encoder against
itself.
"""

from __future__ import annotations

import io
import json
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import fastavro
import grpc

from resources.salesforce.pubsub_api import pubsub_api_pb2 as pb2
from resources.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb2_grpc

TOKEN = "00Dtest!pubsub-token"
TENANT_ID = "00D5g0000000001AAA"
INSTANCE_URL = "https://emulator.my.salesforce.com"
CHANNELS = {
    "/data/RevenueChannel__chn": ["Opportunity", "OpportunityLineItem", "Account"],
    "/data/ActivityChannel__chn": ["Task", "Event"],
}


def auth_metadata(token: str = TOKEN, tenant: str = TENANT_ID) -> tuple[tuple[str, str], ...]:
    """The three metadata entries every Pub/Sub call carries."""
    return (("accesstoken", token), ("instanceurl", INSTANCE_URL), ("tenantid", tenant))


def replay_bytes(replay_id: int) -> bytes:
    return replay_id.to_bytes(8, "big")


def replay_int(raw: bytes) -> int:
    assert len(raw) == 8, raw
    return int.from_bytes(raw, "big")


def error_code(err: grpc.RpcError) -> str | None:
    """The Salesforce ``error-code`` trailer of a failed call."""
    for key, value in err.trailing_metadata() or ():
        if key == "error-code":
            return value
    return None


class SchemaCache:
    """GetSchema per schema id, cached like the Salesforce samples do."""

    def __init__(self, stub: pb2_grpc.PubSubStub) -> None:
        self.stub = stub
        self.raw: dict[str, dict[str, Any]] = {}
        self.parsed: dict[str, Any] = {}

    def get(self, schema_id: str) -> tuple[dict[str, Any], Any]:
        if schema_id not in self.parsed:
            info = self.stub.GetSchema(
                pb2.SchemaRequest(schema_id=schema_id), metadata=auth_metadata()
            )
            assert info.schema_id == schema_id
            raw = json.loads(info.schema_json)
            self.raw[schema_id] = raw
            self.parsed[schema_id] = fastavro.parse_schema(raw)
        return self.raw[schema_id], self.parsed[schema_id]

    def decode(self, event: pb2.ConsumerEvent) -> dict[str, Any]:
        _, parsed = self.get(event.event.schema_id)
        return fastavro.schemaless_reader(io.BytesIO(event.event.payload), parsed, None)


def _record_type(union: Any, named: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The record branch of a field type (unions like [null, rec], [string, rec])."""
    branches = union if isinstance(union, list) else [union]
    for branch in branches:
        if isinstance(branch, dict) and branch.get("type") == "record":
            return branch
        if isinstance(branch, str) and branch in named:
            return named[branch]
    return None


def _collect_named(node: Any, named: dict[str, dict[str, Any]], namespace: str = "") -> None:
    """Index named record types so later references by name resolve (Avro defines once)."""
    if isinstance(node, list):
        for item in node:
            _collect_named(item, named, namespace)
    elif isinstance(node, dict):
        if node.get("type") == "record":
            ns = node.get("namespace", namespace)
            named[node["name"]] = node
            if ns:
                named[f"{ns}.{node['name']}"] = node
            for field in node.get("fields", []):
                _collect_named(field["type"], named, ns)
        elif "type" in node:
            _collect_named(node["type"], named, namespace)


def bitmap_field_names(schema: dict[str, Any], bitmaps: Sequence[str]) -> list[str]:
    """Field names of a changedFields/nulledFields/diffFields bitmap list (reference §2.4).

    Element ``0x…``: bit i of the whole hex number = top-level field i. Element
    ``<pos>-0x…``: bits over the children of the compound at top-level position ``pos``,
    reported as ``Parent.Child``.
    """
    named: dict[str, dict[str, Any]] = {}
    _collect_named(schema, named)
    fields = schema["fields"]
    names: list[str] = []
    for bitmap in bitmaps:
        if bitmap.startswith("0x"):
            hex_digits = bitmap[2:]
            assert len(hex_digits) % 2 == 0 and hex_digits == hex_digits.upper(), bitmap
            value = int(hex_digits, 16)
            names.extend(f["name"] for i, f in enumerate(fields) if value >> i & 1)
        else:
            pos, hex_part = bitmap.split("-", 1)
            assert hex_part.startswith("0x"), bitmap
            hex_digits = hex_part[2:]
            assert len(hex_digits) % 2 == 0 and hex_digits == hex_digits.upper(), bitmap
            parent = fields[int(pos)]
            record = _record_type(parent["type"], named)
            assert record is not None, f"{parent['name']} is not a compound field"
            value = int(hex_digits, 16)
            names.extend(
                f"{parent['name']}.{child['name']}"
                for i, child in enumerate(record["fields"])
                if value >> i & 1
            )
    return names


class SubscribeClient:
    """One Subscribe stream: ``request(n)`` sends FetchRequests, ``next()`` waits for a response."""

    def __init__(
        self,
        stub: pb2_grpc.PubSubStub,
        topic: str,
        preset: int = pb2.LATEST,
        replay_id: bytes = b"",
        num_requested: int = 100,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self._requests: queue.Queue[pb2.FetchRequest | None] = queue.Queue()
        self._responses: queue.Queue[pb2.FetchResponse | grpc.RpcError | None] = queue.Queue()
        self._requests.put(
            pb2.FetchRequest(
                topic_name=topic,
                replay_preset=preset,
                replay_id=replay_id,
                num_requested=num_requested,
            )
        )
        self.call = stub.Subscribe(self._request_iter(), metadata=metadata or auth_metadata())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _request_iter(self) -> Iterator[pb2.FetchRequest]:
        while True:
            req = self._requests.get()
            if req is None:
                return
            yield req

    def _read(self) -> None:
        try:
            for resp in self.call:
                self._responses.put(resp)
            self._responses.put(None)
        except grpc.RpcError as err:
            self._responses.put(err)

    def request(self, n: int, topic: str = "") -> None:
        self._requests.put(pb2.FetchRequest(topic_name=topic, num_requested=n))

    def next(self, timeout: float = 5.0) -> pb2.FetchResponse | grpc.RpcError | None:
        """The next response, the terminating RpcError, or None when the stream ended OK."""
        return self._responses.get(timeout=timeout)

    def next_response(self, timeout: float = 5.0) -> pb2.FetchResponse:
        item = self.next(timeout)
        if not isinstance(item, pb2.FetchResponse):
            raise AssertionError(f"expected a FetchResponse, got {item!r}")
        return item

    def error(self, timeout: float = 5.0) -> grpc.RpcError:
        """Skip responses until the stream fails; return the error."""
        while True:
            item = self.next(timeout)
            if isinstance(item, grpc.RpcError):
                return item
            if item is None:
                raise AssertionError("stream ended without an error")

    def collect_events(
        self, count: int, timeout: float = 10.0, rerequest: bool = True
    ) -> tuple[list[pb2.ConsumerEvent], list[pb2.FetchResponse]]:
        """Receive ``count`` events, re-requesting 100 whenever the outstanding count hits 0."""
        events: list[pb2.ConsumerEvent] = []
        responses: list[pb2.FetchResponse] = []
        while len(events) < count:
            resp = self.next_response(timeout)
            responses.append(resp)
            events.extend(resp.events)
            if rerequest and resp.events and resp.pending_num_requested == 0:
                self.request(100)
        return events, responses

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()
        self._reader.join(timeout=5)

"""Benchmark: CDC events per second the emulator's Pub/Sub server delivers to one subscriber.

The subscriber behaves like the Salesforce samples: a real grpcio channel on 127.0.0.1,
``num_requested=100`` (the server's cap) re-requested whenever the outstanding count
reaches 0, and every payload decoded with fastavro using the schema from ``GetSchema``.
Only delivery is timed (first FetchRequest to last decoded event); the events are
committed to a fresh OrgStore beforehand.

Run standalone: ``python -m bench.emulator_pubsub [events]``.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import grpc

from resources.salesforce.pubsub_api import pubsub_api_pb2 as pb2
from resources.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb2_grpc
from sfdc_emulator.faults import Faults
from sfdc_emulator.pubsub.server import PubSubServer
from sfdc_emulator.store import Mutation, OrgStore

log = logging.getLogger(__name__)

_TOKEN = "bench-token"
_TENANT = "00D5g0000000001AAA"
_METADATA = (("accesstoken", _TOKEN), ("instanceurl", "https://bench.local"), ("tenantid", _TENANT))
_BATCH = 100
# Commit in transactions far below the 100,000-change overflow limit.
_COMMIT_CHUNK = 20_000


def _populate(store: OrgStore, events: int) -> None:
    """``events`` CDC events: Account creates (a wide object: realistic payload sizes)."""
    industry = store.schema.get("Account").field("Industry").picklist_values[0]
    done = 0
    while done < events:
        n = min(_COMMIT_CHUNK, events - done)
        store.commit(
            [
                Mutation(
                    "create",
                    "Account",
                    values={
                        "Name": f"Bench {done + i}",
                        "Industry": industry,
                        "AnnualRevenue": 1000.0 + i,
                        "BillingCity": "Paris",
                        "Description": "benchmark account",
                    },
                )
                for i in range(n)
            ]
        )
        done += n


def _subscribe_all(stub: pb2_grpc.PubSubStub, events: int) -> dict[str, Any]:
    requests: queue.Queue[pb2.FetchRequest | None] = queue.Queue()

    def request_iter() -> Iterator[pb2.FetchRequest]:
        while (req := requests.get()) is not None:
            yield req

    parsed: dict[str, Any] = {}
    received = 0
    responses = 0
    last_replay = b""
    started = time.perf_counter()
    requests.put(
        pb2.FetchRequest(
            topic_name="/data/ChangeEvents", replay_preset=pb2.EARLIEST, num_requested=_BATCH
        )
    )
    call = stub.Subscribe(request_iter(), metadata=_METADATA)
    try:
        for resp in call:
            responses += 1
            for ev in resp.events:
                schema = parsed.get(ev.event.schema_id)
                if schema is None:
                    info = stub.GetSchema(
                        pb2.SchemaRequest(schema_id=ev.event.schema_id), metadata=_METADATA
                    )
                    schema = parsed[ev.event.schema_id] = fastavro.parse_schema(
                        json.loads(info.schema_json)
                    )
                record = fastavro.schemaless_reader(io.BytesIO(ev.event.payload), schema, None)
                # fastavro types any datum; a change event is a record (a dict).
                if not isinstance(record, dict) or not record["ChangeEventHeader"]["recordIds"]:
                    raise AssertionError("decoded an event without record ids")
                last_replay = ev.replay_id
            received += len(resp.events)
            if received >= events:
                break
            if resp.pending_num_requested == 0:
                requests.put(pb2.FetchRequest(num_requested=_BATCH))
    finally:
        requests.put(None)
        call.cancel()
    elapsed = time.perf_counter() - started
    return {
        "received": received,
        "responses": responses,
        "seconds": elapsed,
        "last_replay_id": int.from_bytes(last_replay, "big") if last_replay else 0,
    }


def measure_cdc_delivery(events: int) -> dict[str, Any]:
    """Deliver ``events`` CDC events to one subscriber; return the rate and its inputs.

    Keys: ``events``, ``seconds`` (delivery only), ``events_per_s``, ``responses``
    (FetchResponses received), ``populate_seconds`` (committing the events, not timed
    into the rate).
    """
    if events <= 0:
        raise ValueError("events must be positive")
    with tempfile.TemporaryDirectory(prefix="bench-pubsub-") as tmp:
        store = OrgStore(Path(tmp) / "org", faults=Faults())
        try:
            t0 = time.perf_counter()
            _populate(store, events)
            populate_s = time.perf_counter() - t0
            server = PubSubServer(store, store.faults, _TENANT, {_TOKEN}, {}).start()
            channel = grpc.insecure_channel(server.target)
            try:
                result = _subscribe_all(pb2_grpc.PubSubStub(channel), events)
            finally:
                channel.close()
                server.stop(grace=0)
        finally:
            store.close()
    if result["received"] != events:
        raise AssertionError(f"delivered {result['received']} of {events} events")
    return {
        "events": events,
        "seconds": round(result["seconds"], 3),
        "events_per_s": round(events / result["seconds"], 1),
        "responses": result["responses"],
        "populate_seconds": round(populate_s, 3),
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    sys.stdout.write(json.dumps(measure_cdc_delivery(count)) + "\n")

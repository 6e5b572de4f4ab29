"""EmulatorServer: one local org — store, HTTPS (REST/Bulk/OAuth), Pub/Sub gRPC, traffic.

Starting it opens (or creates and seeds) the org in ``state_dir``, serves both wire
protocols on loopback, optionally runs live traffic, and writes the JSON handshake that
clients and ``SFDC_EMULATOR_INFO`` read.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sfdc_emulator.clock import Clock
from sfdc_emulator.faults import DEFAULT_DELIVERY_LIMIT, Faults
from sfdc_emulator.generator import generate
from sfdc_emulator.http_server import HttpServer
from sfdc_emulator.pubsub.server import DEFAULT_IDLE_TIMEOUT_S, DEFAULT_KEEPALIVE_S, PubSubServer
from sfdc_emulator.store import OrgStore
from sfdc_emulator.traffic import DEFAULT_OBJECTS, Mix, TrafficGenerator

log = logging.getLogger(__name__)

# Custom channels as a production org would configure them (DESIGN §5): revenue objects
# drained often, activities less often. `/data/ChangeEvents` and `/data/<Obj>ChangeEvent`
# always exist besides these.
DEFAULT_CHANNELS: dict[str, tuple[str, ...]] = {
    "/data/RevenueChannel__chn": ("Account", "Opportunity", "OpportunityLineItem"),
    "/data/PeopleChannel__chn": ("Contact", "Lead", "User"),
    "/data/ActivityChannel__chn": ("Task", "Event"),
}


class EmulatorServer:
    """A running local org. Use as a context manager or call ``start()``/``stop()``.

    Args:
        state_dir: the org's files (DuckDB store, TLS material, keys, Bulk results).
        scale: seed data size when the org is new (tiny | small | medium | an int).
        seed: generator and traffic seed (deterministic data for a seed).
        traffic: live changes per second (0 = none).
        host: loopback interface to bind.
        http_port / pubsub_port: fixed ports, 0 = pick free ones.
        hostnames: extra names in the server certificate (e.g. login.salesforce.com).
        pubsub_tls: serve gRPC over TLS with the same certificate (as Salesforce does).
        keepalive_s / idle_timeout_s: Pub/Sub timing (Salesforce: 270 s / 60 s).
        delivery_limit: CDC events delivered per rolling 24 h (DailyDeliveredPlatformEvents);
            past it Subscribe fails with ``subscription.limit.exceeded``.
        counts: seed rows of single objects, overriding the scale's (a new org only).
        traffic_objects: the traffic's object weights (default: `traffic.DEFAULT_OBJECTS`).
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        scale: str | int = "tiny",
        seed: int = 7,
        traffic: float = 0.0,
        host: str = "127.0.0.1",
        http_port: int = 0,
        pubsub_port: int = 0,
        hostnames: Sequence[str] = (),
        pubsub_tls: bool = False,
        channels: Mapping[str, Sequence[str]] | None = None,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        api_version: str = "59.0",
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        counts: Mapping[str, int] | None = None,
        traffic_objects: Mapping[str, float] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.scale = scale
        self.seed = seed
        self.traffic_rate = traffic
        self.host = host
        self.http_port = http_port
        self.pubsub_port = pubsub_port
        self.hostnames = tuple(hostnames)
        self.pubsub_tls = pubsub_tls
        self.channels = {k: tuple(v) for k, v in (channels or DEFAULT_CHANNELS).items()}
        self.keepalive_s = keepalive_s
        self.idle_timeout_s = idle_timeout_s
        self.api_version = api_version
        self.delivery_limit = delivery_limit
        self.counts = dict(counts or {})
        self.traffic_objects = dict(traffic_objects or {})
        unknown = sorted(set(self.traffic_objects) - set(DEFAULT_OBJECTS))
        if unknown or any(w < 0 for w in self.traffic_objects.values()):
            raise ValueError(
                f"traffic object weights must be >= 0 for objects the traffic changes "
                f"({', '.join(sorted(DEFAULT_OBJECTS))}); got {self.traffic_objects}"
            )
        self.store: OrgStore | None = None
        self.http: HttpServer | None = None
        self.pubsub: PubSubServer | None = None
        self.traffic: TrafficGenerator | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> EmulatorServer:
        """Open or seed the org, start both servers and the traffic; returns self."""
        faults = Faults(seed=self.seed)
        store = OrgStore(self.state_dir, clock=Clock(), faults=faults)
        self.store = store
        if store.count("Account", include_deleted=True) == 0:
            counts = generate(store, self.scale, self.seed, counts=self.counts)
            log.info("seeded a new org: %s", counts)
        mix = Mix(objects=self.traffic_objects) if self.traffic_objects else None
        self.traffic = TrafficGenerator(store, self.traffic_rate, seed=self.seed, mix=mix)
        self.http = HttpServer(
            store,
            faults,
            host=self.host,
            port=self.http_port,
            hostnames=self.hostnames,
            api_version=self.api_version,
            traffic=self.traffic,
        ).start()
        oauth = self.http.oauth
        tls = self.http.tls
        self.pubsub = PubSubServer(
            store,
            faults,
            tenant_id=store.org_id,
            access_tokens=lambda token: oauth.registry.lookup(token) is not None,
            channels=self.channels,
            host=self.host,
            port=self.pubsub_port,
            tls=self.pubsub_tls,
            cert_pem=tls.cert_chain_pem() if self.pubsub_tls else None,
            key_pem=tls.private_key_pem() if self.pubsub_tls else None,
            keepalive_s=self.keepalive_s,
            idle_timeout_s=self.idle_timeout_s,
            delivery_limit=self.delivery_limit,
        ).start()
        # /limits reports the allocation and its use; admin `fail limit deliveries` sets it.
        self.http.ctx.extra["pubsub"] = self.pubsub
        if self.traffic_rate > 0:
            self.traffic.start()
        self.info = {
            **self.http.handshake(),
            "pubsub_target": self.pubsub.target,
            "pubsub_tls": self.pubsub_tls,
            "tenant_id": store.org_id,
            "channels": {name: list(objs) for name, objs in self.channels.items()},
            "pid": os.getpid(),
        }
        return self

    def write_info(self, path: Path | str) -> Path:
        """Write the handshake atomically (readers never see half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".emulator-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.info, fh, indent=2)
        os.chmod(tmp, 0o600)  # it holds an access token
        os.replace(tmp, path)
        return path

    def stop(self) -> None:
        """Stop traffic, both servers, and close the store (in that order)."""
        if self.traffic is not None:
            self.traffic.stop()
        if self.pubsub is not None:
            self.pubsub.stop()
        if self.http is not None:
            self.http.stop()
        if self.store is not None:
            self.store.close()
        self.traffic = self.pubsub = self.http = self.store = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

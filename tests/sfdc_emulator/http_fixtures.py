"""Fixtures for the emulator's HTTPS side: a real store with generated data behind a real
``HttpServer`` on 127.0.0.1, driven only through real clients (simple-salesforce, requests,
pyjwt) over TLS.

Import the fixtures into a test module (``from tests.sfdc_emulator.http_fixtures import
emulator, clean_faults``); each module gets its own org (module scope).

``requests`` lets ``REQUESTS_CA_BUNDLE`` from the environment override ``session.verify``,
so the sessions here set ``trust_env = False`` to really trust the emulator's CA.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce

from sfdc_emulator.admin import admin_call
from sfdc_emulator.clock import Clock
from sfdc_emulator.faults import Faults
from sfdc_emulator.generator import generate
from sfdc_emulator.http_server import HttpServer
from sfdc_emulator.store import OrgStore

API_VERSION = "59.0"
# 2,600 Tasks: more than one 2,000-record REST page; the other objects scale from it.
SCALE_TASKS = 2600
SEED = 7


@dataclass
class Emulator:
    server: HttpServer
    store: OrgStore
    faults: Faults
    info: dict[str, Any]

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.server.ca_bundle)
        return session

    def sf(self, token: str | None = None, version: str = API_VERSION) -> Salesforce:
        return Salesforce(
            instance_url=self.server.url,
            session_id=token or self.server.access_token,
            version=version,
            session=self.session(),
        )

    def admin(self, command: str, **args: Any) -> Any:
        return admin_call(self.info, command, **args)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    state_dir = tmp_path_factory.mktemp("http-emulator")
    faults = Faults()
    store = OrgStore(state_dir, Clock(), faults)
    generate(store, SCALE_TASKS, seed=SEED)
    server = HttpServer(store, faults, state_dir=state_dir, hostnames=["login.salesforce.com"])
    server.start()
    try:
        yield Emulator(server, store, faults, server.handshake())
    finally:
        server.stop()
        store.close()


@pytest.fixture
def clean_faults(emulator: Emulator) -> Iterator[Emulator]:
    """Disarm every fault after the test (the org is shared by the module)."""
    try:
        yield emulator
    finally:
        emulator.faults.reset()

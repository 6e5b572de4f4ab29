"""An in-process emulator for the extraction tests: real HTTPS (uvicorn) and real gRPC/TLS.

The lead's ``EmulatorServer`` (tiny scale) is started on loopback and described to our
code through its JSON handshake and ``SFDC_EMULATOR_INFO``, exactly as a local run is;
nothing Salesforce-side is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resources.salesforce.resource import SalesforceClient
from resources.salesforce.settings import SalesforceSettings

CHANNELS = {
    "/data/RevenueChannel__chn": ["Account", "Opportunity", "OpportunityLineItem"],
    "/data/ActivityChannel__chn": ["Task", "Event"],
}
OBJECTS = (
    "Account",
    "Contact",
    "Lead",
    "Opportunity",
    "OpportunityLineItem",
    "User",
    "Task",
    "Event",
)


@dataclass
class Emulator:
    """A running emulator and the handshake our settings are built from."""

    server: Any
    store: Any
    http: Any
    pubsub: Any
    info_path: Path

    @property
    def faults(self) -> Any:
        return self.store.faults

    def settings(self, **overrides: Any) -> SalesforceSettings:
        s = SalesforceSettings.from_env(
            {"SFDC_ENV": "local", "SFDC_EMULATOR_INFO": str(self.info_path)}
        )
        return s.model_copy(update=overrides) if overrides else s

    def client(self, **overrides: Any) -> SalesforceClient:
        return SalesforceClient(self.settings(**overrides))

    def admin(self, command: str, **args: Any) -> Any:
        """An admin command over HTTPS (``sfdc_emulator.admin``), as the CLI sends it."""
        from sfdc_emulator.admin import admin_call

        return admin_call(self.server.info, command, **args)

    def soql_served(self) -> list[str]:
        """The SOQL the org served since the last call (query, queryAll, Bulk jobs)."""
        return [q["soql"] for q in self.admin("query-log", clear=True)["queries"]]


def start_emulator(state_dir: Path, scale: str | int = "tiny", **options: Any) -> Emulator:
    """Start the emulator (HTTPS + gRPC over TLS) on free loopback ports; ``options`` go to
    ``EmulatorServer`` (e.g. ``delivery_limit``)."""
    from sfdc_emulator.server import EmulatorServer

    server = EmulatorServer(
        state_dir / "org", scale=scale, seed=1, pubsub_tls=True, channels=CHANNELS, **options
    ).start()
    info_path = server.write_info(state_dir / "emulator.json")
    return Emulator(server, server.store, server.http, server.pubsub, info_path)


def stop_emulator(emu: Emulator) -> None:
    """Stop servers and close the store."""
    emu.server.stop()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A tiny-scale org, private to one test module."""
    emu = start_emulator(tmp_path_factory.mktemp("emulator"))
    yield emu
    stop_emulator(emu)


@pytest.fixture
def client(emulator: Emulator) -> Iterator[SalesforceClient]:
    """A fresh client (own token cache and budget) on the module's emulator."""
    emulator.faults.reset()
    c = emulator.client()
    yield c
    c.close()
    emulator.faults.reset()

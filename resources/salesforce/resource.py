"""The Dagster resource: one :class:`SalesforceClient` per run from ``SFDC_*`` settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import dagster as dg

from resources.landing import LandingStore
from resources.salesforce.auth import TokenProvider
from resources.salesforce.budget import ApiBudget
from resources.salesforce.bulk import BulkOptions, BulkReader
from resources.salesforce.pubsub import PubSubSubscriber
from resources.salesforce.rest import SalesforceConnection, SalesforceRest
from resources.salesforce.settings import SalesforceSettings


@dataclass
class SalesforceClient:
    """Everything that talks to one org, sharing one token, session and budget."""

    settings: SalesforceSettings
    pii_fields: dict[str, list[str]] | None = None

    @cached_property
    def tokens(self) -> TokenProvider:
        """The shared token provider."""
        return TokenProvider(self.settings)

    @cached_property
    def governor(self) -> ApiBudget:
        """The shared API budget governor."""
        return ApiBudget(
            total_pct=self.settings.api_budget_pct, run_pct=self.settings.api_budget_run_pct
        )

    @cached_property
    def conn(self) -> SalesforceConnection:
        """HTTP plumbing for REST and Bulk."""
        return SalesforceConnection(self.settings, tokens=self.tokens, governor=self.governor)

    @cached_property
    def rest(self) -> SalesforceRest:
        """REST calls."""
        return SalesforceRest(self.conn, self.pii_fields)

    def bulk(self, landing: LandingStore, options: BulkOptions | None = None) -> BulkReader:
        """A Bulk backfill reader landing into ``landing``."""
        return BulkReader(self.conn, landing, rest=self.rest, options=options)

    @cached_property
    def pubsub(self) -> PubSubSubscriber:
        """The CDC subscriber."""
        return PubSubSubscriber(self.settings, self.tokens, self.governor)

    def close(self) -> None:
        """Release the gRPC channel and HTTP connections."""
        if "pubsub" in self.__dict__:
            self.pubsub.close()
        if "conn" in self.__dict__:
            self.conn.session.close()


class SalesforceResource(dg.ConfigurableResource):
    """Salesforce connection settings; empty values fall back to ``SFDC_*`` variables.

    Locally (``env="local"``) the emulator handshake named by ``emulator_info`` supplies
    every connection value. Secrets (keys, client secret) stay in files and environment
    variables; bind them with ``dg.EnvVar`` when set here.
    """

    env: str = "local"
    emulator_info: str = ""
    instance_url: str = ""
    token_url: str = ""
    client_id: str = ""
    username: str = ""
    private_key_path: str = ""
    ca_bundle: str = ""
    api_version: str = ""
    pubsub_target: str = ""
    pubsub_tls: str = ""
    tenant_id: str = ""
    api_budget_pct: str = ""

    def settings(self) -> SalesforceSettings:
        """Settings from this resource's values over the process environment."""
        import os

        env = dict(os.environ)
        overrides = {
            "SFDC_ENV": self.env,
            "SFDC_EMULATOR_INFO": self.emulator_info,
            "SFDC_INSTANCE_URL": self.instance_url,
            "SFDC_TOKEN_URL": self.token_url,
            "SFDC_CLIENT_ID": self.client_id,
            "SFDC_USERNAME": self.username,
            "SFDC_PRIVATE_KEY_PATH": self.private_key_path,
            "SFDC_CA_BUNDLE": self.ca_bundle,
            "SFDC_API_VERSION": self.api_version,
            "SFDC_PUBSUB_TARGET": self.pubsub_target,
            "SFDC_PUBSUB_TLS": self.pubsub_tls,
            "SFDC_TENANT_ID": self.tenant_id,
            "SFDC_API_BUDGET_PCT": self.api_budget_pct,
        }
        env.update({k: v for k, v in overrides.items() if v})
        return SalesforceSettings.from_env(env)

    def client(self, pii_fields: dict[str, list[str]] | None = None) -> SalesforceClient:
        """A client for this run (one token, one budget)."""
        return SalesforceClient(self.settings(), pii_fields)

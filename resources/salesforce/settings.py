"""Connection and budget settings for Salesforce, from environment variables.

Production reads each ``SFDC_*`` variable. Locally (``SFDC_ENV=local``) the emulator's JSON
handshake named by ``SFDC_EMULATOR_INFO`` supplies every connection value, so a copied
``.env.example`` with production URLs can never point a local run at a real org.
Secrets are never part of ``repr`` output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from resources.environment import Environment, sfdc_env

AuthFlow = Literal["jwt", "client_credentials", "static"]

# Handshake key -> settings field. The handshake's access_token is only a fallback for
# the "static" flow; the JWT bearer flow against the emulator's token endpoint is the
# default so local runs exercise the production path.
_HANDSHAKE_KEYS = {
    "instance_url": "instance_url",
    "token_url": "token_url",
    "client_id": "client_id",
    "username": "username",
    "private_key_path": "private_key_path",
    "ca_bundle": "ca_bundle",
    "api_version": "api_version",
    "pubsub_target": "pubsub_target",
    "pubsub_tls": "pubsub_tls",
    "tenant_id": "tenant_id",
    "access_token": "access_token",
    "admin_url": "admin_url",
}


class SalesforceSettings(BaseModel):
    """Everything needed to reach one org: REST/Bulk, OAuth, Pub/Sub and the API budget."""

    model_config = {"frozen": True}

    env: Literal["local", "prod"] = "local"
    instance_url: str
    token_url: str = ""
    client_id: str = ""
    username: str = ""
    private_key_path: str = ""
    client_secret: SecretStr | None = None
    access_token: SecretStr | None = None
    auth_flow: AuthFlow = "jwt"
    # JWT "aud": login.salesforce.com / test.salesforce.com / a community URL. Empty means
    # "the origin of token_url", right for login/test hosts and for the emulator.
    jwt_audience: str = ""
    ca_bundle: str | None = None
    api_version: str = "66.0"
    pubsub_target: str = "api.pubsub.salesforce.com:7443"
    pubsub_tls: bool = True
    tenant_id: str = ""
    # Share (percent) of each daily org limit this platform may use, in total and per run.
    api_budget_pct: float = Field(default=25.0, gt=0, le=100)
    api_budget_run_pct: float = Field(default=10.0, gt=0, le=100)
    admin_url: str | None = None

    @field_validator("api_version")
    @classmethod
    def _version_is_numeric(cls, value: str) -> str:
        value = value.lstrip("v")
        major, _, minor = value.partition(".")
        if not major.isdigit() or (minor and not minor.isdigit()):
            raise ValueError(f"SFDC_API_VERSION must look like 66.0, got {value!r}")
        return value if minor else f"{value}.0"

    @field_validator("instance_url")
    @classmethod
    def _instance_is_https(cls, value: str) -> str:
        # simple-salesforce discards the scheme and always speaks HTTPS.
        if urlsplit(value).scheme != "https":
            raise ValueError("SFDC_INSTANCE_URL must be an https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _prod_pubsub_uses_tls(self) -> SalesforceSettings:
        # Plaintext gRPC is for the emulator on loopback only: in production it would send
        # the access token and every change event (PII included) in clear.
        if self.env == "prod" and not self.pubsub_tls:
            raise ValueError(
                "SFDC_PUBSUB_TLS=false is refused with SFDC_ENV=prod: the Pub/Sub API "
                "(api.pubsub.salesforce.com:7443) only speaks TLS, and plaintext would send "
                "the access token and change events in clear. Unset SFDC_PUBSUB_TLS (or set "
                "it to true); plaintext is for the local emulator only."
            )
        return self

    @property
    def audience(self) -> str:
        """The JWT audience to sign for."""
        if self.jwt_audience:
            return self.jwt_audience
        parts = urlsplit(self.token_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def verify(self) -> str | bool:
        """What ``requests`` should verify TLS against: the custom CA bundle or the default."""
        return self.ca_bundle or True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SalesforceSettings:
        """Build settings from ``SFDC_*`` variables (and the emulator handshake locally)."""
        env = dict(os.environ if environ is None else environ)
        mode = sfdc_env(env)
        values: dict[str, Any] = {"env": mode.value}

        def take(var: str, key: str) -> None:
            raw = env.get(var)
            if raw not in (None, ""):
                values[key] = raw

        for var, key in (
            ("SFDC_INSTANCE_URL", "instance_url"),
            ("SFDC_TOKEN_URL", "token_url"),
            ("SFDC_CLIENT_ID", "client_id"),
            ("SFDC_USERNAME", "username"),
            ("SFDC_PRIVATE_KEY_PATH", "private_key_path"),
            ("SFDC_CLIENT_SECRET", "client_secret"),
            ("SFDC_ACCESS_TOKEN", "access_token"),
            ("SFDC_AUTH_FLOW", "auth_flow"),
            ("SFDC_JWT_AUDIENCE", "jwt_audience"),
            ("SFDC_CA_BUNDLE", "ca_bundle"),
            ("SFDC_API_VERSION", "api_version"),
            ("SFDC_PUBSUB_TARGET", "pubsub_target"),
            ("SFDC_PUBSUB_TLS", "pubsub_tls"),
            ("SFDC_TENANT_ID", "tenant_id"),
            ("SFDC_API_BUDGET_PCT", "api_budget_pct"),
            ("SFDC_API_BUDGET_RUN_PCT", "api_budget_run_pct"),
        ):
            take(var, key)

        info = env.get("SFDC_EMULATOR_INFO")
        if mode is Environment.LOCAL and info:
            values.update(handshake_values(Path(info)))
        return cls(**values)


def handshake_values(path: Path) -> dict[str, Any]:
    """The settings the emulator's handshake file supplies (connection values only)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"SFDC_EMULATOR_INFO points at {path}, which does not exist: start the emulator "
            "(make demo) or unset SFDC_EMULATOR_INFO"
        ) from exc
    values = {field: data[key] for key, field in _HANDSHAKE_KEYS.items() if key in data}
    if not values.get("private_key_path") and values.get("access_token"):
        values["auth_flow"] = "static"
    return values

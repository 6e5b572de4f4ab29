"""OAuth tokens for the integration user: JWT bearer (production), client credentials, static.

simple-salesforce's login flows are hard-wired to ``*.salesforce.com``, so tokens are
obtained here and handed to it as ``session_id``. The token is cached and shared by every
client in the process; a call that fails with ``INVALID_SESSION_ID`` asks for a refresh,
and concurrent refreshes of the same stale token collapse into one token request.
Tokens and keys are never logged or included in error messages.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from resources.salesforce.errors import AuthError
from resources.salesforce.settings import SalesforceSettings

log = logging.getLogger(__name__)

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Salesforce rejects assertions whose exp is more than 3 minutes ahead.
JWT_LIFETIME_S = 170
TOKEN_TIMEOUT_S = 30


class PinnedCaSession(requests.Session):
    """A ``requests`` session whose configured CA bundle wins over the environment.

    ``requests`` lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace ``session.verify``
    for every request that does not pass ``verify=`` itself (simple-salesforce never does),
    so an inherited variable would silently override ``SFDC_CA_BUNDLE``.
    """

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if isinstance(self.verify, str) and verify in (None, True):
            merged["verify"] = self.verify
        return merged


def make_session(settings: SalesforceSettings) -> requests.Session:
    """An HTTP session that trusts the configured CA bundle (or the default store)."""
    session = PinnedCaSession()
    session.verify = settings.verify
    return session


@dataclass(frozen=True)
class Token:
    """An access token and the instance it is valid for."""

    access_token: str = field(repr=False)
    instance_url: str
    obtained_at: float


class TokenProvider:
    """Obtains, caches and refreshes the access token for one org (thread-safe)."""

    def __init__(
        self, settings: SalesforceSettings, session: requests.Session | None = None
    ) -> None:
        self.settings = settings
        self._session = session or make_session(settings)
        self._lock = threading.Lock()
        self._token: Token | None = None
        self.requests_made = 0

    def token(self) -> Token:
        """The cached token, obtaining one on first use."""
        with self._lock:
            if self._token is None:
                self._token = self._obtain()
            return self._token

    def refresh(self, stale: Token | None = None) -> Token:
        """A fresh token; if another caller already replaced ``stale``, that one is reused."""
        with self._lock:
            if self._token is not None and stale is not None and self._token is not stale:
                return self._token
            self._token = self._obtain()
            return self._token

    def _obtain(self) -> Token:
        flow = self.settings.auth_flow
        if flow == "static":
            if self.settings.access_token is None:
                raise AuthError("auth flow 'static' needs SFDC_ACCESS_TOKEN (or the handshake)")
            return Token(
                self.settings.access_token.get_secret_value(),
                self.settings.instance_url,
                time.time(),
            )
        if not self.settings.token_url:
            raise AuthError(f"auth flow {flow!r} needs SFDC_TOKEN_URL")
        if flow == "jwt":
            data = {"grant_type": JWT_GRANT, "assertion": self.jwt_assertion()}
            auth = None
        else:
            if self.settings.client_secret is None:
                raise AuthError("auth flow 'client_credentials' needs SFDC_CLIENT_SECRET")
            data = {"grant_type": "client_credentials"}
            auth = (self.settings.client_id, self.settings.client_secret.get_secret_value())
        self.requests_made += 1
        try:
            resp = self._session.post(
                self.settings.token_url, data=data, auth=auth, timeout=TOKEN_TIMEOUT_S
            )
        except requests.RequestException as exc:
            raise AuthError(
                f"token endpoint {self.settings.token_url} unreachable ({type(exc).__name__})"
            ) from exc
        if resp.status_code != 200:
            raise AuthError(_describe_oauth_error(flow, resp))
        body = resp.json()
        log.info("obtained Salesforce access token via %s flow", flow)
        return Token(
            body["access_token"],
            str(body.get("instance_url") or self.settings.instance_url).rstrip("/"),
            time.time(),
        )

    def jwt_assertion(self, now: float | None = None) -> str:
        """The RS256-signed JWT bearer assertion for the integration user."""
        import jwt  # pyjwt[crypto]; imported here to keep module import light

        s = self.settings
        if not (s.client_id and s.username and s.private_key_path):
            raise AuthError(
                "JWT bearer flow needs SFDC_CLIENT_ID, SFDC_USERNAME and SFDC_PRIVATE_KEY_PATH"
            )
        try:
            key = Path(s.private_key_path).read_bytes()
        except OSError as exc:
            raise AuthError(f"cannot read the JWT private key at {s.private_key_path}") from exc
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": s.client_id,
            "sub": s.username,
            "aud": s.audience,
            "exp": issued + JWT_LIFETIME_S,
        }
        return jwt.encode(claims, key, algorithm="RS256")


def _describe_oauth_error(flow: str, resp: requests.Response) -> str:
    try:
        body = resp.json()
        detail = f"{body.get('error')}: {body.get('error_description')}"
    except ValueError:
        detail = f"HTTP {resp.status_code}"
    return (
        f"Salesforce refused the {flow} token request ({detail}). Check the connected app, "
        "the integration user's pre-authorization and the certificate (docs/extraction.md)."
    )

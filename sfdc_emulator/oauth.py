"""OAuth 2.0 token endpoint, SOAP login and the session-token registry of the emulator.

Grants served by ``POST /services/oauth2/token`` (form-encoded, as Salesforce):

- JWT bearer (``urn:ietf:params:oauth:grant-type:jwt-bearer``): an RS256 assertion signed
  with the integration key; verified against the connected app's certificate. ``iss`` =
  consumer key, ``sub`` = username, ``aud`` = login/test.salesforce.com or the instance
  URL, ``exp`` not past and at most 3 minutes ahead.
- client credentials (HTTP Basic ``key:secret`` or ``client_id``/``client_secret`` in the
  body), refresh token, username-password.

Errors are 400 ``{"error": ..., "error_description": ...}`` (simple-salesforce reads both).
``POST /services/Soap/u/XX.X`` answers the partner ``login`` call that
``simple_salesforce.SalesforceLogin`` sends, with a ``loginResponse`` or an
``INVALID_LOGIN`` SOAP fault.

The integration key pair and its self-signed certificate are generated once per state dir
(like a connected app's uploaded certificate); the private key path goes into the
handshake. Tokens and secrets are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs
from xml.sax.saxutils import escape as xml_escape

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Salesforce rejects assertions whose exp is more than 3 minutes ahead; a few seconds of
# slack absorb the client computing exp a moment before the server checks it.
MAX_ASSERTION_LIFETIME_S = 180
CLOCK_SKEW_S = 5
LOGIN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
INVALID_LOGIN_MESSAGE = "Invalid username, password, security token; or user locked out."


@dataclass(frozen=True)
class OAuthSettings:
    """Who may log in, and how. ``password`` + ``security_token`` is what the password
    grant and SOAP login accept (the token may be omitted, as from a trusted IP range)."""

    client_id: str
    client_secret: str
    username: str
    org_id: str
    user_id: str
    password: str = "emulator-password"
    security_token: str = ""
    # None = tokens live until an expire-sessions fault; Salesforce's default session
    # timeout is 2 h of inactivity, which long demos would otherwise trip over.
    token_ttl_seconds: float | None = None
    certificate_path: Path | None = None


@dataclass(frozen=True)
class Session:
    """One issued access token (the token itself is the registry key, never stored here)."""

    username: str
    user_id: str
    issued_at_ms: int
    expires_at: float | None  # time.monotonic() deadline, None = no TTL
    grant: str
    epoch: int = 0  # Faults.session_epoch at issue time; an expire-sessions fault bumps it


class TokenRegistry:
    """Thread-safe map access token -> :class:`Session`; refresh tokens alongside."""

    def __init__(
        self,
        org_id: str,
        ttl_seconds: float | None = None,
        epoch: Callable[[], int] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._epoch = epoch or (lambda: 0)
        self._org15 = org_id[:15]
        self._ttl = ttl_seconds
        self._sessions: dict[str, Session] = {}
        self._refresh: dict[str, tuple[str, str]] = {}

    def issue(self, username: str, user_id: str, grant: str) -> tuple[str, Session]:
        """Mint a new access token (Salesforce-shaped: ``<org15>!<opaque>``)."""
        token = f"{self._org15}!{secrets.token_urlsafe(72)}"
        deadline = time.monotonic() + self._ttl if self._ttl else None
        session = Session(
            username, user_id, time.time_ns() // 1_000_000, deadline, grant, self._epoch()
        )
        with self._lock:
            self._sessions[token] = session
        return token, session

    def issue_refresh_token(self, username: str, user_id: str) -> str:
        token = f"5Aep{secrets.token_urlsafe(64)}"
        with self._lock:
            self._refresh[token] = (username, user_id)
        return token

    def redeem_refresh_token(self, token: str) -> tuple[str, str] | None:
        with self._lock:
            return self._refresh.get(token)

    def lookup(self, token: str) -> Session | None:
        """The live session of ``token``, or None if unknown, expired or revoked."""
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            expired = session.expires_at is not None and time.monotonic() >= session.expires_at
            if expired or session.epoch < self._epoch():
                del self._sessions[token]
                return None
            return session

    def expire_all(self) -> int:
        """Revoke every access token (refresh tokens survive, as in Salesforce)."""
        with self._lock:
            count = len(self._sessions)
            self._sessions.clear()
            return count

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


@dataclass(frozen=True)
class IntegrationKeys:
    """The integration user's RSA key pair and the certificate the connected app trusts."""

    private_key_path: Path | None
    certificate_path: Path
    public_key: rsa.RSAPublicKey = field(repr=False)

    @classmethod
    def ensure(
        cls, state_dir: Path, common_name: str = "sfdc-emulator-integration"
    ) -> IntegrationKeys:
        """Load the key pair from ``<state_dir>/integration`` or create it (RSA 2048)."""
        key_dir = Path(state_dir) / "integration"
        key_dir.mkdir(parents=True, exist_ok=True)
        key_path = key_dir / "private_key.pem"
        cert_path = key_dir / "certificate.pem"
        if not (key_path.exists() and cert_path.exists()):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
            now = datetime.now(UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=3650))
                .sign(key, hashes.SHA256())
            )
            key_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            key_path.chmod(0o600)
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls.from_certificate(cert_path, private_key_path=key_path)

    @classmethod
    def from_certificate(
        cls, certificate_path: Path, private_key_path: Path | None = None
    ) -> IntegrationKeys:
        """Trust an existing certificate (PEM X.509, or a bare PEM public key)."""
        data = Path(certificate_path).read_bytes()
        public_key = (
            x509.load_pem_x509_certificate(data).public_key()
            if b"BEGIN CERTIFICATE" in data
            else serialization.load_pem_public_key(data)
        )
        # Assertions are RS256 only (the token endpoint refuses other algorithms).
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ValueError(f"{certificate_path}: not an RSA public key")
        return cls(private_key_path, Path(certificate_path), public_key)


class OAuthError(Exception):
    """A token-endpoint failure, rendered as Salesforce's 400 JSON."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class OAuthService:
    """Token endpoint + SOAP login. ``instance_url`` is set by the HTTP server once the
    port is bound; ``extra_audiences`` lets a ``--hostname`` (e.g. a My Domain name) be a
    valid JWT audience too."""

    def __init__(
        self,
        settings: OAuthSettings,
        keys: IntegrationKeys,
        registry: TokenRegistry | None = None,
        api_version: str = "59.0",
        extra_audiences: tuple[str, ...] = (),
        epoch: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.registry = registry or TokenRegistry(
            settings.org_id, settings.token_ttl_seconds, epoch
        )
        self.api_version = api_version
        self.instance_url = ""
        self.extra_audiences = extra_audiences

    def issue_token(self, grant: str = "handshake") -> str:
        """An access token for the integration user (what the handshake publishes)."""
        token, _ = self.registry.issue(self.settings.username, self.settings.user_id, grant)
        return token

    def _token_response(self, grant: str, username: str, user_id: str) -> dict[str, str]:
        token, session = self.registry.issue(username, user_id, grant)
        identity = f"https://login.salesforce.com/id/{self.settings.org_id}/{user_id}"
        issued_at = str(session.issued_at_ms)
        # Salesforce signs id + issued_at with the consumer secret (HMAC-SHA256, base64).
        digest = hmac.new(
            self.settings.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
        ).digest()
        return {
            "access_token": token,
            "scope": "api",
            "instance_url": self.instance_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": base64.b64encode(digest).decode(),
        }

    def audiences(self) -> list[str]:
        auds = [*LOGIN_AUDIENCES]
        if self.instance_url:
            auds.append(self.instance_url)
        auds.extend(f"https://{host}" for host in self.extra_audiences)
        auds.extend([a + "/" for a in auds])
        return auds

    def _jwt_bearer(self, form: dict[str, str]) -> dict[str, str]:
        assertion = form.get("assertion", "")
        if not assertion:
            raise OAuthError("invalid_request", "assertion parameter required")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc
        if header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", "invalid assertion")
        try:
            claims = jwt.decode(
                assertion,
                self.keys.public_key,
                algorithms=["RS256"],
                audience=self.audiences(),
                issuer=self.settings.client_id,
                leeway=CLOCK_SKEW_S,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.InvalidIssuerError as exc:
            raise OAuthError("invalid_client_id", "client identifier invalid") from exc
        except jwt.InvalidAudienceError as exc:
            raise OAuthError("invalid_grant", "audience is invalid") from exc
        except jwt.ExpiredSignatureError as exc:
            raise OAuthError("invalid_grant", "expired authorization code") from exc
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc
        if int(claims["exp"]) > time.time() + MAX_ASSERTION_LIFETIME_S + CLOCK_SKEW_S:
            raise OAuthError("invalid_grant", "invalid assertion: exp is more than 3 minutes ahead")
        if claims["sub"] != self.settings.username:
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        return self._token_response("jwt_bearer", self.settings.username, self.settings.user_id)

    def _client_credentials(self, form: dict[str, str], authorization: str) -> dict[str, str]:
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization.lower().startswith("basic "):
            try:
                raw = base64.b64decode(authorization[6:].strip()).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise OAuthError("invalid_client", "invalid client credentials") from exc
            client_id, _, client_secret = raw.partition(":")
        self._check_client(client_id, client_secret)
        return self._token_response(
            "client_credentials", self.settings.username, self.settings.user_id
        )

    def _check_client(self, client_id: str | None, client_secret: str | None) -> None:
        if client_id != self.settings.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if not hmac.compare_digest(client_secret or "", self.settings.client_secret):
            raise OAuthError("invalid_client", "invalid client credentials")

    def _password_ok(self, password: str) -> bool:
        expected = self.settings.password
        return hmac.compare_digest(password, expected) or hmac.compare_digest(
            password, expected + self.settings.security_token
        )

    def _password(self, form: dict[str, str]) -> dict[str, str]:
        self._check_client(form.get("client_id"), form.get("client_secret"))
        if form.get("username") != self.settings.username or not self._password_ok(
            form.get("password", "")
        ):
            raise OAuthError("invalid_grant", "authentication failure")
        body = self._token_response("password", self.settings.username, self.settings.user_id)
        return body

    def _refresh(self, form: dict[str, str]) -> dict[str, str]:
        if form.get("client_id") != self.settings.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if form.get("client_secret") is not None:
            self._check_client(form.get("client_id"), form.get("client_secret"))
        owner = self.registry.redeem_refresh_token(form.get("refresh_token", ""))
        if owner is None:
            raise OAuthError("invalid_grant", "expired access/refresh token")
        return self._token_response("refresh_token", *owner)

    def issue_refresh_token(self) -> str:
        """A refresh token for the integration user (for the refresh_token grant)."""
        return self.registry.issue_refresh_token(self.settings.username, self.settings.user_id)

    def exchange(self, form: dict[str, str], authorization: str = "") -> dict[str, str]:
        """Run one token request; raises :class:`OAuthError`."""
        grant = form.get("grant_type", "")
        if grant == JWT_BEARER_GRANT:
            return self._jwt_bearer(form)
        if grant == "client_credentials":
            return self._client_credentials(form, authorization)
        if grant == "password":
            return self._password(form)
        if grant == "refresh_token":
            return self._refresh(form)
        if not grant:
            raise OAuthError("invalid_request", "grant type not supported")
        raise OAuthError("unsupported_grant_type", "grant type not supported")

    async def token_endpoint(self, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", errors="replace")
        # parse_qs instead of request.form(): starlette's form parser needs python-multipart.
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        for key, value in request.query_params.items():
            form.setdefault(key, value)
        try:
            body = self.exchange(form, request.headers.get("authorization", ""))
        except OAuthError as exc:
            return JSONResponse(
                {"error": exc.error, "error_description": exc.description}, status_code=exc.status
            )
        return JSONResponse(body, headers={"Cache-Control": "no-cache,must-revalidate,no-store"})

    async def soap_login(self, request: Request) -> Response:
        version = request.path_params.get("version", self.api_version)
        try:
            root = ET.fromstring(await request.body())
        except ET.ParseError:
            return _soap_fault("INVALID_LOGIN", INVALID_LOGIN_MESSAGE)
        values = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
        username, password = values.get("username", ""), values.get("password", "")
        if username != self.settings.username or not self._password_ok(password):
            return _soap_fault("INVALID_LOGIN", INVALID_LOGIN_MESSAGE)
        token, _ = self.registry.issue(username, self.settings.user_id, "soap")
        return Response(
            _soap_login_response(
                token,
                self.instance_url,
                version,
                self.settings.org_id,
                self.settings.user_id,
                username,
            ),
            media_type="text/xml; charset=utf-8",
        )

    def routes(self) -> list[Route]:
        return [
            Route("/services/oauth2/token", self.token_endpoint, methods=["POST"]),
            Route("/services/oauth2/token/", self.token_endpoint, methods=["POST"]),
            Route("/services/Soap/u/{version}", self.soap_login, methods=["POST"]),
            Route("/services/Soap/u/{version}/", self.soap_login, methods=["POST"]),
        ]


def _soap_login_response(
    token: str, instance_url: str, version: str, org_id: str, user_id: str, username: str
) -> str:
    e = xml_escape
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns="urn:partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body><loginResponse><result>"
        f"<metadataServerUrl>{e(instance_url)}/services/Soap/m/{e(version)}/{org_id[:15]}"
        "</metadataServerUrl>"
        "<passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
        f"<serverUrl>{e(instance_url)}/services/Soap/u/{e(version)}/{org_id[:15]}</serverUrl>"
        f"<sessionId>{e(token)}</sessionId><userId>{user_id}</userId>"
        f"<userInfo><organizationId>{org_id}</organizationId>"
        f"<userId>{user_id}</userId><userName>{e(username)}</userName>"
        "<sessionSecondsValid>7200</sessionSecondsValid></userInfo>"
        "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
    )


def _soap_fault(code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body><soapenv:Fault>"
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {xml_escape(message)}</faultstring>"
        f'<detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}'
        f"</sf:exceptionCode><sf:exceptionMessage>{xml_escape(message)}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(body, status_code=500, media_type="text/xml; charset=utf-8")

"""The emulator's HTTPS server: a starlette app served by uvicorn over TLS in a thread.

Wiring: OAuth token endpoint + SOAP login (``oauth``), REST (``rest``), Bulk 2.0 query jobs
(``bulk``) and the admin endpoint (``admin``). Around every API route this module does what
Salesforce does before a handler runs:

- authentication: ``Authorization: Bearer <token>``; unknown, expired or revoked tokens
  get 401 ``[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]``;
- scripted faults (``Faults``): one-shot errors (e.g. 503 SERVER_UNAVAILABLE), slow
  responses, the daily request limit (403 REQUEST_LIMIT_EXCEEDED "TotalRequests Limit
  exceeded.") and the concurrent long-request limit ("ConcurrentPerOrgLongTxn Limit
  exceeded.");
- API usage: every authenticated REST/Bulk call counts against the daily limit (rolling
  24 h of emulator time); every response carries ``Sforce-Limit-Info: api-usage=N/MAX``.

Paths answer with and without a trailing slash. Unknown paths answer Salesforce's 404
JSON. Handlers run in worker threads (DuckDB calls block), so slow requests do not stall
the event loop. The access log is off: URLs carry SOQL, which may quote field values.

Usage (the CLI / EmulatorServer)::

    server = HttpServer(store, faults, state_dir=state_dir, hostnames=["login.salesforce.com"])
    server.start()
    info = server.handshake()      # instance_url, token_url, access_token, ca_bundle, ...
    ...
    server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sfdc_emulator.admin import AdminApi
from sfdc_emulator.bulk import BulkQueryJobs
from sfdc_emulator.oauth import IntegrationKeys, OAuthService, OAuthSettings, Session
from sfdc_emulator.rest import (
    DEFAULT_DAILY_API_LIMIT,
    ApiContext,
    ApiError,
    ApiRoute,
    ApiUsage,
    RestApi,
)
from sfdc_emulator.tls import TlsMaterial, ensure_tls

log = logging.getLogger(__name__)

# Salesforce counts a request towards the concurrent limit once it has run this long.
LONG_REQUEST_SECONDS = 20.0
FAULT_MESSAGES = {
    "SERVER_UNAVAILABLE": "Server temporarily unavailable. Please try again later.",
    "REQUEST_LIMIT_EXCEEDED": "TotalRequests Limit exceeded.",
    "INVALID_SESSION_ID": "Session expired or invalid",
    "UNKNOWN_EXCEPTION": "An unexpected error occurred. Please include this ErrorId if you "
    "contact support: 0000000000-00000 (0000000000)",
    "QUERY_TIMEOUT": "Your query request was running for too long.",
    "API_DISABLED_FOR_ORG": "API is not enabled for this Organization or Partner",
}
DAILY_LIMIT_MESSAGE = "TotalRequests Limit exceeded."
CONCURRENT_LIMIT_MESSAGE = "ConcurrentPerOrgLongTxn Limit exceeded."


def fault_error(status: int, code: str) -> JSONResponse:
    """The response of an armed REST fault. ``code`` may carry its own message as
    ``CODE:message`` (the admin uses it for the concurrent-limit flavour of 403)."""
    code, _, message = code.partition(":")
    message = message or FAULT_MESSAGES.get(code, code)
    return JSONResponse([{"message": message, "errorCode": code}], status)


class _LimitInfo:
    """Pure ASGI middleware: ``Sforce-Limit-Info`` on every HTTP response (also errors and
    streamed Bulk pages); the header must start with ``api-usage=`` for simple-salesforce."""

    def __init__(self, app: ASGIApp, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                value = f"api-usage={self.ctx.usage.used()}/{self.ctx.daily_max()}"
                headers = [*message.get("headers", []), (b"sforce-limit-info", value.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)


def _connected_app(state_dir: Path) -> dict[str, str]:
    """Consumer key/secret, generated once per state dir (like a connected app's)."""
    path = state_dir / "integration" / "connected_app.json"
    if path.exists():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "client_id": "3MVG9" + secrets.token_urlsafe(60).replace("-", "A").replace("_", "b"),
        "client_secret": secrets.token_hex(32).upper(),
        "password": "emulator-" + secrets.token_urlsafe(12),
        "security_token": secrets.token_urlsafe(18),
    }
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return data


class HttpServer:
    """HTTPS side of the emulator (REST, Bulk 2.0, OAuth, SOAP login, admin).

    Args:
        store: the OrgStore (reads through ``read_cursor()``, writes through ``commit``).
        faults: the shared Faults (defaults to ``store.faults``).
        state_dir: where TLS material, the integration key pair, query spools and Bulk
            results live (defaults to ``store.state_dir``).
        host: interface to bind (``127.0.0.1``).
        port: TCP port; 0 picks a free one (read the bound one from :attr:`port`).
        hostnames: extra DNS names for the server certificate and valid JWT audiences
            (e.g. ``login.salesforce.com``); 127.0.0.1 and localhost are always included.
        api_version: the version the handshake advertises (all of 31.0-64.0 are served).
        traffic: the traffic generator (for the admin ``traffic`` command), optional.
        daily_api_limit: DailyApiRequests Max unless a fault overrides it.
        token_ttl_seconds: access-token lifetime (None: until an expire-sessions fault).
        long_request_seconds: how long a request must run to count as "long" for the
            concurrent-request limit (Salesforce: 20 s).
    """

    def __init__(
        self,
        store: Any,
        faults: Any = None,
        *,
        state_dir: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        hostnames: Sequence[str] = (),
        api_version: str = "59.0",
        traffic: Any = None,
        daily_api_limit: int = DEFAULT_DAILY_API_LIMIT,
        token_ttl_seconds: float | None = None,
        long_request_seconds: float = LONG_REQUEST_SECONDS,
    ) -> None:
        self.store = store
        self.faults = faults if faults is not None else store.faults
        self.state_dir = Path(state_dir) if state_dir is not None else Path(store.state_dir)
        self.host = host
        self._requested_port = port
        self.hostnames = tuple(hostnames)
        self.api_version = api_version
        self.long_request_seconds = long_request_seconds
        self.tls: TlsMaterial = ensure_tls(self.state_dir, self.hostnames)
        self.keys = IntegrationKeys.ensure(self.state_dir)
        app_secrets = _connected_app(self.state_dir)
        username = self._integration_username()
        self.oauth = OAuthService(
            OAuthSettings(
                client_id=app_secrets["client_id"],
                client_secret=app_secrets["client_secret"],
                username=username,
                org_id=store.org_id,
                user_id=store.integration_user_id,
                password=app_secrets["password"],
                security_token=app_secrets["security_token"],
                token_ttl_seconds=token_ttl_seconds,
                certificate_path=self.keys.certificate_path,
            ),
            self.keys,
            api_version=api_version,
            extra_audiences=self.hostnames,
            epoch=lambda: self.faults.session_epoch,
        )
        work_dir = self.state_dir / "http"
        # Cursors and Bulk results do not survive a restart; clear what a crash left behind.
        for sub in ("cursors", "bulk"):
            _rmtree(work_dir / sub)
        self.ctx = ApiContext(
            store=store,
            faults=self.faults,
            oauth=self.oauth,
            usage=ApiUsage(store.clock.now_ms, daily_api_limit),
            work_dir=work_dir,
            api_version=api_version,
            traffic=traffic,
        )
        self.rest = RestApi(self.ctx)
        self.bulk = BulkQueryJobs(self.ctx)
        self.admin = AdminApi(self.ctx, self)
        self._inflight: dict[int, float] = {}
        self._inflight_lock = threading.Lock()
        self._inflight_seq = 0
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.access_token = ""

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``: the instance URL (also the login/token host)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"https://{host}:{self.port}"

    @property
    def token_url(self) -> str:
        return self.url + "/services/oauth2/token"

    @property
    def admin_url(self) -> str:
        return self.url + "/__emulator/admin"

    @property
    def ca_bundle(self) -> Path:
        return self.tls.ca_bundle

    def handshake(self) -> dict[str, Any]:
        """The HTTPS part of the handshake JSON (server.py adds the Pub/Sub keys)."""
        settings = self.oauth.settings
        return {
            "instance_url": self.url,
            "token_url": self.token_url,
            "client_id": settings.client_id,
            "username": settings.username,
            "private_key_path": str(self.keys.private_key_path),
            "certificate_path": str(self.keys.certificate_path),
            "access_token": self.access_token,
            "ca_bundle": str(self.tls.ca_bundle),
            "tls_cert_file": str(self.tls.cert_file),
            "tls_key_file": str(self.tls.key_file),
            "api_version": self.api_version,
            "state_dir": str(self.state_dir),
            "admin_url": self.admin_url,
            "org_id": settings.org_id,
            "user_id": settings.user_id,
        }

    def start(self, timeout: float = 15.0) -> HttpServer:
        """Bind, start uvicorn in a daemon thread and wait until it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("HttpServer already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(512)
        sock.set_inheritable(True)
        self._socket = sock
        self.port = sock.getsockname()[1]
        self.oauth.instance_url = self.url
        self.ctx.instance_url = self.url
        self.access_token = self.oauth.issue_token()
        config = uvicorn.Config(
            self.app,
            ssl_certfile=str(self.tls.cert_file),
            ssl_keyfile=str(self.tls.key_file),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve,
            args=(self._server, sock),
            name=f"sfdc-emulator-https:{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTPS server did not start")
            time.sleep(0.01)
        return self

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])

        asyncio.run(main())

    def _abort_connections(self) -> None:
        # Idle keep-alive TLS connections would hold uvicorn's graceful shutdown until its
        # timeout (clients such as requests keep them open); in-flight requests had their
        # grace period already.
        server = self._server
        if server is None:
            return
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, abort Bulk jobs and drop cursors; idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(0.25)
            if self._thread.is_alive() and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop may have just closed
                    self._loop.call_soon_threadsafe(self._abort_connections)
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None
        self._loop = None
        self.bulk.shutdown()
        self.rest.cursors.clear()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _authenticate(self, request: Request) -> Session | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not token.strip():
            return None
        return self.oauth.registry.lookup(token.strip())

    @contextlib.contextmanager
    def _track(self) -> Iterator[None]:
        with self._inflight_lock:
            self._inflight_seq += 1
            key = self._inflight_seq
            self._inflight[key] = time.monotonic()
        try:
            yield
        finally:
            with self._inflight_lock:
                self._inflight.pop(key, None)

    def _long_requests(self) -> int:
        cutoff = time.monotonic() - self.long_request_seconds
        with self._inflight_lock:
            return sum(1 for started in self._inflight.values() if started <= cutoff)

    def _endpoint(self, route: ApiRoute) -> Any:
        async def endpoint(request: Request) -> Response:
            session: Session | None = None
            if route.auth:
                session = self._authenticate(request)
                if session is None:
                    return JSONResponse(
                        [
                            {
                                "message": "Session expired or invalid",
                                "errorCode": "INVALID_SESSION_ID",
                            }
                        ],
                        401,
                        headers={"WWW-Authenticate": 'Token realm="Salesforce"'},
                    )
            if route.count:
                refused = self._refusal()
                if refused is not None:
                    return refused
                self.ctx.usage.record()
                delay = self.faults.take_slow("rest")
                if delay:
                    await asyncio.sleep(delay)
            body = await request.body()
            with self._track():
                try:
                    # Only auth=False routes get None, and their handlers take Session | None.
                    handler_session = cast(Session, session)
                    return await run_in_threadpool(route.handler, request, handler_session, body)
                except ApiError as exc:
                    return JSONResponse(exc.body(), exc.status)
                except Exception as exc:
                    # Type only: messages may quote SOQL literals or field values.
                    log.error("unhandled %s in %s", type(exc).__name__, route.path)
                    return fault_error(500, "UNKNOWN_EXCEPTION")

        return endpoint

    def _refusal(self) -> Response | None:
        fault = self.faults.take_rest_fault()
        if fault is not None:
            return fault_error(*fault)
        if self.ctx.usage.used() >= self.ctx.daily_max():
            return JSONResponse(
                [{"message": DAILY_LIMIT_MESSAGE, "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403
            )
        limit = self.faults.concurrent_limit_value
        if limit is not None and self._long_requests() >= limit:
            return JSONResponse(
                [{"message": CONCURRENT_LIMIT_MESSAGE, "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                403,
            )
        return None

    def _build_app(self) -> ASGIApp:
        routes: list[Route] = list(self.oauth.routes())
        api_routes = [*self.rest.routes(), *self.bulk.routes(), *self.admin.routes()]
        for api_route in api_routes:
            endpoint = self._endpoint(api_route)
            path = api_route.path.rstrip("/")
            for variant in (path, path + "/"):
                routes.append(Route(variant, endpoint, methods=list(api_route.methods)))

        async def not_found(request: Request, exc: Exception) -> Response:
            return JSONResponse(
                [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}],
                404,
            )

        async def method_not_allowed(request: Request, exc: Exception) -> Response:
            return JSONResponse(
                [
                    {
                        "errorCode": "METHOD_NOT_ALLOWED",
                        "message": f"HTTP Method '{request.method}' not allowed. Allowed are "
                        "GET,HEAD,POST,PATCH,DELETE",
                    }
                ],
                405,
            )

        app = Starlette(
            routes=routes,
            exception_handlers={404: not_found, 405: method_not_allowed},
        )
        app.router.redirect_slashes = False
        return _LimitInfo(app, self.ctx)

    def _integration_username(self) -> str:
        row = self.store.get("User", self.store.integration_user_id)
        return str(row["Username"]) if row else "integration@sfdc-sync.emulator"


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

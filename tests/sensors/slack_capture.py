"""A real local HTTP server that captures Slack posts (webhooks and chat.postMessage).

Slack's incoming webhooks answer ``200 ok``; the Web API answers ``{"ok": true}``. The
server records every POST's path, headers and JSON body so tests can assert on exactly what
Slack would have received.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class CapturedPost:
    """One POST the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def text(self) -> str:
        """The message's plain text."""
        return str(self.body.get("text", ""))


@dataclass
class SlackCapture:
    """What the running server captured, and knobs to make it fail."""

    url: str
    posts: list[CapturedPost] = field(default_factory=list)
    # Answer this HTTP status to the next `fail_next` posts (Slack outage simulation).
    fail_status: int = 500
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def webhook_url(self) -> str:
        """An incoming-webhook URL on this server."""
        return f"{self.url}/services/T000/B000/XXXX"

    @property
    def api_url(self) -> str:
        """A Web API base URL on this server (for the bot-token transport)."""
        return f"{self.url}/api/"

    def texts(self) -> list[str]:
        """The text of every captured post, in arrival order."""
        with self.lock:
            return [p.text for p in self.posts]


def _handler(capture: SlackCapture) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with capture.lock:
                failing = capture.fail_next > 0
                if failing:
                    capture.fail_next -= 1
                else:
                    capture.posts.append(
                        CapturedPost(self.path, dict(self.headers.items()), json.loads(raw))
                    )
            if failing:
                self._answer(capture.fail_status, b"internal_error", "text/plain")
            elif self.path.startswith("/api/"):
                self._answer(200, b'{"ok": true, "ts": "1.0"}', "application/json")
            else:
                self._answer(200, b"ok", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test output is the captured posts."""

    return Handler


@contextmanager
def slack_capture_server() -> Iterator[SlackCapture]:
    """Run the capture server on 127.0.0.1 (a free port) for the duration of the block."""
    capture = SlackCapture(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(capture))
    capture.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

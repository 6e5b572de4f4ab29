"""`make demo` (scripts/demo.py): the emulator and `dagster dev` come up and go down together."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUERY = b'{"query": "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int) -> dict | None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=QUERY,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _session_processes(sid: int) -> list[str]:
    """What still runs in the demo's session (its pid leads it: start_new_session)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(p.info["pid"]) == sid:
                found.append(
                    f"{p.info['pid']} {p.info['status']} {' '.join(p.info['cmdline'])[:160]}"
                )
    return found


@pytest.mark.slow
def test_demo_serves_the_emulator_and_loads_the_code_location_then_stops_cleanly(
    tmp_path: Path,
) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "scripts/demo.py",
            "--dir",
            str(tmp_path),
            "--port",
            str(port),
            "--scale",
            "tiny",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        # A test run started in the background by a non-interactive shell ignores SIGINT,
        # and children inherit that: the demo would never see the SIGINT this test stops it
        # with (three fresh-clone CI runs launched with `( ... &)` timed out here).
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 180
        answer = None
        while time.monotonic() < deadline and proc.poll() is None:
            answer = _graphql(port)
            if answer and answer["data"]["repositoriesOrError"].get("nodes"):
                break
            time.sleep(1)
        if proc.poll() is not None:
            early = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"the demo exited with code {proc.returncode}:\n{early[-4000:]}")
        assert answer is not None, "dagster dev never answered GraphQL"
        assert answer["data"]["repositoriesOrError"]["nodes"], answer

        info = json.loads((tmp_path / "emulator.json").read_text())
        env_file = (tmp_path / ".env").read_text()
        assert f"SFDC_EMULATOR_INFO={tmp_path / 'emulator.json'}" in env_file
        assert "SFDC_ENV=local" in env_file
        assert info["instance_url"].startswith("https://127.0.0.1:")
        host, grpc_port = info["pubsub_target"].rsplit(":", 1)
        with socket.create_connection((host, int(grpc_port))):
            pass  # the gRPC port accepts connections
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired as exc:
            left = _session_processes(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            partial = (exc.output or b"").decode(errors="replace")
            pytest.fail(
                f"the demo did not stop within 90 s of SIGINT; still running: {left}\n"
                f"its output so far:\n{partial[-4000:]}"
            )
    text = out.decode(errors="replace")
    assert "Salesforce emulator (REST/Bulk)" in text
    assert "Dagster UI" in text
    # Nothing of the demo is left running: the emulator released its org.
    from sfdc_emulator.store import OrgStore

    OrgStore(tmp_path / "org").close()

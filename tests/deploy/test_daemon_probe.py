"""deploy/probe/daemon_heartbeat.py: the external probe that notices a dead daemon.

A real Dagster instance (SQLite under a temporary DAGSTER_HOME) holds the heartbeats the
daemon would write; the probe runs as its own process, as the CronJob runs it, and its
Slack post goes to a webhook served on loopback. Not verified: the CronJob on a cluster,
Postgres run storage (the probe reads through the instance API, the same for both).
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster._daemon.types import DaemonHeartbeat

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "deploy" / "probe" / "daemon_heartbeat.py"


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def _beat(home: Path, age_seconds: float, skip: str | None = None) -> list[str]:
    with DagsterInstance.from_config(str(home)) as instance:
        daemons = sorted(instance.get_required_daemon_types())
        for daemon in daemons:
            if daemon != skip:
                instance.add_daemon_heartbeat(
                    DaemonHeartbeat(time.time() - age_seconds, daemon, "probe-test")
                )
    return daemons


class _Webhook(http.server.BaseHTTPRequestHandler):
    posts: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    _Webhook.posts = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Webhook.posts
    server.shutdown()


def _probe(home: Path, url: str | None = None) -> subprocess.CompletedProcess:
    env = {"DAGSTER_HOME": str(home), "PATH": "/usr/bin:/bin"}
    if url:
        env["SLACK_WEBHOOK_URL"] = url
    return subprocess.run(
        [sys.executable, str(PROBE), "--max-age-seconds", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_live_daemons_pass(dagster_home: Path) -> None:
    daemons = _beat(dagster_home, age_seconds=5)
    out = _probe(dagster_home)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["stale"] == [] and set(report["heartbeat_age_seconds"]) == set(daemons)
    assert "SENSOR" in daemons


def test_an_old_heartbeat_fails_and_posts_the_alert_itself(
    dagster_home: Path, webhook: tuple[str, list[dict]]
) -> None:
    url, posts = webhook
    daemons = _beat(dagster_home, age_seconds=600)
    out = _probe(dagster_home, url)
    assert out.returncode == 1
    assert json.loads(out.stdout)["stale"] == daemons
    (post,) = posts
    assert post["text"].startswith("Dagster daemon down: no heartbeat from ")
    assert "SENSOR" in post["text"] and "Dead Dagster daemon" in post["text"]


def test_a_daemon_that_never_beat_fails(dagster_home: Path) -> None:
    _beat(dagster_home, age_seconds=5, skip="SENSOR")
    out = _probe(dagster_home)
    report = json.loads(out.stdout)
    assert out.returncode == 1 and report["stale"] == ["SENSOR"]
    assert report["heartbeat_age_seconds"]["SENSOR"] is None


def test_the_cronjob_runs_the_probe_from_the_image() -> None:
    job = yaml.safe_load((REPO / "deploy" / "probe" / "cronjob.yaml").read_text())
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["python", "deploy/probe/daemon_heartbeat.py"]
    assert "COPY deploy/probe /opt/app/deploy/probe" in (REPO / "deploy/Dockerfile").read_text()

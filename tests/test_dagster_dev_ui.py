"""The real UI stack, headless: `dagster dev` on workspace.yaml, a partition backfill over GraphQL.

Starts the emulator (tiny org) and `dagster dev` as the user would, waits for the code
location to load over GraphQL, launches a partition backfill of a raw asset for a few days
through `launchPartitionBackfill` — what the UI's "Materialize selected" on a partition
range does — and polls until the backfill and its run succeed. Then stops everything with
one SIGTERM each (SIGINT restored in the children: a background `dagster dev` otherwise
ignores SIGTERM, reference §5).
"""

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from resources.run_launcher import PID_TAG
from scripts.demo import RUN_LAUNCHER_YAML

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"
PREFERRED_RAW = ["salesforce", "raw", "opportunity"]
BACKFILL_DAYS = 3
LOAD_TIMEOUT_S = 120
BACKFILL_TIMEOUT_S = 150
# make demo's run launcher (resources/run_launcher.py): the backfill's run is forked from
# its zygote, under the real daemon.
DAGSTER_YAML = "telemetry:\n  enabled: false\n" + RUN_LAUNCHER_YAML

LOCATIONS = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RAW_ASSETS = """{ assetNodes { assetKey { path } isPartitioned partitionKeys } }"""
LAUNCH = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId }
  ... on PythonError { message } ... on InvalidSubsetError { message }
  ... on UnauthorizedError { message } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status numPartitions
    runs(limit: 20) { runId status tags { key value } } }
  ... on PythonError { message } } }"""
COVERAGE = """query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) { assetPartitionStatuses {
  __typename ... on TimePartitionStatuses { ranges { status startKey endKey } } } } }"""
RUN_FAILURE = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status
  eventConnection(afterCursor: null) { events { __typename
    ... on ExecutionStepFailureEvent { stepKey error { message } } } } } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _gql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        answer = json.loads(resp.read())
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait; kill the process group only if it did not stop."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _start(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_restore_sigint,
            start_new_session=True,  # its own group: a stuck child can be killed alone
        )


class Stack:
    """The emulator and `dagster dev`, started as `make demo` starts them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        # What `dagster dev` started (webserver, daemon, code server); psutil handles
        # guard against pid reuse when these are signalled later.
        self.dagster_children: list[psutil.Process] = []

    def start(self) -> None:
        info = self.tmp / "emulator.json"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for var in ("SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "SLACK_CHANNEL"):
            env.pop(var, None)  # no alerts leave the test
        emulator = _start(
            [
                *(sys.executable, "-m", "sfdc_emulator", "serve"),
                *(
                    "--state-dir",
                    str(self.tmp / "org"),
                    "--scale",
                    "tiny",
                    "--info-file",
                    str(info),
                ),
            ],
            env,
            self.tmp / "emulator.log",
        )
        self.procs.append(emulator)
        deadline = time.monotonic() + 60
        while not info.exists():
            assert emulator.poll() is None, self.log("emulator.log")
            assert time.monotonic() < deadline, "the emulator wrote no handshake in 60 s"
            time.sleep(0.2)
        home = self.tmp / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(DAGSTER_YAML)
        # Without the bootstrap sensor: its 5-year backfill would still be writing events
        # when the test stops the stack (make demo reaps such run workers; this test checks
        # that dagster dev's own processes exit on their own).
        objects = self.tmp / "objects.yaml"
        shipped = (REPO / "sfdc_assets" / "objects.yaml").read_text()
        assert "bootstrap: true" in shipped
        objects.write_text(shipped.replace("bootstrap: true", "bootstrap: false"))
        env.update(
            SFDC_OBJECTS_FILE=str(objects),
            SFDC_ENV="local",
            SFDC_EMULATOR_INFO=str(info),
            WAREHOUSE_DUCKDB_PATH=str(self.tmp / "warehouse.duckdb"),
            LANDING_URL=str(self.tmp / "landing"),
            DAGSTER_HOME=str(home),
            DAGSTER_UI_URL=f"http://127.0.0.1:{self.port}",
        )
        dagster = _start(
            [sys.executable, "-m", "dagster", "dev", "-w", str(WORKSPACE), "-p", str(self.port)],
            env,
            self.tmp / "dagster.log",
        )
        self.procs.append(dagster)

    def log(self, name: str) -> str:
        path = self.tmp / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def wait_for_location(self) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.procs[-1].poll() is None, self.log("dagster.log")
            try:
                entries = _gql(self.port, LOCATIONS)["workspaceOrError"]["locationEntries"]
            except OSError:
                entries = []
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [
                    e["locationOrLoadError"]["message"]
                    for e in entries
                    if e["locationOrLoadError"]["__typename"] == "PythonError"
                ]
                assert not errors, errors
                self.dagster_children = psutil.Process(self.procs[-1].pid).children(recursive=True)
                return
            time.sleep(0.5)
        pytest.fail(
            f"the code location did not load in {LOAD_TIMEOUT_S} s\n{self.log('dagster.log')}"
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)

    def reap(self) -> None:
        """Kill what `dagster dev` started and left behind (only after a failed test)."""
        for child in self.dagster_children:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.is_running():
                    child.kill()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        s.start()
        yield s
    finally:
        s.stop()
        s.reap()


def _raw_asset(port: int) -> tuple[list[str], list[str]]:
    nodes = _gql(port, RAW_ASSETS)["assetNodes"]
    raw = {
        tuple(n["assetKey"]["path"]): n["partitionKeys"]
        for n in nodes
        if n["isPartitioned"] and n["assetKey"]["path"][:2] == ["salesforce", "raw"]
    }
    assert raw, "no partitioned salesforce/raw/* asset in the code location"
    key = tuple(PREFERRED_RAW) if tuple(PREFERRED_RAW) in raw else sorted(raw)[0]
    return list(key), raw[key]


def _why_failed(port: int, run_ids: list[str]) -> str:
    out = []
    for run_id in run_ids:
        run = _gql(port, RUN_FAILURE, {"id": run_id})["runOrError"]
        events = run.get("eventConnection", {}).get("events", [])
        out += [e["error"]["message"][:800] for e in events if e.get("error")]
    return "\n".join(out)


@pytest.mark.slow
def test_a_partition_backfill_launched_over_graphql_succeeds_under_dagster_dev(
    stack: Stack,
) -> None:
    stack.wait_for_location()
    key, partition_keys = _raw_asset(stack.port)
    days = partition_keys[-BACKFILL_DAYS:]
    assert len(days) == BACKFILL_DAYS, partition_keys

    launched = _gql(
        stack.port,
        LAUNCH,
        {
            "p": {
                "partitionsByAssets": [
                    {
                        "assetKey": {"path": key},
                        "partitions": {"range": {"start": days[0], "end": days[-1]}},
                    }
                ],
                "title": "headless UI test",
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    backfill: dict[str, Any] = {}
    while time.monotonic() < deadline:
        backfill = _gql(stack.port, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["status"] not in ("REQUESTED",):
            break
        time.sleep(1)
    runs = backfill.get("runs", [])
    assert backfill.get("status") == "COMPLETED_SUCCESS", (
        backfill,
        _why_failed(stack.port, [r["runId"] for r in runs]),
    )
    assert backfill["numPartitions"] == BACKFILL_DAYS
    # single_run backfill policy: one run covers the whole range.
    assert len(runs) == 1 and runs[0]["status"] == "SUCCESS", runs
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert PID_TAG in tags, "the run was not forked by the pre-warmed launcher"
    assert tags["dagster/asset_partition_range_start"] == days[0]
    assert tags["dagster/asset_partition_range_end"] == days[-1]

    [node] = _gql(stack.port, COVERAGE, {"k": [{"path": key}]})["assetNodes"]
    ranges = node["assetPartitionStatuses"]["ranges"]
    assert any(
        r["status"] == "MATERIALIZED" and r["startKey"] <= days[0] and r["endKey"] >= days[-1]
        for r in ranges
    ), ranges

    children = stack.dagster_children
    stack.stop()
    assert all(p.poll() is not None for p in stack.procs)
    # The webserver, daemon and code server exit on their own after the SIGTERM.
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [p.cmdline() for p in alive]

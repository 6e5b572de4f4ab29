"""`make bench-latency`: CDC latency from Salesforce commit to queryable in `current`.

Runs the demo stack — the emulator with live traffic and `dagster dev` on workspace.yaml
with the CDC sensors running — for ``--minutes`` (10 by default), stamps extra Opportunity
updates at a steady rate on top of the traffic, then stops everything and measures from
the tables and the Dagster event log, so nothing polls the DuckDB file while the runs
write it:

- every CDC change of Opportunity committed in the window is a raw row (``commit_ts`` =
  the event's commitTimestamp) and, when it changed the record, an scd2 version with the
  same ``_version``, written by one apply (``_synced_at`` = that apply's start);
- the run that applied it is the one whose apply step materialized
  ``salesforce/current/opportunity`` next after ``_synced_at``; the materialization is
  recorded after the apply's transaction committed, so
  **latency = materialization time - commit_ts** (an upper bound by the few ms the event
  write takes);
- the breakdown comes from that run's events: commit → run requested (sensor interval and
  drain), requested → launched (run queue), launched → started (new process, code import),
  started → apply step started (steps before it), apply step (apply + materialize).

Results go to the "## CDC latency (make bench-latency)" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import REPO, RssSampler, machine, replace_section
from scripts.demo import instance_yaml_text, local_environment

log = logging.getLogger("bench.latency")

HEADING = "## CDC latency (make bench-latency)"
OBJECT = "Opportunity"
CURRENT_KEY = ["salesforce", "current", OBJECT.lower()]
# The demo's traffic (scripts/demo.py --traffic default).
DEFAULT_TRAFFIC = 2.0
STAMP_EVERY_S = 5.0
LOAD_TIMEOUT_S = 180
# Warm-up includes the bootstrap backfill of every object (sensor sfdc_bootstrap).
WARMUP_TIMEOUT_S = 2400
DRAIN_TIMEOUT_S = 180

LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message }
    ... on RepositoryLocation { repositories { name sensors { name minIntervalSeconds
      sensorState { status } } } } } } } } }"""
START_SENSOR = """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
  __typename ... on PythonError { message } } }"""
LATEST_MATERIALIZATION = """query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) {
  assetMaterializations(limit: 1) { timestamp } } }"""
BOOTSTRAP_RUNS = """query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs {
  results { status } } } }"""
TICKS = """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor {
  sensorState { ticks(limit: 2000) { timestamp endTimestamp status runIds } } } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _restore_sigint() -> None:
    # A background `dagster dev` ignores SIGTERM when SIGINT was inherited as ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _gql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = json.loads(resp.read())
    if answer.get("errors"):
        raise RuntimeError(f"GraphQL error: {answer['errors']}")
    return answer["data"]


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank on the sorted values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Stack:
    """The demo stack: emulator with traffic, and `dagster dev` on workspace.yaml."""

    root: Path
    traffic: float
    scale: str
    workspace: str = "workspace.yaml"
    emulator_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=_free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    location: str = ""
    repository: str = ""
    cdc_sensors: dict[str, int] = field(default_factory=dict)

    @property
    def info_path(self) -> Path:
        return self.root / "emulator.json"

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    def _spawn(self, cmd: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_restore_sigint,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for var in ("SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "SLACK_CHANNEL"):
            env.pop(var, None)
        env.update(local_environment(self.root, self.info_path))
        env["DAGSTER_UI_URL"] = f"http://127.0.0.1:{self.port}"
        return env

    def start(self) -> None:
        emulator = self._spawn(
            [
                *(sys.executable, "-m", "sfdc_emulator", "serve"),
                *("--state-dir", str(self.root / "org"), "--scale", self.scale),
                *("--traffic", str(self.traffic), "--info-file", str(self.info_path)),
                *self.emulator_args,
            ],
            self.env(),
            "emulator",
        )
        deadline = time.monotonic() + 300
        while not self.info_path.exists():
            if emulator.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the emulator did not start; see {self.root}/emulator.log")
            time.sleep(0.2)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(instance_yaml_text(self.home))
        self._spawn(
            [sys.executable, "-m", "dagster", "dev", "-w", self.workspace, "-p", str(self.port)],
            self.env(),
            "dagster",
        )

    def wait_loaded(self) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.procs[-1].poll() is not None:
                raise SystemExit(f"dagster dev exited; see {self.root}/dagster.log")
            with contextlib.suppress(OSError):
                entries = _gql(self.port, LOCATIONS)["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED":
                    loaded = entries[0]["locationOrLoadError"]
                    if loaded["__typename"] == "PythonError":
                        raise SystemExit(f"the code location failed to load: {loaded['message']}")
                    self.location = entries[0]["name"]
                    repo = loaded["repositories"][0]
                    self.repository = repo["name"]
                    self.cdc_sensors = {
                        s["name"]: s["minIntervalSeconds"]
                        for s in repo["sensors"]
                        if s["name"].startswith("cdc_")
                    }
                    # Everything the demo runs (bootstrap and dbt refresh included), as
                    # `make demo` runs it; the alert sensors have no webhook here.
                    for s in repo["sensors"]:
                        if (
                            not s["name"].startswith("slack_")
                            and s["sensorState"]["status"] != "RUNNING"
                        ):
                            self._start_sensor(s["name"])
                    return
            time.sleep(0.5)
        raise SystemExit(f"the code location did not load in {LOAD_TIMEOUT_S} s")

    def selector(self, sensor: str) -> dict[str, str]:
        return {
            "repositoryLocationName": self.location,
            "repositoryName": self.repository,
            "sensorName": sensor,
        }

    def _start_sensor(self, name: str) -> None:
        result = _gql(self.port, START_SENSOR, {"s": self.selector(name)})["startSensor"]
        if result["__typename"] == "PythonError":
            raise SystemExit(f"could not start sensor {name}: {result['message']}")

    def objects(self) -> list[str]:
        """The configured objects (what sfdc_bootstrap backfills one by one)."""
        from sfdc_assets.objects import parse_config

        config = parse_config((REPO / "sfdc_assets" / "objects.yaml").read_text())
        return [o.name for o in config.objects]

    def bootstrap_state(self) -> tuple[int, int]:
        """(bootstrap runs that succeeded, bootstrap runs still queued or running)."""
        tags = [{"key": "sfdc/source", "value": "bootstrap"}]
        runs = _gql(self.port, BOOTSTRAP_RUNS, {"f": {"tags": tags}})["runsOrError"]["results"]
        active = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}
        done = sum(1 for r in runs if r["status"] == "SUCCESS")
        return done, sum(1 for r in runs if r["status"] in active)

    def latest_materialization(self) -> float | None:
        return self.latest_materialization_of(OBJECT.lower()) or None

    def latest_materialization_of(self, table: str) -> float:
        """Epoch seconds of the latest materialization of salesforce/current/<table>; 0: none."""
        key = ["salesforce", "current", table]
        nodes = _gql(self.port, LATEST_MATERIALIZATION, {"k": [{"path": key}]})
        mats = nodes["assetNodes"][0]["assetMaterializations"] if nodes["assetNodes"] else []
        return int(mats[0]["timestamp"]) / 1000 if mats else 0.0

    def info(self) -> dict[str, Any]:
        """The emulator's handshake (admin calls)."""
        return json.loads(self.info_path.read_text())

    def ticks(self) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for name in self.cdc_sensors:
            data = _gql(self.port, TICKS, {"s": self.selector(name)})["sensorOrError"]
            out[name] = data.get("sensorState", {}).get("ticks", [])
        return out

    def stop(self) -> None:
        """SIGTERM each process; then reap what it started (code server, run workers).

        A busy `dagster dev` can exit before its code server and in-flight run workers do,
        and those run in their own process groups: they are found by ancestry first.
        """
        import psutil

        descendants: list[psutil.Process] = []
        for proc in self.procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                descendants += psutil.Process(proc.pid).children(recursive=True)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        _, alive = psutil.wait_procs(descendants, timeout=20)
        for leftover in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()


def stamp(info_path: Path, until: float, every_s: float, stop: threading.Event) -> int:
    """Update one Opportunity every ``every_s`` s through the emulator's write path."""
    from sfdc_emulator.admin import admin_call

    info = json.loads(info_path.read_text())
    n = 0
    while time.time() < until and not stop.is_set():
        marker = f"bench-latency {n} {random.getrandbits(32):08x}"
        admin_call(info, "update", object=OBJECT, count=1, fields={"Description": marker})
        n += 1
        stop.wait(every_s)
    return n


@dataclass
class RunTimes:
    """One CDC run's event times (epoch seconds) for the breakdown."""

    run_id: str
    created: float
    launched: float | None
    started: float | None
    apply_started: float | None
    materialized: float


def run_times(home: Path, since: float) -> list[RunTimes]:
    """Runs that materialized the Opportunity current table, from the stopped instance."""
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    key = dg.AssetKey(CURRENT_KEY)
    out: list[RunTimes] = []
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records(
            dg.RunsFilter(created_after=datetime.fromtimestamp(since, UTC))
        ):
            run_id = record.dagster_run.run_id
            times: dict[str, float] = {}
            step_starts: dict[str, float] = {}
            mats: list[tuple[float, str | None]] = []
            for entry in instance.all_logs(run_id):
                event = entry.dagster_event
                if event is None:
                    continue
                kind = event.event_type
                if kind in (dg.DagsterEventType.RUN_STARTING, dg.DagsterEventType.RUN_START):
                    times.setdefault(kind.name, entry.timestamp)
                elif kind == dg.DagsterEventType.STEP_START and entry.step_key:
                    step_starts.setdefault(entry.step_key, entry.timestamp)
                elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION and event.asset_key == key:
                    mats.append((entry.timestamp, entry.step_key))
            for ts, step in mats:
                out.append(
                    RunTimes(
                        run_id=run_id,
                        created=record.create_timestamp.timestamp(),
                        launched=times.get("RUN_STARTING"),
                        started=times.get("RUN_START"),
                        apply_started=step_starts.get(step or ""),
                        materialized=ts,
                    )
                )
    return sorted(out, key=lambda r: r.materialized)


def _read_only(warehouse: Path, timeout_s: float = 120.0) -> Any:
    """A read-only connection, waiting for run workers still finishing to release the file
    (DuckDB refuses any second process while one holds it for writing)."""
    import duckdb

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return duckdb.connect(str(warehouse), read_only=True)
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def naive(ts: float) -> datetime:
    """Epoch seconds as the warehouse's naive UTC timestamp."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def epoch(ts: datetime) -> float:
    """A naive UTC timestamp of the warehouse as epoch seconds."""
    return ts.replace(tzinfo=UTC).timestamp()


def changes(warehouse: Path, start: float, end: float) -> tuple[list[tuple[float, float]], int]:
    """(commit, applied) epoch pairs of CDC changes committed in [start, end), and the count
    of CDC changes in the window (no-op changes create no scd2 version and are not timed)."""

    obj = OBJECT.lower()
    with _read_only(warehouse) as con:
        total = con.execute(
            f"SELECT count(*) FROM sfdc_raw.{obj} WHERE source = 'cdc' "
            "AND commit_ts >= ? AND commit_ts < ?",
            [naive(start), naive(end)],
        ).fetchone()[0]
        rows = con.execute(
            f"SELECT r.commit_ts, min(h._synced_at) FROM sfdc_raw.{obj} r "
            f"JOIN sfdc_history.{obj} h ON h.id = r.record_id AND h._version = r.version "
            "WHERE r.source = 'cdc' AND r.commit_ts >= ? AND r.commit_ts < ? "
            "GROUP BY r.change_id, r.commit_ts",
            [naive(start), naive(end)],
        ).fetchall()

    return [(epoch(c), epoch(s)) for c, s in rows], int(total)


def stamps_applied(warehouse: Path) -> int:
    """Stamped updates whose version reached scd2 by the end (the rest were still queued:
    changes not yet in raw are invisible to the per-change timing above)."""
    with _read_only(warehouse) as con:
        return int(
            con.execute(
                f"SELECT count(DISTINCT description) FROM sfdc_history.{OBJECT.lower()} "
                "WHERE description LIKE 'bench-latency %'"
            ).fetchone()[0]
        )


def business_view(warehouse: Path, home: Path) -> str:
    """The demo's promise, checked at the end: the dbt refresh ran, and every Closed Won
    deal in current is in `marts.commission_preview` (a view over current)."""
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        # dbt builds: one per domain cadence (dbt-revenue, ...) or dbt-refresh without domains.
        runs = [r for r in instance.get_runs() if r.tags.get("sfdc/source", "").startswith("dbt-")]
        ok = sum(1 for r in runs if r.status == dg.DagsterRunStatus.SUCCESS)
    with _read_only(warehouse) as con:
        won = con.execute(
            f"SELECT count(*) FROM sfdc.{OBJECT.lower()} WHERE iswon AND NOT is_deleted"
        ).fetchone()[0]
        try:
            shown = con.execute("SELECT count(*) FROM marts.commission_preview").fetchone()[0]
        except Exception as exc:  # no dbt build yet: say so in the report
            shown = f"not built ({type(exc).__name__})"
    return (
        f"dbt builds: {ok} succeeded of {len(runs)}; Closed Won opportunities in"
        f" `sfdc.opportunity` at the end: {won}, rows in `marts.commission_preview`: {shown}."
    )


@dataclass
class Results:
    """Per-change latencies and their parts (seconds)."""

    total: list[float] = field(default_factory=list)
    to_synced: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)
    runs: set[str] = field(default_factory=set)
    unmatched: int = 0


PARTS = (
    ("commit → run requested (sensor interval, drain, tick)", "sensor"),
    ("run requested → launched (run queue)", "queue"),
    ("launched → run started (new process, code import)", "process"),
    ("run started → apply step started (earlier steps, step process)", "steps"),
    ("apply step (apply + materialization event)", "apply"),
)


def attribute(pairs: list[tuple[float, float]], runs: list[RunTimes]) -> Results:
    """Match each change to the run that applied it and split its latency."""
    res = Results(parts={key: [] for _, key in PARTS})
    for commit, synced in pairs:
        # The first materialization at or after the apply that wrote the version.
        run = next((r for r in runs if r.materialized >= synced - 0.001), None)
        if run is None:
            res.unmatched += 1
            continue
        res.total.append(run.materialized - commit)
        res.to_synced.append(synced - commit)
        res.runs.add(run.run_id)
        res.parts["sensor"].append(run.created - commit)
        if run.launched and run.started and run.apply_started:
            res.parts["queue"].append(run.launched - run.created)
            res.parts["process"].append(run.started - run.launched)
            res.parts["steps"].append(run.apply_started - run.started)
            res.parts["apply"].append(run.materialized - run.apply_started)
    return res


def import_seconds() -> float:
    """Wall time of importing the code location in a fresh interpreter (what each run pays)."""
    code = (
        "import sys, time; t = time.perf_counter(); import sfdc_assets.definitions; "
        "sys.stdout.write(str(time.perf_counter() - t))"
    )
    samples = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
        )
        samples.append(float(out.stdout.strip()))
    return statistics.median(samples)


def tick_stats(ticks: dict[str, list[dict[str, Any]]], start: float, end: float) -> list[str]:
    lines = []
    for name, items in ticks.items():
        window = [t for t in items if start <= t["timestamp"] < end]
        if not window:
            continue
        stamps = sorted(t["timestamp"] for t in window)
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        durations = [t["endTimestamp"] - t["timestamp"] for t in window if t.get("endTimestamp")]
        with_runs = sum(1 for t in window if t["runIds"])
        lines.append(
            f"| `{name}` | {len(window)} | {with_runs} | "
            f"{statistics.median(gaps) if gaps else float('nan'):.1f} | "
            f"{statistics.median(durations) if durations else float('nan'):.1f} | "
            f"{pct(durations, 95):.1f} |"
        )
    return lines


def render(
    args: argparse.Namespace,
    res: Results,
    total_changes: int,
    stamps: int,
    ticks: list[str],
    intervals: dict[str, int],
    import_s: float,
    rss: list[int],
    applied_stamps: int,
    started: float,
    ended: float,
    warmup_s: float,
    business: str,
) -> str:
    def row(label: str, values: list[float]) -> str:
        return (
            f"| {label} | {len(values)} | {pct(values, 50):.1f} | {pct(values, 95):.1f} | "
            f"{pct(values, 99):.1f} | {max(values) if values else float('nan'):.1f} |"
        )

    minutes = (ended - started) / 60
    if not res.total:
        verdict = "not measured (no change was applied)"
    else:
        verdict = "meets" if pct(res.total, 95) < 600 else "misses"
    lines = [
        f"Machine: {machine()}.",
        "",
        f"Command: `make bench-latency` (`python -m bench.latency --minutes {args.minutes:g}`):"
        f" emulator `--scale {args.scale} --traffic {args.traffic:g}` (the demo's traffic)"
        f" plus one stamped Opportunity update every {args.stamp_every:g} s ({stamps} stamps),"
        f" `dagster dev -w {args.workspace}` with the demo's instance (scripts/demo.py) and"
        f" every sensor running; {minutes:.1f} min of traffic measured once the bootstrap"
        f" backfill of every object had finished ({warmup_s:.0f} s after the code location"
        " loaded) and a CDC run had materialized Opportunity.",
        "",
        f"{applied_stamps} of the {stamps} stamped updates were queryable when the stack"
        " stopped (after up to 3 min of drain).",
        "",
        f"{total_changes} Opportunity CDC changes of the window reached raw; {len(res.total)}"
        f" changed a record and were timed (no-op changes create no version),"
        f" {res.unmatched} had no later materialization, applied by {len(res.runs)} runs."
        f" Requirement P95 < 10 min: **{verdict}**.",
        "",
        "| commit → queryable in current (s) | n | P50 | P95 | P99 | max |",
        "|---|---|---|---|---|---|",
        row("**Opportunity, end to end**", res.total),
        row("commit → apply started (`_synced_at`)", res.to_synced),
        "",
        "Breakdown per change (s):",
        "",
        "| part | n | P50 | P95 | P99 | max |",
        "|---|---|---|---|---|---|",
        *[row(label, res.parts[key]) for label, key in PARTS],
        "",
        "Sensor ticks in the window (s):",
        "",
        "| sensor | ticks | with runs | median gap | median duration | P95 duration |",
        "|---|---|---|---|---|---|",
        *ticks,
        "",
        f"Configured sensor intervals: {', '.join(f'`{k}` {v} s' for k, v in intervals.items())}."
        f" `import sfdc_assets.definitions` in a fresh interpreter: {import_s:.2f} s (median"
        " of 3; every run process pays it once: runs use the in-process executor)."
        " Peak RSS: `dagster dev` main process"
        f" {rss[1] / 2**20:.0f} MiB, emulator {rss[2] / 2**20:.0f} MiB.",
        "",
        business,
        "",
        "Latency is measured from the tables after the run, never by polling the DuckDB file:"
        " commit = the event's `commitTimestamp` in raw; queryable = the materialization of"
        " `salesforce/current/opportunity` by the run whose apply wrote the change's scd2"
        " version (`_synced_at`, the apply's start, precedes it).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its section of docs/performance.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of traffic")
    parser.add_argument("--traffic", type=float, default=DEFAULT_TRAFFIC, help="changes/s")
    parser.add_argument("--scale", default="small", help="emulator seed size")
    parser.add_argument("--stamp-every", type=float, default=STAMP_EVERY_S)
    parser.add_argument("--workspace", default="workspace.yaml", help="code location(s)")
    parser.add_argument("--dir", help="keep the stack's files here (default: a temp dir)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    args = parser.parse_args(argv)
    # Quiet the libraries (alembic, dagster) the analysis imports; keep this module's progress.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)

    with contextlib.ExitStack() as cleanup:
        root = (
            Path(args.dir)
            if args.dir
            else Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        )
        root.mkdir(parents=True, exist_ok=True)
        stack = Stack(root, args.traffic, args.scale, args.workspace)
        import_s = import_seconds()
        try:
            stack.start()
            stack.wait_loaded()
            if not stack.cdc_sensors:
                raise SystemExit("the code location has no CDC sensor to measure")
            log.info("dagster dev loaded; CDC sensors: %s", stack.cdc_sensors)
            deadline = time.monotonic() + WARMUP_TIMEOUT_S
            warm_started = time.monotonic()
            objects = len(stack.objects())
            while True:
                done, active = stack.bootstrap_state()
                if done >= objects and not active and stack.latest_materialization():
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"not warm in {WARMUP_TIMEOUT_S} s: {done} of {objects} objects"
                        f" bootstrapped, {active} bootstrap run(s) active"
                    )
                time.sleep(5)
            warmup_s = time.monotonic() - warm_started
            started = time.time()
            ended = started + args.minutes * 60
            log.info("warm; measuring %.1f min of traffic", args.minutes)
            stop = threading.Event()
            with RssSampler((stack.procs[1].pid, stack.procs[0].pid)) as rss:
                stamps = stamp(stack.info_path, ended, args.stamp_every, stop)
                # Drain: wait until a run materialized after the window closed.
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while (stack.latest_materialization() or 0) < ended + 1:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(2)
            ticks = stack.ticks()
        finally:
            stack.stop()
        pairs, total_changes = changes(stack.warehouse, started, ended)
        res = attribute(pairs, run_times(stack.home, started - 600))
        body = render(
            args,
            res,
            total_changes,
            stamps,
            tick_stats(ticks, started, ended),
            stack.cdc_sensors,
            import_s,
            rss.peak,
            stamps_applied(stack.warehouse),
            started,
            ended,
            warmup_s,
            business_view(stack.warehouse, stack.home),
        )
    log.info("\n%s", body)
    if not args.no_doc:
        replace_section(HEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

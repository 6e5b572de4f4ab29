"""`make demo`: the local platform in one command.

Starts the Salesforce emulator (with live traffic) in the background, waits for its
handshake, writes the local environment to `<demo dir>/.env`, prints where everything is,
then runs `dagster dev` on workspace.yaml in the foreground. Ctrl-C stops both.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("demo")

# The emulator generates its seed data before it writes the handshake; "small" takes a few
# seconds, "medium" under a minute on a 2-core machine.
HANDSHAKE_TIMEOUT_S = 300
# The emulator generates ~730 days of history (sfdc_emulator.generator.HISTORY_DAYS).
DEMO_HISTORY_DAYS = 740

# The local Dagster instance: pools serialise what must not run concurrently (one raw
# step and one apply per object); one run per object and two Salesforce-reading runs
# (tagged sfdc/object) at a time; one CDC run per channel group at a time (the next
# tick's run waits instead of contending for the writer); one dbt build at a time (three
# due together would take 3 of the 4 run slots); threaded sensors (one channel's drain
# never delays another's); a 1 s run dequeue (default 5 s); the freshness daemon the
# stale-asset alert reads; retries; and run monitoring: a run whose worker died with the
# stack (stopped mid-run) is failed within 30 s instead of holding its object's run slot
# for ever (resources/run_launcher.py).
INSTANCE_YAML = """\
concurrency:
  pools:
    default_limit: 1
    granularity: op
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: sfdc/object
        value:
          applyLimitPerUniqueValue: true
        limit: 1
      - key: sfdc/object
        limit: 2
      - key: sfdc/channel_group
        value:
          applyLimitPerUniqueValue: true
        limit: 1
      - key: sfdc/lane
        value: dbt
        limit: 1
sensors:
  use_threads: true
  num_workers: 4
freshness:
  enabled: true
run_queue:
  dequeue_interval_seconds: 1
  dequeue_use_threads: true
run_retries:
  enabled: true
  max_retries: 2
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
telemetry:
  enabled: false
"""


# The local instance's run launcher (resources/run_launcher.py).
RUN_LAUNCHER_YAML = (
    "run_launcher:\n  module: resources.run_launcher\n  class: PrewarmedRunLauncher\n"
)


def instance_yaml_text(dagster_home: Path) -> str:
    """The local instance's dagster.yaml: INSTANCE_YAML; the event log that writes a
    range run's per-partition events in batches (resources/event_log.py), where Dagster's
    default SQLite one would keep them (`history/runs` under DAGSTER_HOME); and the run
    launcher that forks each run from a process with Dagster already imported
    (resources/run_launcher.py)."""
    runs = dagster_home.resolve() / "history" / "runs"
    return (
        INSTANCE_YAML
        + (
            "event_log_storage:\n"
            "  module: resources.event_log\n"
            "  class: BatchedSqliteEventLogStorage\n"
            "  config:\n"
            f"    base_dir: {json.dumps(str(runs))}\n"
        )
        + RUN_LAUNCHER_YAML
    )


def local_environment(demo_dir: Path, info_file: Path) -> dict[str, str]:
    """The environment variables of the local defaults (DESIGN §8)."""
    return {
        "SFDC_ENV": "local",
        "SFDC_EMULATOR_INFO": str(info_file),
        "WAREHOUSE_DUCKDB_PATH": str(demo_dir / "warehouse.duckdb"),
        "LANDING_URL": str(demo_dir / "landing"),
        "DAGSTER_HOME": str(demo_dir / "dagster_home"),
        # Partitions from where the emulator's ~2-year history starts, not objects.yaml's
        # 5 years: the bootstrap backfill then writes 3x fewer Dagster events.
        "SFDC_PARTITIONS_START": (
            dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DEMO_HISTORY_DAYS)
        ).isoformat(),
        # One planned event per run instead of one per partition and asset: without it a
        # 5-year single-run backfill spends minutes writing events before its step starts.
        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
        # A range run's materializations in batches of 500 (resources/event_log.py): ~1 ms
        # an event instead of ~20 ms on SQLite.
        "DAGSTER_EVENT_BATCH_SIZE": "500",
    }


def wait_for_handshake(path: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> dict:
    """Wait until the emulator wrote its handshake (or died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the emulator exited with code {proc.returncode}; see its log above")
        if path.exists():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # half-written; the emulator writes it atomically, but be tolerant
        time.sleep(0.2)
    raise SystemExit(f"the emulator wrote no handshake to {path} within {timeout_s:.0f} s")


def _restore_sigint() -> None:
    # `dagster dev` ignores SIGTERM when SIGINT was inherited as ignored (background shells).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    """Run the demo until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=".demo", help="where state, logs and .env go")
    parser.add_argument("--scale", default="small", help="emulator data scale")
    parser.add_argument("--traffic", default="2", help="emulator changes per second")
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    parser.add_argument("--no-dagster", action="store_true", help="run only the emulator")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    demo_dir = Path(args.dir).resolve()
    demo_dir.mkdir(parents=True, exist_ok=True)
    info_file = demo_dir / "emulator.json"
    info_file.unlink(missing_ok=True)
    env = {**os.environ, **local_environment(demo_dir, info_file)}
    dagster_home = Path(env["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text(instance_yaml_text(dagster_home))

    emulator_log = (demo_dir / "emulator.log").open("ab")
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sfdc_emulator",
            "serve",
            "--state-dir",
            str(demo_dir / "org"),
            "--scale",
            args.scale,
            "--traffic",
            args.traffic,
            "--info-file",
            str(info_file),
        ],
        stdout=emulator_log,
        stderr=subprocess.STDOUT,
        preexec_fn=_restore_sigint,
    )
    procs = [emulator]
    groups: list[int] = []  # process groups of their own, led by these pids
    try:
        info = wait_for_handshake(info_file, emulator, HANDSHAKE_TIMEOUT_S)
        env_file = demo_dir / ".env"
        env_file.write_text(
            "".join(f"{k}={v}\n" for k, v in local_environment(demo_dir, info_file).items())
        )
        log.info("Salesforce emulator (REST/Bulk): %s", info["instance_url"])
        log.info("Pub/Sub API (gRPC):             %s", info["pubsub_target"])
        log.info("emulator handshake:             %s", info_file)
        log.info("emulator log:                   %s", demo_dir / "emulator.log")
        log.info("environment:                    %s", env_file)
        log.info(
            "drive the org: .venv/bin/sfdc-emulator admin --info-file %s update "
            "Opportunity --count 10",
            info_file,
        )
        if args.no_dagster:
            log.info("emulator running; Ctrl-C to stop")
            emulator.wait()
            return emulator.returncode or 0
        log.info("Dagster UI:                     http://127.0.0.1:%d", args.port)

        log.info(
            "what happens: sensor sfdc_bootstrap backfills each object (one at a time, "
            "a few minutes in all), cdc_* sensors apply live changes every 15-60 s, "
            "sfdc_polling re-reads Task/Event/User every 15 min, "
            "%s once bootstrapped",
            _dbt_cadence(),
        )
        log.info(
            "a query to try (Closed Won deals, live):  .venv/bin/python scripts/query.py  "
            '(or pass any SQL: scripts/query.py "SELECT count(*) FROM sfdc.opportunity")'
        )
        dagster = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(args.port)],
            env=env,
            preexec_fn=_restore_sigint,
            # Its own process group: run workers it launches after stop() lists the
            # descendants are still in it (they would hold the DuckDB file and our stdout).
            process_group=0,
        )
        procs.append(dagster)
        groups.append(dagster.pid)
        return dagster.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(procs, groups)


def _dbt_cadence() -> str:
    """How often dbt builds, as the settings say (schedules per domain, else one sensor)."""
    from sfdc_assets.objects import load_config

    settings = load_config().settings
    domains = settings.dbt.domains
    if domains:
        every = ", ".join(f"dbt_{name} every {minutes} min" for name, minutes in domains.items())
        return f"dbt builds the marts per domain ({every})"
    return f"dbt_refresh builds the marts every {settings.dbt_refresh_minutes} min"


def stop(
    procs: list[subprocess.Popen[bytes]], groups: Sequence[int] = (), grace_s: float = 15.0
) -> None:
    """Stop the processes and whatever they started, within about twice `grace_s`.

    `dagster dev` can exit before its code server and in-flight run workers (a bootstrap
    backfill writing events) do; those would keep the DuckDB file locked. A run worker that
    gets SIGTERM interrupts its run (Dagster maps it to SIGINT); the engine's ledger makes an
    interrupted apply safe to run again, so there is no reason to wait for it to finish.
    """
    import psutil

    descendants: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants += psutil.Process(proc.pid).children(recursive=True)
    started = time.monotonic()
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    deadline = started + grace_s
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    # Whatever is still running now gets SIGTERM at once, not after the others finished.
    alive = [p for p in descendants if p.is_running()]
    for leftover in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for leftover in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _stop_groups(list(groups), grace_s)
    log.info("stopped in %.1f s", time.monotonic() - started)


def _stop_groups(groups: list[int], grace_s: float) -> None:
    """SIGTERM, then SIGKILL, whatever is left in the process groups `groups`.

    A run worker launched between listing the descendants and `dagster dev` exiting is
    reparented to init, so only its process group still finds it (found when the demo
    test's pipe stayed open 90 s after the demo had stopped, under load).
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pending = []
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
                pending.append(pgid)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + grace_s
        while pending and time.monotonic() < deadline:
            pending = [pgid for pgid in pending if _group_alive(pgid)]
            time.sleep(0.2)
        if not pending:
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())

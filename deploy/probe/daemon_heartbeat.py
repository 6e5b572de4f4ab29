"""External probe: is the Dagster daemon alive? Runs outside the daemon, on a schedule.

    python deploy/probe/daemon_heartbeat.py [--max-age-seconds 300]

Every alert of the platform (Slack sensors, freshness, run failures) is evaluated by the
daemon; when the daemon dies, nothing reports it. This probe reads the daemons' heartbeats
from the instance's run storage (`DAGSTER_HOME`'s dagster.yaml: Postgres in production,
the same storage the daemon writes) and fails when a required daemon (sensors, run queue,
run monitoring, ...) has not beaten within `--max-age-seconds`. On failure it exits 1
(the Kubernetes CronJob of deploy/probe/cronjob.yaml shows a failed Job to the cluster's
monitoring) and, if `SLACK_WEBHOOK_URL` is set, posts the alert itself.

Prints one JSON line: each required daemon's heartbeat age in seconds (null: never).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_MAX_AGE_SECONDS = 300


def heartbeat_ages(instance: Any, now: float | None = None) -> dict[str, float | None]:
    """Seconds since each required daemon's last heartbeat (None: none recorded)."""
    now = time.time() if now is None else now
    beats = instance.get_daemon_heartbeats()
    return {
        daemon: (round(now - beats[daemon].timestamp, 1) if daemon in beats else None)
        for daemon in sorted(instance.get_required_daemon_types())
    }


def stale(ages: Mapping[str, float | None], max_age: float) -> list[str]:
    """The daemons whose heartbeat is missing or older than `max_age`."""
    return [d for d, age in ages.items() if age is None or age > max_age]


def _post_slack(url: str, text: str) -> None:
    import requests

    # A failed post must not hide the probe's own exit code: report and go on.
    try:
        requests.post(url, json={"text": text}, timeout=10).raise_for_status()
    except requests.RequestException as e:
        sys.stderr.write(f"Slack webhook post failed: {type(e).__name__}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Probe once; exit 0 when every required daemon is alive, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-age-seconds", type=float, default=DEFAULT_MAX_AGE_SECONDS)
    args = parser.parse_args(argv)
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        ages = heartbeat_ages(instance)
    dead = stale(ages, args.max_age_seconds)
    sys.stdout.write(json.dumps({"heartbeat_age_seconds": ages, "stale": dead}) + "\n")
    if not dead:
        return 0
    text = (
        f"Dagster daemon down: no heartbeat from {', '.join(dead)} within "
        f"{int(args.max_age_seconds)} s. No sensor, alert or queued run works until it is "
        "back: docs/operations.md, runbook 'Dead Dagster daemon'."
    )
    sys.stderr.write(text + "\n")
    url = os.environ.get("SLACK_WEBHOOK_URL")
    if url:
        _post_slack(url, text)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Jobs that tests/resources/test_run_launcher.py launches: a module of its own, so a run
worker imports only this (and what the zygote preloaded)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import dagster as dg

# Where the ops write what they saw (the test sets it).
REPORT_ENV = "LAUNCHER_TEST_REPORT"


@dg.op
def report_process() -> None:
    """The run worker's pid, its parent, and whether dagster_dbt was already imported."""
    Path(os.environ[REPORT_ENV]).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "dagster_dbt_loaded": "dagster_dbt" in sys.modules,
            }
        )
    )


@dg.job(executor_def=dg.in_process_executor)
def report_job() -> None:
    report_process()


@dg.op
def wait_for_cancel() -> None:
    """Signal that it started, then wait (a run terminated while it waits)."""
    Path(os.environ[REPORT_ENV]).write_text(json.dumps({"pid": os.getpid()}))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.1)


@dg.job(executor_def=dg.in_process_executor)
def waiting_job() -> None:
    wait_for_cancel()

"""Run priority (sfdc_assets/priority.py): background runs yield the CPU to CDC runs.

The runs execute in a child process: lowering a priority cannot be undone without
privileges, and must not slow the rest of the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest

from sfdc_assets.keys import GROUP_TAG, SOURCE_TAG
from sfdc_assets.priority import (
    BACKGROUND_NICE_ENV,
    DEFAULT_BACKGROUND_NICE,
    MAX_NICE,
    background_nice,
    is_foreground,
    prioritized_in_process_executor,
)

# The child process's whole job: run `priority_job` with the tags in argv[1] on a real
# (temporary) instance; the op writes what it saw to REPORT_ENV's file.
_CHILD = """
import json, sys
import dagster as dg
from tests.sfdc_assets.test_priority import priority_job
with dg.instance_for_test() as instance:
    result = dg.execute_job(
        dg.reconstructable(priority_job), instance=instance, tags=json.loads(sys.argv[1])
    )
    assert result.success
"""
REPORT_ENV = "PRIORITY_TEST_REPORT"


@dg.op
def report_priority() -> None:
    """Niceness of the step's thread, of a thread it starts, and of a process it starts."""
    seen: dict[str, int] = {"step": os.getpriority(os.PRIO_PROCESS, 0)}

    def in_thread() -> None:
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, 0)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"],
        capture_output=True,
        text=True,
        check=True,
    )
    seen["process"] = int(child.stdout)
    with open(os.environ[REPORT_ENV], "w") as out:
        json.dump(seen, out)


@dg.job(executor_def=prioritized_in_process_executor)
def priority_job() -> None:
    report_priority()


def _run(tmp_path: Path, tags: dict[str, str], nice: str | None = None) -> dict[str, int]:
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != BACKGROUND_NICE_ENV}
    env[REPORT_ENV] = str(report)
    if nice is not None:
        env[BACKGROUND_NICE_ENV] = nice
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(tags)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(report.read_text())


def _expected(increment: int) -> int:
    return min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, 0) + increment)


def test_a_background_run_lowers_its_step_threads_and_children(tmp_path: Path) -> None:
    seen = _run(tmp_path, {SOURCE_TAG: "rebackfill"})
    want = _expected(DEFAULT_BACKGROUND_NICE)
    assert seen == {"step": want, "thread": want, "process": want}


def test_a_cdc_micro_batch_run_keeps_normal_priority(tmp_path: Path) -> None:
    seen = _run(tmp_path, {GROUP_TAG: "revenue", SOURCE_TAG: "cdc"})
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen == {"step": base, "thread": base, "process": base}


@pytest.mark.parametrize(("setting", "increment"), [("3", 3), ("0", 0)])
def test_the_increment_follows_the_setting(tmp_path: Path, setting: str, increment: int) -> None:
    seen = _run(tmp_path, {}, nice=setting)
    assert seen["step"] == _expected(increment)


def test_background_nice_defaults_and_bounds() -> None:
    assert background_nice({}) == DEFAULT_BACKGROUND_NICE
    assert background_nice({BACKGROUND_NICE_ENV: " "}) == DEFAULT_BACKGROUND_NICE
    assert background_nice({BACKGROUND_NICE_ENV: "0"}) == 0
    assert background_nice({BACKGROUND_NICE_ENV: "19"}) == 19


@pytest.mark.parametrize("bad", ["-1", "20", "ten", "2.5"])
def test_a_bad_setting_names_the_variable_and_the_range(bad: str) -> None:
    with pytest.raises(ValueError, match=rf"{BACKGROUND_NICE_ENV}=.*from 0 .* to 19"):
        background_nice({BACKGROUND_NICE_ENV: bad})


def test_only_channel_group_runs_are_foreground() -> None:
    assert is_foreground({GROUP_TAG: "revenue"})
    assert not is_foreground({SOURCE_TAG: "cdc"})
    assert not is_foreground({})


def test_the_code_location_runs_every_job_with_it() -> None:
    from sfdc_assets.definitions import defs

    jobs = [j for j in defs.resolve_all_job_defs() if not j.name.startswith("__")]
    implicit = defs.resolve_implicit_global_asset_job_def()
    for job in [*jobs, implicit]:
        assert job.executor_def is prioritized_in_process_executor, job.name

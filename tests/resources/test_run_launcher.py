"""The pre-warmed run launcher (resources/run_launcher.py), with real runs on a real
instance: each run in its own process, forked from a zygote that preloaded Dagster."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

# Waiting for a run to finish: there is no public helper.
from dagster._core.test_utils import poll_for_finished_run  # noqa: TID251

from resources.run_launcher import PID_TAG, PrewarmedRunLauncher
from tests.resources import launcher_jobs
from tests.resources.launcher_jobs import REPORT_ENV

LAUNCHER = {"module": "resources.run_launcher", "class": "PrewarmedRunLauncher"}


@pytest.fixture
def report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "report.json"
    monkeypatch.setenv(REPORT_ENV, str(path))  # the zygote and its runs inherit it
    return path


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(overrides={"run_launcher": LAUNCHER}) as instance:
        yield instance
        instance.run_launcher.dispose()


def _new_run(instance: dg.DagsterInstance, job: dg.JobDefinition) -> str:
    origin = dg.reconstructable(job).get_python_origin()
    return instance.create_run_for_job(job_def=job, job_code_origin=origin).run_id


def _launch(instance: dg.DagsterInstance, job: dg.JobDefinition) -> str:
    run_id = _new_run(instance, job)
    instance.launch_run(run_id, workspace=None)  # type: ignore[arg-type]
    return run_id


def _wait_for(path: Path, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, "the run never started its op"
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_a_run_executes_in_a_child_of_the_warm_zygote(
    instance: dg.DagsterInstance, report: Path
) -> None:
    assert isinstance(instance.run_launcher, PrewarmedRunLauncher)
    run_id = _launch(instance, launcher_jobs.report_job)
    run = poll_for_finished_run(instance, run_id, timeout=120)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    seen = json.loads(report.read_text())
    # Its own process, whose parent is the zygote (not this process), with dagster_dbt
    # already imported although the job's module never imports it: the zygote's preload.
    assert seen["pid"] == int(run.tags[PID_TAG])
    assert seen["ppid"] not in (os.getpid(), seen["pid"])
    assert seen["dagster_dbt_loaded"] is True
    # The run's events went to the instance, as with Dagster's own launcher.
    assert instance.get_records_for_run(run_id).records

    # A second run comes from the same zygote.
    report.unlink()
    second = _launch(instance, launcher_jobs.report_job)
    assert poll_for_finished_run(instance, second, timeout=120).status.value == "SUCCESS"
    assert json.loads(report.read_text())["ppid"] == seen["ppid"]


def test_a_dead_zygote_is_replaced_at_the_next_launch(
    instance: dg.DagsterInstance, report: Path
) -> None:
    first = _launch(instance, launcher_jobs.report_job)
    assert poll_for_finished_run(instance, first, timeout=120).status.value == "SUCCESS"
    zygote = json.loads(report.read_text())["ppid"]
    report.unlink()
    os.kill(zygote, signal.SIGKILL)
    second = _launch(instance, launcher_jobs.report_job)
    assert poll_for_finished_run(instance, second, timeout=120).status.value == "SUCCESS"
    assert json.loads(report.read_text())["ppid"] != zygote


def test_terminate_cancels_the_run(instance: dg.DagsterInstance, report: Path) -> None:
    run_id = _launch(instance, launcher_jobs.waiting_job)
    _wait_for(report)
    assert instance.run_launcher.terminate(run_id)
    run = poll_for_finished_run(instance, run_id, timeout=60)
    assert run.status == dg.DagsterRunStatus.CANCELED


def test_run_monitoring_sees_a_live_worker_and_a_vanished_one(
    instance: dg.DagsterInstance, report: Path
) -> None:
    from dagster._core.launcher import WorkerStatus  # noqa: TID251

    launcher = instance.run_launcher
    assert launcher.supports_check_run_worker_health
    run_id = _launch(instance, launcher_jobs.waiting_job)
    _wait_for(report)
    run = instance.get_run_by_id(run_id)
    assert run is not None
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    # The worker dies without a word (the stack stopped mid-run): the run stays STARTED,
    # and only the health check can tell.
    os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING:
        assert time.monotonic() < deadline, "a killed worker still looks alive"
        time.sleep(0.1)
    assert launcher.check_run_worker_health(run).status == WorkerStatus.NOT_FOUND
    # A pid the system gave to another program is not the run's worker either.
    other = run.with_tags({**run.tags, PID_TAG: str(os.getpid())})
    assert launcher.check_run_worker_health(other).status == WorkerStatus.NOT_FOUND


def test_a_changed_preloaded_module_starts_a_new_zygote(
    tmp_path: Path, report: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = tmp_path / "pkg" / "launcher_probe.py"
    probe.parent.mkdir()
    probe.write_text("VALUE = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(probe.parent))
    overrides = {"run_launcher": {**LAUNCHER, "config": {"preload": ["dagster", "launcher_probe"]}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        try:
            first = _launch(instance, launcher_jobs.report_job)
            assert poll_for_finished_run(instance, first, timeout=120).status.value == "SUCCESS"
            zygote_before = json.loads(report.read_text())["ppid"]
            report.unlink()
            os.utime(probe, ns=(time.time_ns(), time.time_ns() + 10**9))
            second = _launch(instance, launcher_jobs.report_job)
            assert poll_for_finished_run(instance, second, timeout=120).status.value == "SUCCESS"
            assert json.loads(report.read_text())["ppid"] != zygote_before
        finally:
            instance.run_launcher.dispose()


def test_a_preload_that_starts_threads_falls_back_to_the_default_launcher(
    report: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # polars starts its thread pool at import: forking after it is unsafe, so no zygote.
    overrides = {"run_launcher": {**LAUNCHER, "config": {"preload": ["polars"]}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        run_id = _new_run(instance, launcher_jobs.report_job)
        # The default launcher needs the code server's workspace, which this test has not:
        # its own error shows the fallback was taken.
        with (
            caplog.at_level(logging.WARNING, logger="resources.run_launcher"),
            pytest.raises(Exception, match="requires a workspace"),
        ):
            instance.launch_run(run_id, workspace=None)  # type: ignore[arg-type]
        assert "threads after preloading ['polars']" in caplog.text
        assert not report.exists()


def test_the_local_instance_launches_runs_with_it(tmp_path: Path) -> None:
    from scripts.demo import instance_yaml_text

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml_text(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_launcher, PrewarmedRunLauncher)
        # ...and its monitoring daemon fails a run whose worker is gone.
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_resume_run_attempts == 0

"""A Bulk read does not hold the DuckDB file's single-writer lock while Salesforce works.

Locally every Dagster run is a process and DuckDB lets one process at a time open the file
for writing: a poll that held it through its Bulk read (tens of seconds at production
shape) made every CDC run's steps wait behind it (issue 11).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sfdc_assets.harness import Platform, start_platform

pytestmark = pytest.mark.slow

SLOW_BULK_S = 4.0
OPEN_FOR_WRITING = "import duckdb, sys; duckdb.connect(sys.argv[1]).close()"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from start_platform(tmp_path_factory.mktemp("writer_lock"))


def _bulk_job_waiting(platform: Platform) -> bool:
    return not platform.store.faults.snapshot()["slow"]["bulk"]


@pytest.mark.parametrize(
    "raw_config",
    [{}, {"reconcile": "full"}],
    ids=["bulk-read-of-a-day", "full-reconciliation-listing"],
)
def test_another_process_can_write_the_file_while_a_bulk_read_waits(
    platform: Platform, raw_config: dict[str, Any]
) -> None:
    path = str(platform.tmp / "warehouse.duckdb")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    platform.store.faults.slow("bulk", SLOW_BULK_S)
    outcome: dict[str, Any] = {}
    run = threading.Thread(
        target=lambda: outcome.update(
            result=platform.materialize(["Task"], partition_key=today, raw_config=raw_config)
        )
    )
    run.start()
    try:
        deadline = time.monotonic() + 60
        while not _bulk_job_waiting(platform) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _bulk_job_waiting(platform), "the run never started its Bulk job"
        # The run has described Task and created its tables (the file exists) and now
        # waits SLOW_BULK_S on the Bulk job: a second process must get the write lock.
        opened = subprocess.run(
            [sys.executable, "-c", OPEN_FOR_WRITING, path],
            capture_output=True,
            text=True,
            timeout=SLOW_BULK_S,
        )
        assert opened.returncode == 0, opened.stderr
    finally:
        run.join(timeout=120)
    assert outcome["result"].success
    rows = platform.warehouse().query('SELECT count(*) FROM "sfdc_raw"."task"')
    assert rows[0][0] > 0

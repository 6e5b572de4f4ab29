"""A Bulk read or a reconciliation does not hold the DuckDB file's single-writer lock while
Salesforce works.

Locally every Dagster run is a process and DuckDB lets one process at a time open the file
for writing: a poll that held it through its Bulk read (tens of seconds at production
shape) made every CDC run's steps wait behind it (issue 11).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sfdc_assets.harness import Platform, start_platform

pytestmark = pytest.mark.slow

SLOW_BULK_S = 4.0
OPEN_FOR_WRITING = "import duckdb, sys; duckdb.connect(sys.argv[1]).close()"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from start_platform(tmp_path_factory.mktemp("writer_lock"))


def _touch_tasks(platform: Platform, ids: list[str] | None = None, subject: str = "touched") -> str:
    """Update a few Tasks (`ids`, default the first five live ones) now in Salesforce and
    return today's partition key (emulator time).

    The tiny org holds ~60 Tasks over two years: in the first hours of a UTC day its
    window is usually empty, and an empty window plans no Bulk job at all. The wait: a
    run that has no server time yet reads up to its local clock less 1 s, whole seconds."""
    from sfdc_emulator.store import Mutation

    if ids is None:
        tasks = platform.store.truth("Task").to_pylist()
        ids = [t["Id"] for t in tasks if not t["IsDeleted"]][:5]
    platform.store.commit([Mutation("update", "Task", rid, {"Subject": subject}) for rid in ids])
    time.sleep(2.1)
    return platform.store.clock.now().date().isoformat()


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
    today = _touch_tasks(platform)
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


SLOW_REST_S = 3.0
PROBE_FOR_S = 2.5
# Tries to open the file for writing every 50 ms for PROBE_FOR_S; exit 0 once it could.
PROBE = """
import sys, time, duckdb
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        duckdb.connect(sys.argv[1]).close()
        sys.exit(0)
    except duckdb.IOException:
        time.sleep(0.05)
sys.exit(1)
"""


def _listing_manifests(platform: Platform) -> set[Path]:
    return set((platform.tmp / "landing" / "_manifests" / "backfill" / "Task").rglob("*.json"))


def test_another_process_can_write_the_file_while_a_reconciliation_rereads(
    platform: Platform,
) -> None:
    """After its listing, a full reconciliation re-reads what it found differing by REST (at
    production shape: thousands of ids, minutes of calls). It compares with the file open,
    then lets go of it for getDeleted and the re-reads."""
    path = str(platform.tmp / "warehouse.duckdb")
    today = _touch_tasks(platform)
    first = platform.materialize(["Task"], partition_key=today)
    assert first.success
    wh = platform.warehouse()
    try:
        (missed,) = wh.query('SELECT id FROM "sfdc"."task" WHERE NOT "is_deleted" LIMIT 1')[0]
    finally:
        wh.close()
    # A change the sync has not read: the listing's newer SystemModstamp marks it stale.
    _touch_tasks(platform, [missed], subject="missed by the sync")
    before = _listing_manifests(platform)
    outcome: dict[str, Any] = {}
    run = threading.Thread(
        target=lambda: outcome.update(
            result=platform.materialize(
                ["Task"], partition_key=today, raw_config={"reconcile": "full"}
            )
        )
    )
    run.start()
    try:
        deadline = time.monotonic() + 60
        while _listing_manifests(platform) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _listing_manifests(platform) != before, "the run never finished its listing"
        # The listing is landed; the next Salesforce calls are getDeleted and the re-read.
        platform.store.faults.slow("rest", SLOW_REST_S, count=2)
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, path, str(PROBE_FOR_S)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 0, f"the file stayed locked: {probe.stderr[-500:]}"
    finally:
        run.join(timeout=120)
    assert outcome["result"].success
    assert not platform.store.faults.snapshot()["slow"]["rest"], "no REST call was slowed"
    wh = platform.warehouse()
    try:
        (subject,) = wh.query('SELECT subject FROM "sfdc"."task" WHERE id = ?', [missed])[0]
    finally:
        wh.close()
    assert subject == "missed by the sync", "the reconciliation did not re-read the Task"

"""Daily Bulk allocations against the emulator over real HTTPS: a backfill stopped by the
job or result-size allocation keeps what landed and, the next day, lands the rest once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from resources.landing import LandingStore
from resources.salesforce.bulk import BulkOptions
from resources.salesforce.errors import BulkAllocationError
from resources.salesforce.resource import SalesforceClient
from tests.resources.salesforce.conftest import Emulator, start_emulator, stop_emulator

START = datetime(2000, 1, 1, tzinfo=UTC)
END = datetime(2100, 1, 1, tzinfo=UTC)
# 6,000 Tasks: ~1.9 MB of CSV, enough for whole-MB accounting; ~1,500 rows per piece.
TASKS = 6000
OPTIONS = BulkOptions(page_size=500, max_rows_per_job=1500, lag=timedelta(0), poll_initial_s=0.05)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = start_emulator(tmp_path_factory.mktemp("emulator"), scale=TASKS)
    yield emu
    stop_emulator(emu)


def future() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


def everything_landed(store: LandingStore) -> pl.DataFrame:
    frames = [store.read(m) for m in store.manifests(kind="backfill", obj="Task")]
    return pl.concat(frames, how="vertical")


def assert_truth_landed_once(emulator: Emulator, store: LandingStore) -> None:
    got = everything_landed(store)
    truth = emulator.store.truth("Task")
    assert got.height == truth.num_rows == got["Id"].n_unique()
    assert set(got["Id"]) == set(truth.column("Id").to_pylist())


def test_org_job_allocation_stops_the_backfill_and_the_next_day_lands_the_rest_once(
    emulator: Emulator, client: SalesforceClient, tmp_path: Path
) -> None:
    store = LandingStore(str(tmp_path / "landing"))
    used = emulator.admin("fail", target="limit", kind="bulk-jobs")["used"]
    emulator.admin("fail", target="limit", kind="bulk-jobs", max=used + 2)
    with pytest.raises(BulkAllocationError) as stopped:
        client.bulk(store, OPTIONS).backfill("Task", START, END, now=future())
    err = stopped.value
    assert err.limit == "DailyBulkV2QueryJobs" and err.object == "Task"
    assert err.landed == 2 and err.planned >= 3
    assert "2 of" in str(err) and "rolling 24 h" in str(err)
    assert len(list(store.manifests(kind="backfill", obj="Task"))) == 2  # kept

    emulator.admin("advance-clock", duration="24h")  # the next day: the jobs have rolled off
    nxt = emulator.client()
    try:
        result = nxt.bulk(store, OPTIONS).backfill("Task", START, END, now=future())
    finally:
        nxt.close()
    assert len(result.landed_before) == 2  # skipped, not read again
    assert len(result.manifests) == err.planned
    assert nxt.governor.used["bulk_jobs"] == err.planned - 2
    assert_truth_landed_once(emulator, store)


def test_governor_refusal_of_the_prefetched_job_lets_the_current_piece_land(
    emulator: Emulator, client: SalesforceClient, tmp_path: Path
) -> None:
    store = LandingStore(str(tmp_path / "landing"))
    # An org with 10 jobs a day: this run may create 1 (its 10% share).
    client.governor.observe_limits({"DailyBulkV2QueryJobs": {"Max": 10, "Remaining": 10}})
    with pytest.raises(BulkAllocationError) as stopped:
        client.bulk(store, OPTIONS).backfill("Task", START, END, now=future())
    assert stopped.value.limit == "DailyBulkV2QueryJobs" and stopped.value.landed == 1
    assert client.governor.used["bulk_jobs"] == 1

    nxt = emulator.client()
    try:
        result = nxt.bulk(store, OPTIONS).backfill("Task", START, END, now=future())
    finally:
        nxt.close()
    assert len(result.landed_before) == 1
    assert_truth_landed_once(emulator, store)


def test_result_megabytes_are_charged_like_the_org_counts_them(
    emulator: Emulator, client: SalesforceClient, tmp_path: Path
) -> None:
    store = LandingStore(str(tmp_path / "landing"))
    emulator.admin("advance-clock", duration="24h")  # earlier jobs roll off the 24 h
    before = client.rest.limits()["DailyBulkV2QueryFileStorageMB"]
    assert before["Remaining"] == before["Max"]
    options = BulkOptions(page_size=500, lag=timedelta(0), poll_initial_s=0.05)
    result = client.bulk(store, options).backfill("Task", START, END, now=future())
    after = client.rest.limits()["DailyBulkV2QueryFileStorageMB"]
    assert len(result.jobs) == 1
    org_mb = before["Remaining"] - after["Remaining"]
    assert org_mb >= 1 and client.governor.used["bulk_mb"] == org_mb
    assert client.governor.snapshot()["bulk_mb"] == org_mb


def test_result_megabyte_refusal_mid_download_resumes_the_same_job_at_its_locator(
    emulator: Emulator, client: SalesforceClient, tmp_path: Path
) -> None:
    store = LandingStore(str(tmp_path / "landing"))
    # 10 MB a day: this run may download 1 MB (its 10% share), under 2 MB of results.
    client.governor.observe_limits({"DailyBulkV2QueryFileStorageMB": {"Max": 10, "Remaining": 10}})
    options = BulkOptions(page_size=500, lag=timedelta(0), poll_initial_s=0.05)
    with pytest.raises(BulkAllocationError) as stopped:
        client.bulk(store, options).backfill("Task", START, END, now=future())
    assert stopped.value.limit == "DailyBulkV2QueryFileStorageMB"
    assert stopped.value.landed == 0 and stopped.value.planned == 1
    assert client.governor.used["bulk_mb"] == 1
    assert list(store.manifests()) == []  # the piece is half read: nothing half-visible

    nxt = emulator.client()
    try:
        result = nxt.bulk(store, options).backfill("Task", START, END, now=future())
    finally:
        nxt.close()
    assert result.resumed_jobs == result.jobs and nxt.governor.used["bulk_jobs"] == 0
    assert_truth_landed_once(emulator, store)

"""Bulk backfill against the emulator over real HTTPS: truth, idempotent re-backfill, resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from resources.landing import LandingStore
from resources.salesforce.bulk import BulkOptions, BulkReader
from resources.salesforce.resource import SalesforceClient
from resources.salesforce.to_changes import snapshot_batch
from tests.resources.salesforce.conftest import OBJECTS, Emulator

START = datetime(2000, 1, 1, tzinfo=UTC)
END = datetime(2100, 1, 1, tzinfo=UTC)
# No live traffic runs in this module, so reading up to "now" is consistent.
OPTIONS = BulkOptions(page_size=9, max_rows_per_job=40, lag=timedelta(0), poll_initial_s=0.05)


def future() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


def landed(store: LandingStore, result) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    return pl.concat([store.read(m) for m in result.manifests], how="vertical")


def comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """Both sides as text in a common form (UTC naive datetimes, plain numbers)."""
    out = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            col = (
                col.dt.replace_time_zone(None).dt.cast_time_unit("ms")
                if dtype.time_zone
                else col.dt.cast_time_unit("ms")
            )
        elif isinstance(dtype, pl.Decimal) or dtype in (pl.Float32, pl.Float64):
            col = col.cast(pl.Float64).round(6)
        out.append(col.cast(pl.String).alias(name))
    return frame.select(out).sort("Id")


@pytest.mark.parametrize("obj", OBJECTS)
def test_full_backfill_of_every_object_equals_truth(
    emulator: Emulator, client: SalesforceClient, tmp_path: Path, obj: str
) -> None:
    store = LandingStore(str(tmp_path / "landing"))
    result = client.bulk(store, OPTIONS).backfill(obj, START, END, now=future())
    got = landed(store, result)
    truth = pl.from_arrow(emulator.store.truth(obj))
    assert isinstance(truth, pl.DataFrame)
    columns = [c for c in got.columns if not c.startswith("_")]
    assert set(columns) <= set(truth.columns)
    assert got.height == truth.height and got["Id"].n_unique() == got.height
    assert comparable(got.select(columns)).equals(comparable(truth.select(columns)))
    # Every row carries the job's creation time (R), from the org's clock.
    assert got["_observed_at_ms"].null_count() == 0


def test_large_window_is_split_by_time_without_count_or_overlap(
    emulator: Emulator, client: SalesforceClient, tmp_path: Path
) -> None:
    store = LandingStore(str(tmp_path / "landing"))
    emulator.soql_served()
    result = client.bulk(store, OPTIONS).backfill("OpportunityLineItem", START, END, now=future())
    served = emulator.soql_served()
    got = landed(store, result)
    assert len(result.jobs) >= 2  # 60 rows, 40 per job
    assert got["Id"].n_unique() == got.height == 60
    assert client.governor.used["bulk_jobs"] == len(result.jobs)
    # Planned from SystemModstamp edges and the record count: no COUNT() reached the org.
    assert served and not [q for q in served if "COUNT(" in q.upper()]
    windows = [m.meta["window"] for m in result.manifests]
    assert len(set(windows)) == len(windows)  # one job per time piece
    for m in result.manifests:  # each piece holds only rows of its own time range
        part = store.read(m)
        start, end = (datetime.strptime(t, "%Y%m%dT%H%M%S") for t in m.meta["window"].split("-"))
        stamps = part["SystemModstamp"].dt.replace_time_zone(None)
        assert stamps.min() >= start and stamps.max() < end


def test_empty_window_creates_no_bulk_job(
    emulator: Emulator, client: SalesforceClient, tmp_path: Path
) -> None:
    store = LandingStore(str(tmp_path / "landing"))
    emulator.soql_served()
    empty_start, empty_end = datetime(2001, 1, 1, tzinfo=UTC), datetime(2001, 2, 1, tzinfo=UTC)
    result = client.bulk(store, OPTIONS).backfill("Task", empty_start, empty_end, now=future())
    assert result.jobs == [] and result.manifests == []
    assert client.governor.used["bulk_jobs"] == 0
    served = emulator.soql_served()
    assert len(served) == 1 and "ORDER BY SystemModstamp ASC LIMIT 1" in served[0]


def test_re_backfill_of_a_sub_window_changes_nothing(
    client: SalesforceClient, tmp_path: Path
) -> None:
    from sync_engine.spec import ObjectSpec

    store = LandingStore(str(tmp_path / "landing"))
    reader = client.bulk(store, OPTIONS)
    full = landed(store, reader.backfill("Opportunity", START, END, now=future()))
    stamps = full["SystemModstamp"].sort()
    lo = stamps[len(stamps) // 4].replace(microsecond=0)
    hi = stamps[3 * len(stamps) // 4].replace(microsecond=0)
    sub = landed(store, reader.backfill("Opportunity", lo, hi, now=future()))
    assert 0 < sub.height < full.height
    assert sub["SystemModstamp"].min() >= lo and sub["SystemModstamp"].max() < hi
    spec = ObjectSpec.from_describe(
        client.conn.call(lambda sf: sf.Opportunity.describe(), what="describe")
    )
    full_ids = set(snapshot_batch(spec, full).column("change_id").to_pylist())
    sub_ids = set(snapshot_batch(spec, sub).column("change_id").to_pylist())
    # Same records, same content, same version -> the same change ids: nothing new to apply.
    assert sub_ids <= full_ids


def test_killed_bulk_download_resumes_from_job_and_locator(
    client: SalesforceClient, emulator: Emulator, tmp_path: Path
) -> None:
    store = LandingStore(str(tmp_path / "landing"))
    options = BulkOptions(page_size=7, max_rows_per_job=10_000, lag=timedelta(0))
    first = client.bulk(store, options)

    def die(job_id: str, part: int) -> None:
        if part == 2:
            raise KeyboardInterrupt("killed mid-download")

    first.after_part = die
    with pytest.raises(KeyboardInterrupt):
        first.backfill("Contact", START, END, now=future())
    jobs_before = client.governor.used["bulk_jobs"]
    assert list(store.manifests()) == []  # nothing half-visible

    second = BulkReader(client.conn, store, rest=client.rest, options=options)
    result = second.backfill("Contact", START, END, now=future())
    assert result.resumed_jobs == result.jobs and len(result.jobs) == 1
    assert client.governor.used["bulk_jobs"] == jobs_before  # no new job
    got = landed(store, result)
    assert got.height == emulator.store.truth("Contact").num_rows == got["Id"].n_unique()
    assert result.manifests[0].meta["resumed"] is True


def test_backfill_without_gzip_lands_the_same_rows(
    client: SalesforceClient, tmp_path: Path
) -> None:
    frames = []
    for gzip in (True, False):
        store = LandingStore(str(tmp_path / f"landing-{gzip}"))
        options = BulkOptions(page_size=11, lag=timedelta(0), poll_initial_s=0.05, gzip=gzip)
        result = client.bulk(store, options).backfill("Opportunity", START, END, now=future())
        assert result.rows > 11 and len(result.manifests[0].parts) > 1
        frames.append(landed(store, result).drop("_job_id", "_observed_at_ms").sort("Id"))
    assert frames[0].equals(frames[1])


def test_page_prefetcher_keeps_order_raises_errors_and_stops() -> None:
    from resources.salesforce.bulk import _PagePrefetcher

    def fetch(locator: str) -> tuple[bytes, str]:
        n = int(locator or 0)
        if n == 3:
            raise RuntimeError("page 3 failed")
        return str(n).encode(), str(n + 1)

    pages = _PagePrefetcher(fetch, "", depth=1)
    assert [pages.next() for _ in range(3)] == [(b"0", "1"), (b"1", "2"), (b"2", "3")]
    with pytest.raises(RuntimeError, match="page 3"):
        pages.next()
    pages.close()

    fetched: list[str] = []

    def endless(locator: str) -> tuple[bytes, str]:
        fetched.append(locator)
        return b"x", str(len(fetched))

    early = _PagePrefetcher(endless, "", depth=1)
    assert early.next() == (b"x", "1")
    early.close()  # the consumer stopped (a crash): the thread ends, no unbounded fetching
    assert len(fetched) <= 4


def test_column_only_read_lands_fill_changes_that_set_only_those_fields(
    emulator: Emulator, client: SalesforceClient, tmp_path: Path
) -> None:
    from decimal import Decimal

    from resources.salesforce.to_changes import fill_batch
    from sync_engine.changes import is_fill_version
    from sync_engine.spec import ObjectSpec

    store = LandingStore(str(tmp_path / "landing"))
    fields = ["Id", "SystemModstamp", "Amount"]
    result = client.bulk(store, OPTIONS).backfill(
        "Opportunity", START, END, fields=fields, meta={"fill_fields": ["Amount"]}, now=future()
    )
    assert all(m.meta["fill_fields"] == ["Amount"] for m in result.manifests)
    got = landed(store, result)
    assert [c for c in got.columns if not c.startswith("_")] == fields
    spec = ObjectSpec.from_describe(
        client.conn.call(lambda sf: sf.Opportunity.describe(), what="describe")
    )
    rows = fill_batch(spec, got, ["Amount"]).to_pylist()
    truth = pl.from_arrow(emulator.store.truth("Opportunity"))
    assert isinstance(truth, pl.DataFrame)
    want = dict(zip(truth["Id"], truth["Amount"], strict=True))
    assert len(rows) == truth.height
    assert all(r["set_fields"] == ["Amount"] and is_fill_version(r["version"]) for r in rows)
    assert all(r["name"] is None and r["is_deleted"] is None for r in rows)  # nothing else
    assert {r["record_id"]: r["amount"] for r in rows} == {
        k: None if v is None else Decimal(v).quantize(Decimal("0.01")) for k, v in want.items()
    }

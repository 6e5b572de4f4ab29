"""sync_engine.in_flight: an apply's row in sfdc_meta.apply_in_flight, from before its stamp
to after its last commit (what bounds the dbt marts' next read: docs/dbt.md)."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

import duckdb
import pytest

from sync_engine import apply as apply_mod
from sync_engine import in_flight as mod
from sync_engine.apply import apply_batch
from sync_engine.changes import build_batch
from tests.sync_engine.conftest import fresh_duckdb
from tests.sync_engine.histories import SPEC, cdc

RID = "006" + "0" * 14 + "1"


def _rows(path: Path) -> list[tuple]:
    """What another process (a dbt build) sees: committed rows only."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(
            "SELECT object_name, started_at FROM sfdc_meta.apply_in_flight ORDER BY 2"
        ).fetchall()
    finally:
        con.close()


def test_the_row_is_committed_before_the_stamp_and_gone_after(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    wh = fresh_duckdb(str(path))
    ticks = iter([dt.datetime(2026, 1, 1, 0, 0, 1), dt.datetime(2026, 1, 1, 0, 0, 2)])
    with mod.in_flight(wh, "Opportunity", clock=lambda: next(ticks)) as stamp:
        wh.close()  # let the reader in: DuckDB has one writer process
        assert _rows(path) == [("Opportunity", dt.datetime(2026, 1, 1, 0, 0, 1))]
        assert stamp == dt.datetime(2026, 1, 1, 0, 0, 2)
    wh.close()
    assert _rows(path) == []


def test_the_stamp_is_never_older_than_the_row() -> None:
    wh = fresh_duckdb()
    ticks = iter([dt.datetime(2026, 1, 1, 0, 0, 5), dt.datetime(2026, 1, 1, 0, 0, 4)])
    with mod.in_flight(wh, "Opportunity", clock=lambda: next(ticks)) as stamp:
        (started,) = wh.query("SELECT started_at FROM sfdc_meta.apply_in_flight")[0]
        assert stamp >= started  # a clock stepping back (NTP) does not break the bound


def test_a_failed_apply_clears_its_row_and_a_killed_one_ages_out() -> None:
    wh = fresh_duckdb()
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - mod.STALE_AFTER - dt.timedelta(hours=1)
    # A killed apply's row (no exit ran), another object's too.
    for name in ("Opportunity", "Account"):
        wh.execute(
            f"INSERT INTO sfdc_meta.apply_in_flight VALUES ('{name}', 'killed', TIMESTAMP "
            f"'{old.isoformat(sep=' ')}')"
        )
    with pytest.raises(RuntimeError), mod.in_flight(wh, "Opportunity"):
        raise RuntimeError("the apply failed")
    assert wh.query("SELECT object_name FROM sfdc_meta.apply_in_flight") == [("Account",)]


def test_apply_batch_stamps_its_rows_at_or_after_its_row(monkeypatch) -> None:
    wh = fresh_duckdb()
    seen: list[dt.datetime] = []
    real = mod.in_flight

    @contextlib.contextmanager
    def watching(warehouse, name):
        with real(warehouse, name) as stamp:
            rows = warehouse.query("SELECT started_at FROM sfdc_meta.apply_in_flight")
            seen.extend(r[0] for r in rows)
            yield stamp

    monkeypatch.setattr(apply_mod, "in_flight", watching)
    apply_batch(wh, SPEC, build_batch(SPEC, [cdc("CREATE", 1, RID, 0, values={"Name": "A"})]))
    (synced,) = wh.query('SELECT "_synced_at" FROM sfdc.opportunity')[0]
    assert len(seen) == 1 and synced >= seen[0]
    assert wh.query("SELECT count(*) FROM sfdc_meta.apply_in_flight") == [(0,)]

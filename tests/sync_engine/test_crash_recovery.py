"""Crashes between raw append and merge, and inside the merge, converge on rerun."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resources.duckdb_warehouse import DuckDBWarehouse
from sync_engine import apply as apply_mod
from sync_engine.apply import apply_batch
from sync_engine.changes import build_batch
from tests.sync_engine.conftest import fresh_duckdb
from tests.sync_engine.histories import (
    RECORD_IDS,
    SPEC,
    cdc,
    read_current,
    read_history,
    sample_history,
)

# A change committed between record A's CREATE and its first UPDATE, arriving last: the
# second batch then rebuilds A's scd2 versions (the late path) as well as appending B's.
LATE = cdc("UPDATE", 99, RECORD_IDS[0], 0, 500, values={"Tags__c": "c"}, changed_fields=["Tags__c"])


def second_batch() -> list[dict]:
    """The second batch of every test here."""
    return [*sample_history()[4:], LATE]


class Crash(Exception):
    """The simulated crash."""


class CrashingWarehouse:
    """Delegates to a warehouse, crashing on the first statement containing `marker`."""

    def __init__(self, inner: DuckDBWarehouse, marker: str) -> None:
        self.inner, self.marker = inner, marker

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def execute(self, sql: str, params=None) -> int:
        if self.marker in sql:
            raise Crash(self.marker)
        return self.inner.execute(sql, params)


def _tables(wh) -> tuple:
    return read_current(wh), read_history(wh)


def _count(wh, schema: str) -> int:
    return wh.query(f'SELECT COUNT(*) FROM "{schema}"."opportunity"')[0][0]


@pytest.fixture
def clean_result() -> tuple:
    """Tables after applying the history's two batches without any crash."""
    history = sample_history()
    wh = fresh_duckdb()
    apply_batch(wh, SPEC, build_batch(SPEC, history[:4]))
    apply_batch(wh, SPEC, build_batch(SPEC, second_batch()))
    return _tables(wh)


def test_crash_between_raw_append_and_merge_converges_on_rerun(monkeypatch, clean_result):
    history = sample_history()
    wh = fresh_duckdb()
    apply_batch(wh, SPEC, build_batch(SPEC, history[:4]))
    before = _tables(wh)

    def crash() -> None:
        raise Crash("after raw append")

    monkeypatch.setattr(apply_mod, "_after_raw_append", crash)
    with pytest.raises(Crash):
        apply_batch(wh, SPEC, build_batch(SPEC, second_batch()))
    assert _count(wh, "sfdc_raw") == len(history) + 1  # raw got ahead of current
    assert _tables(wh) == before

    monkeypatch.undo()
    rerun = apply_batch(wh, SPEC, build_batch(SPEC, second_batch()))
    assert rerun.raw_inserted == 0 and rerun.applied == 4  # the gap event is not applied
    assert rerun.late == 1
    assert _tables(wh) == clean_result


@pytest.mark.parametrize(
    "marker",
    [
        'DELETE FROM "sfdc_history"',
        'INSERT INTO "sfdc_history"',
        'INSERT INTO "sfdc"."opp',
        'INSERT INTO "sfdc_meta"."load_log"',
    ],
)
def test_crash_mid_merge_leaves_the_old_state_and_rerun_converges(marker, clean_result):
    history = sample_history()
    wh = fresh_duckdb()
    apply_batch(wh, SPEC, build_batch(SPEC, history[:4]))
    before = _tables(wh)
    with pytest.raises(Crash):
        apply_batch(CrashingWarehouse(wh, marker), SPEC, build_batch(SPEC, second_batch()))
    assert _tables(wh) == before
    apply_batch(wh, SPEC, build_batch(SPEC, second_batch()))
    assert _tables(wh) == clean_result


def test_killed_process_mid_merge_recovers_from_the_duckdb_file(tmp_path: Path, clean_result):
    path = tmp_path / "wh.duckdb"
    script = textwrap.dedent(
        f"""
        import os
        from resources.duckdb_warehouse import DuckDBWarehouse
        from sync_engine import registry
        from sync_engine.apply import apply_batch
        from sync_engine.changes import build_batch
        from tests.sync_engine.histories import SPEC, sample_history
        from tests.sync_engine.test_crash_recovery import second_batch

        wh = DuckDBWarehouse(path={str(path)!r})
        registry.sync_schema(wh, SPEC)
        history = sample_history()
        apply_batch(wh, SPEC, build_batch(SPEC, history[:4]))
        inner = wh.execute

        def execute(sql, params=None):
            if sql.startswith('INSERT INTO "sfdc"."opportunity"'):
                os._exit(17)  # killed between the scd2 and the current writes
            return inner(sql, params)

        object.__setattr__(wh, "execute", execute)
        apply_batch(wh, SPEC, build_batch(SPEC, second_batch()))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path.cwd(), check=False)
    assert proc.returncode == 17
    wh = DuckDBWarehouse(path=str(path))
    assert _count(wh, "sfdc_history") == 4  # only the first batch's versions survived
    apply_batch(wh, SPEC, build_batch(SPEC, second_batch()))
    assert _tables(wh) == clean_result
    wh.close()

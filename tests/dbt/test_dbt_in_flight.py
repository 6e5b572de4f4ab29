"""An apply in flight while a dbt build runs: its rows reach the next incremental build.

The engine stamps an apply's rows (`_synced_at`) before it writes and commits them later;
a build that starts in between cannot see them although their stamp is older than the
build. Each apply commits a row to `sfdc_meta.apply_in_flight` before it takes its stamp
(sync_engine/in_flight.py), and a build's `built_at` is never later than the oldest such
row (dbt/macros/incremental.sql `build_stamp`), so the next build reads from before it.
The same interleaving with the row ignored (its age past `incremental_lookback_minutes`)
loses the change: the mart then differs from a full rebuild, which is what the fixed
60-minute lookback used to cover.
"""

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from sync_engine import changes as ch
from sync_engine.apply import apply_batch
from sync_engine.in_flight import in_flight
from sync_engine.warehouse import let_go
from tests.dbt.harness import build_org_warehouse, engine, query, run_dbt

pytestmark = [pytest.mark.xdist_group("dbt"), pytest.mark.slow]

# No skew margin: the test's clocks are one machine's, and any margin would re-read the
# change whatever the bound (the whole test runs in a minute).
HONOURED = ["--vars", "{incremental_clock_skew_minutes: 0, incremental_lookback_minutes: 60}"]
IGNORED = ["--vars", "{incremental_clock_skew_minutes: 0, incremental_lookback_minutes: 0}"]


def _ok(run) -> None:
    assert run.returncode == 0, run.stdout[-4000:]


def _history(path: Path) -> list[tuple]:
    return query(
        path, "select * exclude (built_at) from marts.fct_opportunity_history order by all"
    )


def _update(spec, record_id: str, amount: str) -> dict:
    return ch.cdc_change(
        spec,
        event_uuid=f"in-flight-{record_id}",
        record_id=record_id,
        change_type="UPDATE",
        commit_ms=ch.ms_of(dt.datetime.now(dt.UTC).replace(tzinfo=None)),
        transaction_key=f"tx-in-flight-{record_id}",
        sequence_number=1,
        values={"Amount": Decimal(amount)},
        changed_fields=["Amount"],
    )


def _interleave(base: Path, build_vars: list[str]) -> tuple[list[tuple], list[tuple]]:
    """An update applied; a build while an apply of another update is in flight; that
    apply's commit; the next build: (the mart after it, the mart a full rebuild computes).
    """
    path = base / "warehouse.duckdb"
    built = build_org_warehouse(path, base / "org")
    spec = built["specs"]["Opportunity"]
    live = [o for o in built["truth"]["Opportunity"] if not o["IsDeleted"]]
    committed, in_flight_opp = live[0], live[1]
    _ok(run_dbt(["build", "--select", "+fct_opportunity_history"], path, base / "first"))
    with engine(path) as wh:  # the build during the apply rewrites a key (built_at moves)
        apply_batch(wh, spec, ch.build_batch(spec, [_update(spec, committed["Id"], "111.00")]))
    change = _update(spec, in_flight_opp["Id"], "777.00")
    with engine(path) as wh, in_flight(wh, spec.name) as stamp:
        let_go(wh)  # the build starts before the apply writes (DuckDB: one writer)
        _ok(
            run_dbt(
                ["build", "--select", "+fct_opportunity_history", *build_vars],
                path,
                base / "during",
            )
        )
        # The apply's writes, stamped when it started, committed after the build.
        apply_batch(wh, spec, ch.build_batch(spec, [change]), now=stamp)
    _ok(
        run_dbt(
            ["build", "--select", "+fct_opportunity_history", *build_vars], path, base / "after"
        )
    )
    after = _history(path)
    _ok(
        run_dbt(
            ["build", "--select", "+fct_opportunity_history", "--full-refresh"], path, base / "full"
        )
    )
    return after, _history(path)


def test_the_next_build_sees_an_apply_that_was_in_flight(tmp_path: Path) -> None:
    after, full = _interleave(tmp_path, HONOURED)
    assert after == full
    assert any(Decimal("777.00") in row for row in after)


def test_without_the_in_flight_row_the_next_build_misses_it(tmp_path: Path) -> None:
    after, full = _interleave(tmp_path, IGNORED)
    assert any(Decimal("777.00") in row for row in full)
    assert after != full, "the change was read anyway: the test would prove nothing"

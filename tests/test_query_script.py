"""`scripts/query.py`: query the local warehouse while a sync run may hold the file."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
sys.stdout.write("held\\n"); sys.stdout.flush()
time.sleep(float(sys.argv[2]))
con.close()
"""


def _query(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "query.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA marts")
    con.execute("CREATE TABLE marts.t AS SELECT 'Acme renewal' AS name, 1200.5 AS amount")
    con.close()
    return path


def test_prints_the_result_of_the_statement(warehouse: Path) -> None:
    out = _query("SELECT name, amount FROM marts.t", "--db", str(warehouse))
    assert out.returncode == 0, out.stderr
    assert "Acme renewal" in out.stdout and "1200.5" in out.stdout


def test_waits_for_a_writer_to_let_go_of_the_file(warehouse: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(warehouse), "2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        out = _query("SELECT count(*) AS n FROM marts.t", "--db", str(warehouse))
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert out.returncode == 0, out.stderr
    assert waited >= 1.0  # it could not open the file before the writer closed it
    assert "│" in out.stdout and " 1 " in out.stdout


def test_gives_up_with_the_lock_error_when_the_writer_keeps_the_file(warehouse: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(warehouse), "10"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        out = _query("SELECT 1", "--db", str(warehouse), "--wait", "1")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert out.returncode != 0
    assert "lock" in out.stderr.lower()


def test_a_missing_file_names_what_to_do(tmp_path: Path) -> None:
    out = _query("SELECT 1", "--db", str(tmp_path / "nope.duckdb"))
    assert out.returncode == 2
    assert "make demo" in out.stderr

"""Statements per recurring run on the Snowflake path, and the tables each reads (fakesnow).

    .venv/bin/python -m bench.snowflake_statements [--no-write]

The real `SnowflakeWarehouse` and snowflake-connector, in fakesnow 0.12.1 patch mode
(DuckDB underneath). `CapturingSnowflake` records every statement the engine sends
(`execute`, `query`, `query_arrow`, and each `load_temp_table` bulk load, which is
`write_pandas` = PUT + COPY INTO in production); each is labelled like
`bench.scale_statements` and parsed by sqlglot (dialect snowflake) for the tables it reads
and writes. Runs: the same recurring runs as `bench.scale_statements` (incomplete lookup,
CDC append + apply of 1,000 and 10,000 changes, scoped check, a polling part) over a
small base table: on Snowflake the statements join temp tables instead of inlining ids, so
their number does not depend on the table's size (only `read_whole_before`'s id lists are
chunked, per 1,000 ids). What fakesnow cannot tell (micro-partition pruning, bytes
scanned, seconds, credits) is not measured here: docs/cost.md turns counts into credits
under stated assumptions.

Writes docs/performance.md's section "## Snowflake statements per run (fakesnow)".
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl
from pydantic import PrivateAttr

from bench.engine import BATCH_MS, SPEC, make_backfill, make_batch
from bench.report import machine, replace_section
from bench.statements import Tables, caller, is_temporary, label, shape, tables
from resources.snowflake_warehouse import SnowflakeWarehouse
from sfdc_assets import batches
from sfdc_assets.checks import touched_id_counts
from sfdc_assets.incomplete import partial_only, read_whole_before
from sync_engine import registry
from sync_engine.apply import append_raw, apply_batch

SECTION = "## Snowflake statements per run (fakesnow)"
BASE_RECORDS = 20_000
CDC_SIZES = (1_000, 10_000)
# Statement counts do not depend on a part's size up to apply.CHUNK_ROWS (200,000).
POLL_ROWS = 5_000
# Statement kinds a warehouse runs (compute); the rest (BEGIN/COMMIT, temp DDL) are
# cloud-services work, billed only past 10 % of the day's warehouse credits.
COMPUTE = ("SELECT", "INSERT", "DELETE", "UPDATE", "MERGE", "COPY")
# CREATE TABLE ... AS SELECT runs its query on the warehouse; a bare CREATE is DDL.
_AS_QUERY = re.compile(r"\bAS\s*\(?\s*(?:SELECT|WITH)\b", re.IGNORECASE)
_db_numbers = itertools.count()


class CapturingSnowflake(SnowflakeWarehouse):
    """SnowflakeWarehouse recording (run, label, sql) of every statement in `capture(run)`."""

    _run: Any = PrivateAttr(default=None)
    _log: Any = PrivateAttr(default_factory=list)

    def _record(self, sql: str, where: str | None = None) -> None:
        if self._run is not None:
            self._log.append((self._run, label(sql, where), sql))

    def execute(self, sql: str, params: list | tuple | None = None) -> int:
        """Recorded, then run."""
        self._record(sql)
        return super().execute(sql, params)

    def query(self, sql: str, params: list | tuple | None = None) -> list[tuple]:
        """Recorded, then run."""
        self._record(sql)
        return super().query(sql, params)

    def query_arrow(self, sql: str) -> Any:
        """Recorded, then run."""
        self._record(sql)
        return super().query_arrow(sql)

    def load_temp_table(self, name: str, columns_ddl: str, data: Any) -> None:
        """The CREATE goes through `execute`; the load is recorded as one COPY INTO."""
        where = caller()
        super().load_temp_table(name, columns_ddl, data)
        self._record(f"COPY INTO {name.upper()} FROM @write_pandas_stage", where)

    @contextmanager
    def capture(self, run: str) -> Iterator[None]:
        """Record under `run` until the block ends."""
        self._run = run
        try:
            yield
        finally:
            self._run = None

    @property
    def statements(self) -> list[tuple[str, str, str]]:
        """(run, label, sql) in the order sent."""
        return self._log


def measure() -> list[tuple[str, str, str]]:
    """Every recurring run's statements through fakesnow."""
    import fakesnow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fakesnow's Arrow-copy notices
        with fakesnow.patch():
            wh = CapturingSnowflake(
                account="fake",
                user="fake",
                password="snow",
                database=f"SFDCBENCH{next(_db_numbers)}",
            )
            registry.sync_schema(wh, SPEC)
            batches.ensure_ledger(wh)
            base = make_backfill(BASE_RECORDS, 0, BATCH_MS - 10**9)
            append_raw(wh, SPEC, base, batch_id="bootstrap", read_id="bootstrap-job")
            apply_batch(wh, SPEC, base, batch_id="bootstrap", read_id="bootstrap-job")
            next_ms, seed = BATCH_MS, 1
            for size in CDC_SIZES:
                batch = make_batch(size, BASE_RECORDS, seed, next_ms)
                with wh.capture(f"incomplete {size:,}"):
                    read_whole_before(wh, SPEC, partial_only([batch]))
                with wh.capture(f"cdc {size:,}"):
                    append_raw(wh, SPEC, batch, batch_id=f"cdc-{seed}")
                    apply_batch(wh, SPEC, batch, batch_id=f"cdc-{seed}")
                with wh.capture(f"check {size:,}"):
                    touched_id_counts(wh, SPEC, batch.to_arrow().column("record_id"))
                next_ms, seed = next_ms + size, seed + 1
            first = BASE_RECORDS - POLL_ROWS // 2
            before = _poll(first - POLL_ROWS // 2, next_ms, "p1")
            append_raw(wh, SPEC, before, batch_id="poll-1", read_id="poll-job-1")
            apply_batch(wh, SPEC, before, batch_id="poll-1", read_id="poll-job-1")
            part = _poll(first, next_ms + POLL_ROWS, "p2")
            with wh.capture("poll part"):
                append_raw(wh, SPEC, part, batch_id="poll-2", read_id="poll-job-2")
                apply_batch(wh, SPEC, part, batch_id="poll-2", read_id="poll-job-2")
            with wh.capture("check poll part"):
                touched_id_counts(wh, SPEC, part.to_arrow().column("record_id"))
            out = list(wh.statements)
            wh.close()
    return out


def _poll(first_idx: int, first_ms: int, tag: str) -> pl.DataFrame:
    part = make_backfill(POLL_ROWS, first_idx, first_ms)
    return part.with_columns((pl.lit(tag) + pl.col("record_id")).alias("change_id"))


def is_compute(sql: str) -> bool:
    """Does this statement need a running warehouse (not only cloud services)?"""
    verb = shape(sql).split(" ", 1)[0]
    return verb in COMPUTE or (verb == "CREATE" and _AS_QUERY.search(sql) is not None)


def _permanent(found: frozenset[str]) -> frozenset[str]:
    return frozenset(t for t in found if not is_temporary(t))


def _names(found: frozenset[str]) -> str:
    return ", ".join(sorted(found)) or "-"


def render(captured: list[tuple[str, str, str]]) -> str:
    """The markdown section's body."""
    runs = list(dict.fromkeys(run for run, _, _ in captured))
    parsed: dict[str, Tables] = {sql: tables(sql) for _, _, sql in captured}
    lines = [
        "Command: `python -m bench.snowflake_statements` on "
        f"{machine()}: the real `SnowflakeWarehouse` and connector on fakesnow 0.12.1 "
        "(patch mode). Every statement the engine sent in each recurring run, labelled as "
        "in the section above, its tables parsed by sqlglot (dialect snowflake); a bulk load "
        "(`load_temp_table`: `write_pandas`, i.e. CREATE TEMPORARY STAGE + PUT + COPY INTO "
        "in production, an in-process insert under fakesnow) is counted as one COPY. "
        "*Compute* statements need the warehouse running (SELECT, DML, COPY, CREATE ... AS "
        "SELECT); the others (BEGIN/COMMIT, bare temp-table DDL) are cloud-services work. "
        "Each Dagster run also opens a session (`USE SCHEMA`, not counted). The base table has "
        f"{BASE_RECORDS:,} records: on Snowflake the engine joins temp tables rather than "
        "inlining ids, so these counts do not grow with the table; only "
        "`read_whole_before` sends one statement per 1,000 candidate ids (current's "
        "`_read_whole` marker; raw only for the ids it leaves unsettled, none here).",
        "",
        "| run | statements | compute | bulk loads | tables read | tables written | temp tables |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for run in runs:
        mine = [(lbl, sql) for r, lbl, sql in captured if r == run]
        reads = frozenset().union(*(parsed[sql].reads for _, sql in mine))
        writes = frozenset().union(*(parsed[sql].writes for _, sql in mine))
        compute = sum(is_compute(sql) for _, sql in mine)
        loads = sum(sql.startswith("COPY INTO") for _, sql in mine)
        temp = {t for t in reads | writes if is_temporary(t) and not t.startswith("@")}
        lines.append(
            f"| {run} | {len(mine)} | {compute} | {loads} | {_names(_permanent(reads))} "
            f"| {_names(_permanent(writes))} | {len(temp)} |"
        )
    lines += [
        "",
        "Per statement (label, statements under it in the run, tables read / written):",
        "",
        "| run | statement | n | reads | writes |",
        "|---|---|---:|---|---|",
    ]
    for run in runs:
        counts = Counter(lbl for r, lbl, _ in captured if r == run)
        for lbl, n in counts.items():
            sqls = [sql for r, x, sql in captured if r == run and x == lbl]
            reads = frozenset().union(*(parsed[sql].reads for sql in sqls))
            writes = frozenset().union(*(parsed[sql].writes for sql in sqls))
            lines.append(f"| {run} | `{lbl}` | {n} | {_names(reads)} | {_names(writes)} |")
    lines += [
        "",
        'Not measurable through fakesnow (docs/engine.md, "What fakesnow cannot verify"): '
        "micro-partition pruning (clustering on raw's `change_date`, search optimization on "
        "`id`), bytes scanned, statement seconds and credits, PUT/COPY (patch mode fakes "
        "`write_pandas`), Snowflake's locking. The counts are what docs/cost.md prices.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure, then write docs/performance.md (or only print with --no-write)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    args = parser.parse_args(argv)
    body = render(measure())
    if not args.no_write:
        replace_section(SECTION, body)
    sys.stdout.write(body + "\n")


if __name__ == "__main__":
    main()

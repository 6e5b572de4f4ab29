"""Applies in flight: how a dbt build learns which engine writes it may not see yet.

An apply stamps every current/scd2 row it writes (`_synced_at`) with one time taken before
its first write, and commits later (chunk by chunk: seconds at production shape). A dbt
build that starts in between does not see those rows although their stamp is older than
the build, so the next build must read from before that stamp. Rather than a fixed
lookback longer than any apply (an hour: every 5-minute build re-read an hour of writes),
each apply commits a row to `sfdc_meta.apply_in_flight` *before* it takes its stamp and
deletes it after its last commit. A build's `built_at` is then the earlier of its own clock
(read first) and the oldest row there (dbt/macros/incremental.sql): an apply whose row the
build did not see took its stamp after the build read the clock, one whose row it saw
stamped at or after that row's `started_at`. Either way the next build, reading from the
newest `built_at`, sees its rows. docs/dbt.md, "Incremental marts".

A row left by a killed apply would hold every build's bound back: builds ignore rows older
than `incremental_lookback_minutes` (the longest an apply may take), and every apply, as it
ends, deletes its object's rows older than STALE_AFTER.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterator

from sync_engine.dialect import dialect_of
from sync_engine.warehouse import Warehouse, qualified

log = logging.getLogger(__name__)

TABLE = "apply_in_flight"
# Rows older than this are a killed apply's: the object's next apply removes them.
# dbt ignores them past its own `incremental_lookback_minutes` (60 by default).
STALE_AFTER = dt.timedelta(hours=2)


def utc_now() -> dt.datetime:
    """Naive UTC, the engine's stamp clock."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def table(warehouse: Warehouse) -> str:
    """The quoted `sfdc_meta.apply_in_flight`."""
    return qualified(warehouse, warehouse.schema_names.meta, TABLE)


def ensure(warehouse: Warehouse) -> None:
    """Create the table if absent (`registry.ensure_tables` calls it)."""
    d = dialect_of(warehouse)
    q = d.q
    warehouse.execute(
        f"CREATE TABLE IF NOT EXISTS {table(warehouse)} ({q('object_name')} VARCHAR NOT NULL, "
        f"{q('token')} VARCHAR NOT NULL, {q('started_at')} {d.timestamp} NOT NULL)"
    )


@contextlib.contextmanager
def in_flight(
    warehouse: Warehouse, object_name: str, clock: Callable[[], dt.datetime] = utc_now
) -> Iterator[dt.datetime]:
    """Mark an apply of `object_name` in flight; yields the stamp its rows must carry.

    The row is committed (autocommit) before the stamp is read, so the stamp is never
    older than the row's `started_at`; it is deleted when the block exits, however, with
    the object's rows older than STALE_AFTER (killed applies'). Two statements an apply.
    """
    d = dialect_of(warehouse)
    q = d.q
    token = uuid.uuid4().hex
    started = clock()
    warehouse.execute(
        f"INSERT INTO {table(warehouse)} VALUES ({d.string(object_name)}, {d.string(token)}, "
        f"{d.timestamp_literal(started)})"
    )
    try:
        yield max(clock(), started)
    finally:
        try:
            warehouse.execute(
                f"DELETE FROM {table(warehouse)} WHERE {q('token')} = {d.string(token)} "
                f"OR ({q('object_name')} = {d.string(object_name)} "
                f"AND {q('started_at')} < {d.timestamp_literal(started - STALE_AFTER)})"
            )
        except Exception:  # the apply's own error matters more; builds age the row out
            log.warning(
                "%s: could not clear its in-flight row; dbt ignores it after the lookback",
                object_name,
                exc_info=True,
            )

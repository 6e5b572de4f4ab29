"""Delete old finished runs of the given sources from the Dagster instance (run history).

    python deploy/maintenance/prune_runs.py --source dbt-refresh --older-than-days 30
    python deploy/maintenance/prune_runs.py --source dbt-refresh --older-than-days 30 --apply

Dry run unless `--apply`. Deleting a run deletes its event log, materializations
included: only sources whose later runs supersede them are worth pruning (`dbt-refresh`,
the dbt_refresh sensor's runs, build the same unpartitioned models every time). Runs of
`bootstrap` and `rebackfill` are refused: the bootstrap sensor reads them to know which
objects were backfilled, and their materializations are the partitions' record
(docs/operations.md, "Run history growth"). Prints one JSON line: the runs matched and
deleted per source.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any

SOURCE_TAG = "sfdc/source"
PROTECTED_SOURCES = frozenset({"bootstrap", "rebackfill"})
BATCH = 500


def prune(
    instance: Any,
    sources: Sequence[str],
    older_than: dt.timedelta,
    *,
    apply: bool,
    now: dt.datetime | None = None,
) -> dict[str, dict[str, int]]:
    """Find (and with `apply`, delete) finished runs of `sources` created before now - age."""
    from dagster import DagsterRunStatus, RunsFilter

    refused = sorted(set(sources) & PROTECTED_SOURCES)
    if refused:
        raise ValueError(
            f"runs of {refused} are never pruned: the bootstrap sensor and the partitions' "
            "materialization record depend on them"
        )
    now = now or dt.datetime.now(dt.UTC)
    finished = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
    out: dict[str, dict[str, int]] = {}
    for source in sources:
        matched = deleted = 0
        cursor = None
        while True:
            records = instance.get_run_records(
                filters=RunsFilter(
                    tags={SOURCE_TAG: source},
                    statuses=finished,
                    created_before=now - older_than,
                ),
                limit=BATCH,
                cursor=cursor,
            )
            if not records:
                break
            matched += len(records)
            for record in records:
                if apply:
                    instance.delete_run(record.dagster_run.run_id)
                    deleted += 1
            # Deleted runs drop out of the next page; without deleting, page on.
            cursor = None if apply else records[-1].dagster_run.run_id
        out[source] = {"matched": matched, "deleted": deleted}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", required=True, help="sfdc/source tag value")
    parser.add_argument("--older-than-days", type=float, required=True)
    parser.add_argument("--apply", action="store_true", help="delete (default: dry run)")
    args = parser.parse_args(argv)
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        result = prune(
            instance, args.source, dt.timedelta(days=args.older_than_days), apply=args.apply
        )
    sys.stdout.write(json.dumps({"apply": args.apply, "sources": result}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`make bench-scale`: the whole platform on an org of production shape, at production rates.

The demo stack (the emulator, `dagster dev` on workspace.yaml with the demo's instance and
every sensor and schedule running: CDC, polling, bootstrap, reconcile, checks, dbt) on an
org seeded with ``--count`` rows per object (default 1M Opportunities, 10M Tasks, 500K
Events, the rest small), so the tables the recurring runs touch are production-shaped.

1. Warm-up: the bootstrap backfill of every object, with no traffic (not measured here:
   `make bench-backfill` measures the backfill).
2. Traffic at the business's rates for ``--minutes`` (20 by default), through the
   emulator's traffic generator (its creates, partial updates, deletes, undeletes, purges
   and automation follow-ups): 80K Opportunity changes a day (0.93/s) and 5M activity
   changes a day (57.9/s, Task 3 : Event 1). No time is compressed: these rates are the
   production rates themselves, and the org's clock is the wall clock.
3. Drain: the traffic stops; the stack runs until the last change of the window could
   have been applied (a CDC run after the window for revenue; for activities a poll run
   started after the window's end plus the Bulk read lag), at most ``--drain-minutes``.

Measured from the tables and the stopped instance's event log, as `bench.latency` does:
per channel group, each change committed in the window that created an scd2 version,
from its commit (CDC: the event's `commitTimestamp`; polling: the record's SystemModstamp,
second precision) to the materialization of its current table by the run whose apply
wrote that version. Polling sees a record's last version in each window only, by design
(docs/operations.md): intermediate versions of a record changed twice within one poll
never reach raw and are not timed. Also: the runs of the window by kind and their
durations, and peak RSS. The rows each recurring statement scans at 1M vs 10M rows are
`make bench-scale-statements` (bench/scale_statements.py), which `make bench-scale` runs
first.

Results go to docs/performance.md, section "## The platform at production shape (make
bench-scale)".
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.latency import PARTS, Results, Stack, _read_only, attribute, epoch, naive, pct, run_times
from bench.report import RssSampler, machine, replace_section
from sfdc_emulator.cli import assignment

log = logging.getLogger("bench.scale")

HEADING = "## The platform at production shape (make bench-scale)"
DEFAULT_COUNTS = {
    "Opportunity": 1_000_000,
    "Task": 10_000_000,
    "Event": 500_000,
    "Account": 50_000,
    "Contact": 100_000,
    "Lead": 20_000,
    "OpportunityLineItem": 100_000,
    "User": 2_000,
}
# The business's rates (DESIGN §1): changes per second.
DAY_S = 86_400
OPPORTUNITY_PER_S = 80_000 / DAY_S
ACTIVITIES_PER_S = 5_000_000 / DAY_S
TASK_SHARE = 0.75
WARMUP_TIMEOUT_S = 3 * 3600
# What each group's changes are timed on: (object, raw source, commit column).
GROUPS = {
    "revenue": ("Opportunity", "cdc", "commit_ts"),
    "activities": ("Task", "bulk", "system_modstamp"),
}
TARGET_P95_S = {"revenue": 30.0, "activities": 3600.0}
# --resume: seconds between the restarted stack's load and the traffic.
RESUME_SETTLE_S = 60


def traffic_mix() -> tuple[float, dict[str, float]]:
    """(transactions per second, object weights) of the production rates."""
    rate = OPPORTUNITY_PER_S + ACTIVITIES_PER_S
    return rate, {
        "Opportunity": OPPORTUNITY_PER_S / rate,
        "Task": ACTIVITIES_PER_S * TASK_SHARE / rate,
        "Event": ACTIVITIES_PER_S * (1 - TASK_SHARE) / rate,
    }


def group_changes(
    warehouse: Path, obj: str, source: str, column: str, start: float, end: float
) -> tuple[list[tuple[float, float]], int]:
    """(commit, apply started) pairs of the window's changes of `obj` that made a version,
    and the count of raw rows from `source` committed in the window."""
    table = obj.lower()
    window = f"r.source = '{source}' AND r.{column} >= ? AND r.{column} < ?"
    with _read_only(warehouse) as con:
        total = con.execute(
            f"SELECT count(*) FROM sfdc_raw.{table} r WHERE {window}", [naive(start), naive(end)]
        ).fetchone()[0]
        rows = con.execute(
            f"SELECT min(r.{column}), min(h._synced_at) FROM sfdc_raw.{table} r "
            f"JOIN sfdc_history.{table} h ON h.id = r.record_id AND h._version = r.version "
            f"WHERE {window} GROUP BY r.record_id, r.version",
            [naive(start), naive(end)],
        ).fetchall()
    return [(epoch(c), epoch(s)) for c, s in rows], int(total)


@dataclass
class RunStat:
    """One run of the window: its kind (the sfdc/source tag), status and wall time."""

    kind: str
    status: str
    seconds: float | None
    materialized: dict[str, list[float]] = field(default_factory=dict)


def runs_since(home: Path, since: float) -> list[RunStat]:
    """Every run created after `since`, with its current-table materialization times."""
    import os

    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    out: list[RunStat] = []
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records(
            dg.RunsFilter(created_after=datetime.fromtimestamp(since, UTC))
        ):
            run = record.dagster_run
            kind = run.tags.get("sfdc/source") or run.job_name
            if run.tags.get("sfdc/reason"):
                kind += f" ({run.tags['sfdc/reason']})"
            start, end = record.start_time, record.end_time
            stat = RunStat(kind, run.status.value, (end - start) if start and end else None)
            for entry in instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ):
                key = entry.dagster_event.asset_key if entry.dagster_event else None
                if key and len(key.path) == 3 and key.path[:2] == ["salesforce", "current"]:
                    stat.materialized.setdefault(key.path[2], []).append(entry.timestamp)
            out.append(stat)
    return out


def timed(
    pairs: list[tuple[float, float]], mats: list[float]
) -> tuple[list[tuple[float, float]], int]:
    """(commit, commit -> the first materialization at or after the apply that wrote the
    version) per change, and the count of changes no materialization followed."""
    import bisect

    ordered = sorted(mats)
    out, unmatched = [], 0
    for commit, synced in pairs:
        i = bisect.bisect_left(ordered, synced - 0.001)
        if i == len(ordered):
            unmatched += 1
        else:
            out.append((commit, ordered[i] - commit))
    return out, unmatched


def latencies(pairs: list[tuple[float, float]], mats: list[float]) -> tuple[list[float], int]:
    """Commit -> the first materialization at or after the apply that wrote the version."""
    out, unmatched = timed(pairs, mats)
    return [latency for _, latency in out], unmatched


def by_minute(values: list[tuple[float, float]]) -> list[tuple[str, list[float]]]:
    """The latencies grouped by the UTC minute of their commit, oldest first."""
    minutes: dict[int, list[float]] = defaultdict(list)
    for commit, latency in values:
        minutes[int(commit // 60)].append(latency)
    return [
        (datetime.fromtimestamp(m * 60, UTC).strftime("%H:%M"), minutes[m]) for m in sorted(minutes)
    ]


GROUP_HEADER = (
    "| group (object, path) | n | P50 | P95 | P99 | max | target P95 | raw rows | untimed |",
    "|---|---|---|---|---|---|---|---|---|",
)


def table_row(label: str, values: list[float]) -> str:
    """`| label | n | P50 | P95 | P99 | max |` of `values` (seconds)."""
    if not values:
        return f"| {label} | 0 | n/a | n/a | n/a | n/a |"
    return (
        f"| {label} | {len(values)} | {pct(values, 50):.1f} | {pct(values, 95):.1f} | "
        f"{pct(values, 99):.1f} | {max(values):.1f} |"
    )


def group_rows(results: dict[str, tuple[list[float], int, int]], suffix: str = "") -> list[str]:
    """One row per channel group: its latencies and whether its P95 meets the target."""
    out = []
    for group, (values, total, unmatched) in results.items():
        obj, source, _ = GROUPS[group]
        target = TARGET_P95_S[group]
        verdict = "n/a" if not values else ("meets" if pct(values, 95) < target else "misses")
        out.append(
            table_row(f"**{group}**{suffix} ({obj}, {source})", values)
            + f" < {target:g} s: **{verdict}** | {total} | {unmatched} |"
        )
    return out


def render(
    args: argparse.Namespace,
    counts: dict[str, int],
    rate: float,
    mix: dict[str, float],
    results: dict[str, tuple[list[float], int, int]],
    runs: list[RunStat],
    traffic: dict[str, Any],
    rss: list[int],
    warmup_s: float,
    drained_s: float,
    machine_line: str,
    revenue_parts: Results | None = None,
    steady: dict[str, tuple[list[float], int, int]] | None = None,
    revenue_minutes: list[tuple[str, list[float]]] | None = None,
) -> str:
    seeded = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    weights = ", ".join(f"{k} {v:.3f}" for k, v in mix.items())
    warmup = (
        f"Org seeded with {seeded}. Warm-up (bootstrap of every object through the"
        f" platform, no traffic): {warmup_s / 60:.0f} min."
    )
    command = f"`make bench-scale` (`python -m bench.scale --minutes {args.minutes:g}`)"
    if args.resume:
        command = f"`python -m bench.scale --resume --dir DIR --minutes {args.minutes:g}`"
        warmup = (
            "Resumed: the org, warehouse and Dagster instance an earlier run in DIR seeded"
            " and bootstrapped (not re-seeded, no warm-up), its stack restarted with this"
            f" commit's code and {RESUME_SETTLE_S} s to settle."
        )
    lines = [
        f"Machine: {machine_line}.",
        "",
        f"Command: {command}. {warmup} Then {args.minutes:g} min of"
        f" traffic at {rate:.1f} transactions/s (object weights {weights}: 80K Opportunity"
        " and 5M activity changes a day, uncompressed; the emulator's mix of creates,"
        " updates, deletes, undeletes and purges, plus automation follow-ups on ~16 % of"
        f" the transactions), then {drained_s / 60:.1f} min of drain without traffic.",
        "",
        f"Traffic committed in the window (emulator stats): {traffic_summary(traffic)};"
        f" achieved: {achieved_rates(traffic, args.minutes * 60)}.",
        "",
        "Commit → queryable in `current`, per channel group (s):",
        "",
        *GROUP_HEADER,
        *group_rows(results),
    ]
    if steady:
        lines += [
            "",
            f"The same, commits from minute {args.steady_after:g} of the traffic on"
            " (`--steady-after`: what a resume's first minutes leave is left out):",
            "",
            *GROUP_HEADER,
            *group_rows(steady, ", steady"),
        ]
    if revenue_minutes:
        lines += [
            "",
            "Revenue per UTC minute of commit time (which minutes set the P95; s):",
            "",
            "| minute | n | P50 | P95 | P99 | max |",
            "|---|---|---|---|---|---|",
            *(table_row(minute, values) for minute, values in revenue_minutes),
        ]
    lines += [
        "",
        "Runs created from the start of the traffic to the end of the drain:",
        "",
        "| run kind (`sfdc/source` (`sfdc/reason`) tags, or job) | runs | succeeded |"
        " median s | P95 s | max s |",
        "|---|---|---|---|---|---|",
    ]
    by_kind: dict[str, list[RunStat]] = defaultdict(list)
    for r in runs:
        by_kind[r.kind].append(r)
    for kind in sorted(by_kind):
        items = by_kind[kind]
        secs = [r.seconds for r in items if r.seconds is not None]
        ok = sum(1 for r in items if r.status == "SUCCESS")
        lines.append(
            f"| {kind} | {len(items)} | {ok} | "
            f"{statistics.median(secs) if secs else float('nan'):.1f} | "
            f"{pct(secs, 95):.1f} | {max(secs) if secs else float('nan'):.1f} |"
        )
    if revenue_parts is not None:
        lines += [
            "",
            "Where a revenue change's time goes (`bench.latency`'s breakdown, per change; s):",
            "",
            "| part | n | P50 | P95 | P99 | max |",
            "|---|---|---|---|---|---|",
            *(table_row(label, revenue_parts.parts[key]) for label, key in PARTS),
        ]
    lines += [
        "",
        f"Peak RSS over traffic and drain: `dagster dev` main process {rss[1] / 2**20:.0f} MiB,"
        f" emulator {rss[2] / 2**20:.0f} MiB (run workers are separate processes, not"
        " sampled).",
        "",
        "raw rows: the window's raw rows of that path (CDC events, or polled snapshots,"
        " overlapping polls included once: raw keeps one row per change id); n: those that"
        " made an scd2 version, timed; untimed: versions applied by no run materializing"
        " current before the stack stopped.",
    ]
    return "\n".join(lines)


def committed(traffic: dict[str, Any]) -> Counter[str]:
    """Transactions the traffic committed, per object (its stats; skips left out)."""
    per_object: Counter[str] = Counter()
    for key, n in traffic.get("stats", {}).items():
        op, _, obj = key.partition(":")
        if obj and not op.startswith("skipped"):
            per_object[obj] += n
    return per_object


def traffic_summary(traffic: dict[str, Any]) -> str:
    return ", ".join(f"{obj} {n:,}" for obj, n in committed(traffic).most_common()) or "none"


def achieved_rates(traffic: dict[str, Any], seconds: float) -> str:
    """Per day, what the traffic achieved against the business's rates: the emulator
    commits on one thread, so a big org can fall short of the asked rate."""
    done = committed(traffic)
    activities = (done["Task"] + done["Event"]) * DAY_S / seconds
    opportunities = done["Opportunity"] * DAY_S / seconds
    return (
        f"Opportunity {opportunities:,.0f} a day ({opportunities / (OPPORTUNITY_PER_S * DAY_S):.0%}"
        f" of 80K), activities {activities:,.0f} a day"
        f" ({activities / (ACTIVITIES_PER_S * DAY_S):.0%} of 5M)"
    )


POLL_RUNS = """query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs {
  results { status creationTime } } } }"""


def polled_after(stack: Stack, obj: str, ts: float) -> bool:
    """Has a poll of `obj` requested after `ts` succeeded (its window covers `ts`)?"""
    from bench.latency import _gql

    tags = [{"key": "sfdc/reason", "value": "polling"}, {"key": "sfdc/object", "value": obj}]
    runs = _gql(stack.port, POLL_RUNS, {"f": {"tags": tags}})["runsOrError"]["results"]
    return any(r["status"] == "SUCCESS" and r["creationTime"] > ts for r in runs)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its section of docs/performance.md."""
    from sfdc_emulator.admin import admin_call

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="minutes of traffic")
    parser.add_argument("--drain-minutes", type=float, default=30.0)
    parser.add_argument(
        "--count",
        action="append",
        default=[],
        type=assignment(int),
        metavar="OBJECT=N",
        help="seed rows (repeatable)",
    )
    parser.add_argument("--dir", help="keep the stack's files here (default: a temp dir)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    parser.add_argument(
        "--steady-after",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="also report the commits from this minute of the traffic on (0: off)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="restart the stack on --dir's org, warehouse and instance from an earlier run "
        "(bootstrapped there): no seeding, no warm-up",
    )
    args = parser.parse_args(argv)
    if args.resume and not (args.dir and (Path(args.dir) / "org").is_dir()):
        parser.error("--resume needs --dir holding an earlier run's stack (its org/ folder)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    counts = {**DEFAULT_COUNTS, **{k: int(v) for k, v in args.count}}
    rate, mix = traffic_mix()
    machine_line = machine()

    with contextlib.ExitStack() as cleanup:
        root = (
            Path(args.dir)
            if args.dir
            else Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        )
        root.mkdir(parents=True, exist_ok=True)
        extra = [a for k, v in counts.items() for a in ("--count", f"{k}={v}")]
        stack = Stack(root, 0.0, str(counts["Task"]), emulator_args=extra)
        try:
            stack.start()
            stack.wait_loaded()
            log.info("dagster dev loaded; bootstrapping %s", counts)
            warm_started = time.monotonic()
            objects = len(stack.objects())
            while True:
                done, active = stack.bootstrap_state()
                if done >= objects and not active:
                    break
                if time.monotonic() - warm_started > WARMUP_TIMEOUT_S:
                    raise SystemExit(f"not bootstrapped in {WARMUP_TIMEOUT_S} s: {done} done")
                time.sleep(10)
            warmup_s = time.monotonic() - warm_started
            if args.resume:
                time.sleep(RESUME_SETTLE_S)  # the restarted sensors' first ticks
            info = stack.info()
            log.info(
                "bootstrapped in %.0f s; %.1f min of traffic at %.1f/s",
                warmup_s,
                args.minutes,
                rate,
            )
            started = time.time()
            ended = started + args.minutes * 60
            with RssSampler((stack.procs[1].pid, stack.procs[0].pid)) as rss:
                admin_call(info, "traffic", rate=rate, mix={"objects": mix})
                time.sleep(max(0.0, ended - time.time()))
                traffic = admin_call(info, "traffic", rate=0)
                drain_from = time.time()
                # Activities are read with the Bulk lag: a poll must start after end + lag.
                from sfdc_assets.objects import load_config

                settings = load_config().settings
                ready_at = ended + settings.bulk_lag_seconds
                deadline = drain_from + args.drain_minutes * 60
                while time.time() < deadline:
                    if polled_after(stack, "Task", ready_at) and (
                        stack.latest_materialization_of("opportunity") > ended + 1
                    ):
                        break
                    time.sleep(10)
                drained_s = time.time() - drain_from
        finally:
            stack.stop()
        results: dict[str, tuple[list[float], int, int]] = {}
        steady: dict[str, tuple[list[float], int, int]] = {}
        revenue_parts: Results | None = None
        revenue_minutes: list[tuple[str, list[float]]] = []
        runs = runs_since(stack.home, started)
        steady_from = started + args.steady_after * 60
        for group, (obj, source, column) in GROUPS.items():
            pairs, total = group_changes(stack.warehouse, obj, source, column, started, ended)
            mats = [t for r in runs for t in r.materialized.get(obj.lower(), [])]
            each, unmatched = timed(pairs, mats)
            results[group] = ([v for _, v in each], total, unmatched)
            if args.steady_after > 0:
                later, later_total = group_changes(
                    stack.warehouse, obj, source, column, steady_from, ended
                )
                values, later_unmatched = latencies(later, mats)
                steady[group] = (values, later_total, later_unmatched)
            if group == "revenue":
                # bench.latency times the Opportunity current table's runs, part by part
                revenue_parts = attribute(pairs, run_times(stack.home, started))
                revenue_minutes = by_minute(each)
        body = render(
            args,
            counts,
            rate,
            mix,
            results,
            runs,
            traffic,
            rss.peak,
            warmup_s,
            drained_s,
            machine_line,
            revenue_parts,
            steady,
            revenue_minutes,
        )
    log.info("\n%s", body)
    if not args.no_doc:
        replace_section(HEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

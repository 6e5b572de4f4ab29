"""Benchmark: how many transactions/s the emulator's traffic generator commits.

On an org of `make bench-scale`'s shape (bench.scale.DEFAULT_COUNTS: 1M Opportunities, 10M
Tasks, 500K Events, the rest small; ``--tasks`` scales every object down in proportion for a
smoke run) seeded by the emulator's own generator, with the object weights of bench.scale
(`traffic_mix`):

- tight loop: ``TrafficGenerator.step()`` (and the automation follow-ups that come due)
  as fast as it goes for ``--seconds``; steps/s and commits/s, median of ``--repeat`` runs;
- timed loop: the generator's own thread (``start()``, Poisson arrivals) asked for
  ``--rate`` transactions/s for ``--run-seconds``; the rate it achieved.

``--profile`` adds a cProfile of one more tight-loop run (top 15 by cumulative time).
``--dir`` keeps the org (seeding 10M Tasks takes minutes) and reuses it on the next run.

    python -m bench.emulator_traffic --dir /tmp/traffic-org [--tasks 200000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.report import machine
from bench.scale import DEFAULT_COUNTS, traffic_mix
from sfdc_emulator.clock import Clock
from sfdc_emulator.generator import generate
from sfdc_emulator.store import OrgStore
from sfdc_emulator.traffic import Mix, TrafficGenerator

log = logging.getLogger("bench.emulator_traffic")

FULL_TASKS = DEFAULT_COUNTS["Task"]


def org_counts(tasks: int) -> dict[str, int]:
    """bench.scale's org shape, every object scaled by ``tasks`` / 10M (at least 5 rows)."""
    factor = tasks / FULL_TASKS
    return {name: max(5, round(n * factor)) for name, n in DEFAULT_COUNTS.items()}


def open_org(state_dir: Path, tasks: int, seed: int) -> OrgStore:
    """The org in ``state_dir``, seeded by the emulator's generator when new."""
    store = OrgStore(state_dir, clock=Clock())
    if store.count("Account", include_deleted=True) == 0:
        counts = org_counts(tasks)
        started = time.perf_counter()
        generate(store, counts["Task"], seed, counts=counts)
        log.info("seeded %s in %.0f s", counts, time.perf_counter() - started)
    else:
        log.info("reusing the org in %s (%s Tasks)", state_dir, f"{store.count('Task'):,}")
    return store


def _mix() -> Mix:
    _, objects = traffic_mix()
    return Mix(objects=objects)


def tight_loop(store: OrgStore, seconds: float, seed: int) -> dict[str, float]:
    """step() back to back, running due automation follow-ups in between as `_run` does."""
    traffic = TrafficGenerator(store, rate=0, seed=seed, mix=_mix())
    steps = 0
    started, cpu = time.perf_counter(), time.process_time()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        traffic._run_due_automation()
        traffic.step()
        steps += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    commits = sum(n for k, n in traffic.stats.items() if not k.startswith("skipped"))
    return {
        "steps_per_s": steps / elapsed,
        "commits_per_s": commits / elapsed,
        # the process's CPU (DuckDB's threads included) per step: what the traffic takes
        # from a busy machine, and from the Bulk/REST/Pub/Sub threads serving beside it
        "cpu_ms_per_step": 1000 * cpu / steps,
    }


def timed_loop(store: OrgStore, rate: float, seconds: float, seed: int) -> dict[str, float]:
    """The generator's own thread asked for ``rate`` transactions/s."""
    traffic = TrafficGenerator(store, rate=rate, seed=seed, mix=_mix())
    started = time.perf_counter()
    traffic.start()
    time.sleep(seconds)
    traffic.stop()
    elapsed = time.perf_counter() - started
    automation = sum(
        n for k, n in traffic.stats.items() if k.startswith(("automation", "recalculation"))
    )
    steps = sum(n for k, n in traffic.stats.items() if not k.startswith("skipped")) - automation
    return {"steps_per_s": steps / elapsed, "commits_per_s": (steps + automation) / elapsed}


def profile(store: OrgStore, seconds: float, seed: int, top: int = 15) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    result = tight_loop(store, seconds, seed)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return f"profiled run (slowed by cProfile): {result['steps_per_s']:.1f} steps/s\n" + (
        out.getvalue()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="the org's state dir, reused when it holds an org")
    parser.add_argument("--tasks", type=int, default=FULL_TASKS, help="Tasks of a new org")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=15.0, help="per tight-loop run")
    parser.add_argument("--repeat", type=int, default=3)
    rate, _ = traffic_mix()
    parser.add_argument(
        "--rate", type=float, default=round(1.5 * rate, 1), help="timed loop's asked rate"
    )
    parser.add_argument("--run-seconds", type=float, default=30.0, help="0 skips the timed loop")
    parser.add_argument("--profile", action="store_true", help="cProfile one more run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)

    with tempfile.TemporaryDirectory(prefix="bench-traffic-") as tmp:
        state_dir = Path(args.dir) if args.dir else Path(tmp) / "org"
        header = machine()
        store = open_org(state_dir, args.tasks, args.seed)
        try:
            runs = [tight_loop(store, args.seconds, args.seed + i) for i in range(args.repeat)]
            steps = statistics.median(r["steps_per_s"] for r in runs)
            commits = statistics.median(r["commits_per_s"] for r in runs)
            cpu_ms = statistics.median(r["cpu_ms_per_step"] for r in runs)
            lines = [
                header,
                f"org: {store.count('Task', include_deleted=True):,} Tasks, "
                f"{store.count('Opportunity', include_deleted=True):,} Opportunities",
                f"tight loop ({args.repeat} x {args.seconds:g} s): median {steps:.1f} steps/s,"
                f" {commits:.1f} commits/s, {cpu_ms:.1f} CPU ms/step (runs: "
                + ", ".join(f"{r['steps_per_s']:.1f}" for r in runs)
                + ")",
            ]
            if args.run_seconds > 0:
                timed = timed_loop(store, args.rate, args.run_seconds, args.seed + 100)
                lines.append(
                    f"timed loop asked {args.rate:g}/s for {args.run_seconds:g} s: "
                    f"{timed['steps_per_s']:.1f} steps/s, {timed['commits_per_s']:.1f} commits/s"
                )
            sys.stdout.write("\n".join(lines) + "\n")
            if args.profile:
                sys.stdout.write(profile(store, args.seconds, args.seed + 200))
        finally:
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

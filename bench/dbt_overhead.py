"""What dagster-dbt costs before dbt starts, with its stock resource and with ours.

    .venv/bin/python -m bench.dbt_overhead [--rounds 7]

Every dbt build is a Dagster run, and before it spawns dbt, dagster-dbt's `DbtCliResource`
runs `dbt --version` in a subprocess and builds a dbt Core adapter in-process.
`SfdcDbtCliResource` (sfdc_assets/dbt_assets.py) skips both. Side by side, alternating, a
fresh resource per round (a run is a fresh process): the wall and CPU seconds (this
process and its children) from `cli(["build"])` to the point where dbt would be spawned
(`DbtCliInvocation.run` is stubbed, so no dbt runs and no warehouse is needed).
Prints a markdown table of medians.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("dagster-dbt DbtCliResource", "SfdcDbtCliResource")


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _one(variant: str, target: Path) -> tuple[float, float]:
    from dagster_dbt import DbtCliResource
    from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation

    from sfdc_assets import dbt_assets

    cls = DbtCliResource if variant == VARIANTS[0] else dbt_assets.SfdcDbtCliResource
    dbt = cls(
        project_dir=str(dbt_assets.DBT_PROJECT_DIR),
        target=dbt_assets.dbt_target(),
        dbt_executable=dbt_assets.DBT_EXECUTABLE,
    )
    spawned: dict[str, float] = {}
    real_run = DbtCliInvocation.run

    def stop_here(*args: Any, **kwargs: Any) -> None:
        spawned["wall"], spawned["cpu"] = time.perf_counter(), _cpu()

    DbtCliInvocation.run = stop_here  # type: ignore[method-assign,assignment]
    try:
        wall, cpu = time.perf_counter(), _cpu()
        dbt.cli(["build"], target_path=target)
    finally:
        DbtCliInvocation.run = real_run  # type: ignore[method-assign]
    return spawned["wall"] - wall, spawned["cpu"] - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    import tempfile

    os.environ.setdefault("WAREHOUSE_DUCKDB_PATH", str(Path(tempfile.mkdtemp()) / "w.duckdb"))
    target = Path(tempfile.mkdtemp(prefix="dbt-overhead-"))
    _one(VARIANTS[1], target)  # warm the imports for both
    seconds: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            seconds[variant].append(_one(variant, target))
    load = os.getloadavg()[0]
    lines = [
        f"{args.rounds} rounds alternating, 1-min load {load:.2f} at the end",
        "",
        "| resource | wall s before dbt starts (median) | CPU s (median, incl. children) |",
        "|---|---:|---:|",
    ]
    for variant in VARIANTS:
        walls = [w for w, _ in seconds[variant]]
        cpus = [c for _, c in seconds[variant]]
        lines.append(
            f"| {variant} | {statistics.median(walls):.2f} | {statistics.median(cpus):.2f} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

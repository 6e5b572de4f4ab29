"""CPU priority of runs: the CDC micro-batch runs keep the CPU, every other run yields it.

A revenue change is queryable only after a CDC run has started (a new process importing the
code location), landed and applied it. On a machine that also runs dbt builds, polls,
reconciliations and bootstraps, those compete with it for the same cores: on 2 cores at
production rates (docs/performance.md, `make bench-scale`) a CDC run waited for the CPU more
than for anything else. So every run that is not a channel group's micro-batch run (the
CDC sensor's, tagged `sfdc/channel_group`) lowers its own priority by
`SFDC_BACKGROUND_NICE` (default 10, 0 = off) before its first step. The kernel then gives
such runs what the CDC runs leave, and all of the CPU when there are none: a background run
is slower only while it competes. It changes no result, only who waits.

The executor applies it, so it covers every job of the code location in one place: each
step, and what a step starts (dbt's process inherits the priority).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from sfdc_assets.keys import GROUP_TAG

log = logging.getLogger(__name__)

BACKGROUND_NICE_ENV = "SFDC_BACKGROUND_NICE"
DEFAULT_BACKGROUND_NICE = 10
# Linux's highest niceness (lowest priority).
MAX_NICE = 19


def background_nice(environ: Mapping[str, str]) -> int:
    """The niceness increment of background runs from `SFDC_BACKGROUND_NICE`."""
    text = environ.get(BACKGROUND_NICE_ENV, "").strip()
    if not text:
        return DEFAULT_BACKGROUND_NICE
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_NICE:
        raise ValueError(
            f"{BACKGROUND_NICE_ENV}={text!r} is not a niceness increment: set a whole number "
            f"from 0 (background runs keep normal priority) to {MAX_NICE} (lowest), or unset "
            f"it for the default {DEFAULT_BACKGROUND_NICE}"
        )
    return value


def is_foreground(tags: Mapping[str, str]) -> bool:
    """A channel group's micro-batch run (the CDC sensor's): the seconds-scale path."""
    return GROUP_TAG in tags


def lower_priority(increment: int) -> int:
    """Raise this process's niceness by `increment`, for every thread it has (Linux keeps
    a niceness per thread; threads started later inherit their creator's). Returns the
    main thread's new niceness."""
    if increment <= 0:
        return os.getpriority(os.PRIO_PROCESS, 0)
    tasks = Path("/proc/self/task")
    tids = [int(p.name) for p in tasks.iterdir()] if tasks.is_dir() else [0]
    for tid in tids:
        try:
            now = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, now + increment))
        except ProcessLookupError:  # the thread ended in between
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)


class PrioritizedExecutor(dg.Executor):
    """Dagster's in-process executor, with background runs lowered first (module doc)."""

    def __init__(self, inner: dg.Executor, increment: int) -> None:
        self._inner = inner
        self._increment = increment

    @property
    def retries(self) -> Any:
        """The in-process executor's retry mode."""
        return self._inner.retries

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        """Lower the run's priority unless it is a CDC micro-batch run, then execute."""
        if not is_foreground(plan_context.dagster_run.tags):
            nice = lower_priority(self._increment)
            log.info("background run: niceness %d (%s)", nice, BACKGROUND_NICE_ENV)
        yield from self._inner.execute(plan_context, execution_plan)


@dg.executor(
    name="sfdc_in_process",
    config_schema=dg.in_process_executor.config_field,
    requirements=dg.in_process_executor.get_requirements,
)
def prioritized_in_process_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Every step in the run's own process (as `in_process_executor`), background runs at
    a lower CPU priority (`SFDC_BACKGROUND_NICE`, sfdc_assets/priority.py)."""
    create = dg.in_process_executor.executor_creation_fn
    assert create is not None  # set by @executor
    inner = create(init_context)
    return PrioritizedExecutor(inner, background_nice(os.environ))

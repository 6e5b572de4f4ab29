"""Shared by the benchmarks: machine facts and writing one section of docs/performance.md.

Each benchmark owns one `## ...` section and replaces only that one, so benchmarks run at
different times keep each other's results.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "performance.md"


def machine() -> str:
    """One line naming the machine, for the results' header."""
    cpu = platform.processor() or platform.machine()
    mem_gb = psutil.virtual_memory().total / 2**30
    load = os.getloadavg()[0]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return (
        f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} CPUs ({cpu}), {mem_gb:.0f} GiB, "
        f"Python {platform.python_version()}, commit {commit or 'n/a'}, "
        f"1-min load {load:.2f} at start"
    )


def _section_span(text: str, heading: str) -> tuple[int, int] | None:
    """Where the section that starts with `heading` begins and ends in `text`, if present."""
    start = text.find(heading + "\n")
    if start == -1:
        return None
    nxt = text.find("\n## ", start + len(heading))
    return start, nxt if nxt != -1 else len(text)


def section_body(heading: str) -> str:
    """The current text of the section that starts with `heading`, without it ("" if none)."""
    text = DOC.read_text() if DOC.exists() else ""
    span = _section_span(text, heading)
    return text[span[0] + len(heading) : span[1]] if span else ""


def replace_section(heading: str, body: str) -> None:
    """Replace (or append) the section that starts with `heading` (`## Title`)."""
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    section = f"{heading}\n\n{body.strip()}\n"
    span = _section_span(text, heading)
    if span is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        text = text[: span[0]] + section + text[span[1] :]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


class RssSampler:
    """Peak resident memory of this process (and optionally others), sampled every 50 ms."""

    def __init__(self, pids: tuple[int, ...] = ()) -> None:
        self._procs = [psutil.Process(), *(psutil.Process(p) for p in pids)]
        self.peak = [0] * len(self._procs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for i, proc in enumerate(self._procs):
            with contextlib.suppress(psutil.NoSuchProcess):
                self.peak[i] = max(self.peak[i], proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

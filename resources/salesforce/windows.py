"""Backfill windows: half-open SystemModstamp ranges, the read lag, and splitting by time.

A window is ``[start, end)`` on SystemModstamp, in whole seconds. Splitting never changes
what a set of windows covers: the pieces of a split partition their parent exactly (every
instant of the parent is in exactly one piece), whatever the data looked like when they
were planned (live traffic can move rows between pieces; it cannot open a hole).

SystemModstamp is indexed in every org, so a window's edges (``ORDER BY SystemModstamp
ASC/DESC LIMIT 1``) are cheap, unlike a ``COUNT()`` of the window, which scans it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from resources.salesforce import soql


@dataclass(frozen=True)
class Window:
    """``[start, end)`` on SystemModstamp."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for v in (self.start, self.end):
            if v.tzinfo is None or v.microsecond:
                raise ValueError("window bounds must be tz-aware whole seconds")
        if self.end <= self.start:
            raise ValueError(f"empty window [{self.start}, {self.end})")

    def where(self) -> str:
        """The SOQL condition selecting exactly this window."""
        return (
            f"SystemModstamp >= {soql.datetime_literal(self.start)}"
            f" AND SystemModstamp < {soql.datetime_literal(self.end)}"
        )

    def key(self) -> str:
        """A stable, path-safe name for the window."""
        return f"{self.start:%Y%m%dT%H%M%S}-{self.end:%Y%m%dT%H%M%S}"

    def contains(self, instant: datetime) -> bool:
        """Whether ``instant`` (tz-aware) falls in the window."""
        return self.start <= instant < self.end


def floor_second(value: datetime) -> datetime:
    """``value`` truncated to the whole second (UTC)."""
    return value.astimezone(UTC).replace(microsecond=0)


def clamp_to_lag(start: datetime, end: datetime, now: datetime, lag: timedelta) -> Window | None:
    """The window ``[start, min(end, now - lag))``, or None if nothing is old enough.

    Reads of the last minutes are eventually consistent (long transactions commit after
    their SystemModstamp); the CDC stream covers them (DESIGN §5).
    """
    limit = floor_second(now - lag)
    start, end = floor_second(start), min(floor_second(end), limit)
    if end <= start:
        return None
    return Window(start, end)


def split_by_time(window: Window, first: datetime, last: datetime, pieces: int) -> list[Window]:
    """Split ``window`` into at most ``pieces`` consecutive windows that partition it.

    ``first`` and ``last`` are the smallest and largest SystemModstamp seen in the window:
    the span ``[first, last]`` (widened to whole seconds) is cut into ``pieces`` equal
    parts, and the outermost pieces keep the window's own bounds, so a row stamped outside
    the span (committed since the probe) is still covered. A span shorter than ``pieces``
    seconds gives fewer pieces: boundaries are whole seconds and never repeat.
    """
    if pieces < 1:
        raise ValueError(f"pieces must be >= 1, got {pieces}")
    lo = int(max(floor_second(first), window.start).timestamp())
    hi = int(min(floor_second(last) + timedelta(seconds=1), window.end).timestamp())
    bounds = [window.start]
    for k in range(1, pieces):
        cut = lo + k * max(hi - lo, 0) // pieces
        # Cuts fall strictly inside the seen span: a piece before it or after it would
        # hold nothing when planned.
        if lo < cut < hi and bounds[-1] < datetime.fromtimestamp(cut, UTC) < window.end:
            bounds.append(datetime.fromtimestamp(cut, UTC))
    bounds.append(window.end)
    return [Window(a, b) for a, b in pairwise(bounds)]

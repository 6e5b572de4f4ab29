"""Backfill windows: half-open SystemModstamp ranges, the read lag, Id-keyset splitting.

A window is ``[start, end)`` on SystemModstamp (whole seconds) and optionally
``[id_lo, id_hi)`` on Id. Splitting never changes what a set of windows covers: the Id
ranges of a split partition their parent's range exactly, whatever the row counts were
when they were planned (live traffic can move them; it cannot open a hole).

Ids compare as 15-character base62 strings (``0-9A-Za-z``, ASCII order), which is also
numeric order of the counter part (sfdc_emulator/ids.py; Salesforce Ids share the layout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from resources.salesforce import soql
from resources.salesforce.errors import WindowTooLargeError

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGIT = {c: i for i, c in enumerate(BASE62)}
ID_LEN = 15
ID_SPACE = 62**ID_LEN


def id_to_int(record_id: str) -> int:
    """The 15-char case-sensitive part of an Id as an integer (order-preserving)."""
    n = 0
    for ch in record_id[:ID_LEN].ljust(ID_LEN, "0"):
        n = n * 62 + _DIGIT[ch]
    return n


def int_to_id(n: int) -> str:
    """Inverse of :func:`id_to_int`: a 15-char base62 boundary."""
    if not 0 <= n < ID_SPACE:
        raise ValueError(f"Id boundary out of range: {n}")
    out = []
    for _ in range(ID_LEN):
        n, r = divmod(n, 62)
        out.append(BASE62[r])
    return "".join(reversed(out))


@dataclass(frozen=True)
class Window:
    """``[start, end)`` on SystemModstamp, optionally ``[id_lo, id_hi)`` on Id."""

    start: datetime
    end: datetime
    id_lo: str | None = None
    id_hi: str | None = None

    def __post_init__(self) -> None:
        for v in (self.start, self.end):
            if v.tzinfo is None or v.microsecond:
                raise ValueError("window bounds must be tz-aware whole seconds")
        if self.end <= self.start:
            raise ValueError(f"empty window [{self.start}, {self.end})")

    def where(self) -> str:
        """The SOQL condition selecting exactly this window."""
        parts = [
            f"SystemModstamp >= {soql.datetime_literal(self.start)}",
            f"SystemModstamp < {soql.datetime_literal(self.end)}",
        ]
        if self.id_lo is not None:
            parts.append(f"Id >= '{soql.id_boundary(self.id_lo)}'")
        if self.id_hi is not None:
            parts.append(f"Id < '{soql.id_boundary(self.id_hi)}'")
        return " AND ".join(parts)

    def key(self) -> str:
        """A stable, path-safe name for the window."""
        s = f"{self.start:%Y%m%dT%H%M%S}-{self.end:%Y%m%dT%H%M%S}"
        if self.id_lo or self.id_hi:
            s += f"-{self.id_lo or 'min'}-{self.id_hi or 'max'}"
        return s


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


CountFn = Callable[[Window], int]


def split_by_id(
    window: Window,
    total: int,
    count: CountFn,
    max_rows: int,
    *,
    lo: int,
    hi: int,
) -> list[Window]:
    """Split ``window`` into Id ranges of at most ``max_rows`` rows (as counted now).

    ``[lo, hi)`` is the integer Id range to split (e.g. from the smallest and largest Id
    of the window); the result still covers the whole of ``window``. Halving costs one
    COUNT per split because the right half's count is the parent's minus the left's.
    Empty ranges are dropped (they select nothing).
    """
    out: list[Window] = []
    stack = [(lo, hi, total)]
    while stack:
        a, b, n = stack.pop()
        if n <= 0:
            continue
        # The outermost pieces keep the parent's own bounds, so rows outside [lo, hi)
        # (e.g. below the smallest Id seen when planning) are still covered.
        w = replace(
            window,
            id_lo=window.id_lo if a == lo else int_to_id(a),
            id_hi=window.id_hi if b == hi else int_to_id(b),
        )
        if n <= max_rows:
            out.append(w)
            continue
        if b - a <= 1:
            raise WindowTooLargeError(
                f"window {window.key()} has {n} rows for one Id; cannot split below "
                f"max_rows={max_rows}"
            )
        mid = (a + b) // 2
        left = replace(w, id_hi=int_to_id(mid))
        n_left = count(left)
        # Right first onto the stack so the output is in Id order.
        stack.append((mid, b, n - n_left))
        stack.append((a, mid, n_left))
    return out

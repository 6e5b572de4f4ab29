"""The CDC sensors' cursor, typed: where to resume, and what is still owed.

The cursor is JSON in Dagster's sensor storage. `CdcCursor.from_json` reads every cursor
an earlier version wrote (missing keys take their defaults) and `to_json` writes the same
keys, so a deploy never loses a replay position. The state moves only through the
methods below, each a small rule of DESIGN §5 that the sensor's tick applies in order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

EARLIEST = "EARLIEST"
LATEST = "LATEST"
# A stored replay id: the subscription resumes right after it.
CUSTOM = "CUSTOM"


def dumps(value: Any) -> str:
    """Compact, sorted JSON (cursors and run config compare equal when their data does)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


@dataclass(frozen=True)
class Landed:
    """A landed micro-batch awaiting its run: what `requests_for` reads of a manifest."""

    kind: str
    object: str
    day: str
    batch_id: str
    meta: dict[str, Any]

    @classmethod
    def of(cls, manifest: Any) -> Landed:
        """From a landing manifest."""
        meta = {"source": manifest.meta.get("source", "cdc")}
        return cls(manifest.kind, manifest.object, manifest.day, manifest.batch_id, meta)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Landed:
        """From the sensor cursor."""
        return cls(data["kind"], data["object"], data["day"], data["batch_id"], data["meta"])

    def to_json(self) -> dict[str, Any]:
        """For the sensor cursor."""
        return asdict(self)


@dataclass(frozen=True)
class Rebackfill:
    """A targeted re-backfill the sensor owes: of `object` from `since_ms`, once due."""

    object: str
    since_ms: int
    reason: str
    # Epoch seconds: not before the changes to re-read are older than the Bulk read lag.
    not_before: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rebackfill:
        """From the sensor cursor."""
        return cls(data["object"], data["since_ms"], data["reason"], data["not_before"])

    def to_json(self) -> dict[str, Any]:
        """For the sensor cursor."""
        return asdict(self)


@dataclass
class CdcCursor:
    """Replay position, last landed commit, owed re-backfills and unrequested batches."""

    # Hex of the last replay id landed; None before the first event (or after expiry).
    replay: str | None = None
    # Where to subscribe without a replay id: EARLIEST the first time (LATEST with no
    # events would leave no cursor), LATEST after an expired one; CUSTOM with one.
    policy: str = EARLIEST
    last_commit_ms: int | None = None
    pending: list[Rebackfill] = field(default_factory=list)
    # Landed batches waiting for the group's queued run to start (back-pressure).
    unrequested: list[Landed] = field(default_factory=list)
    # Set while resubscribed at LATEST without a replay id yet (after an expired one).
    unpositioned_since_ms: int | None = None

    @classmethod
    def from_json(cls, text: str | None) -> CdcCursor:
        """Parse a stored cursor (None or empty: a new sensor)."""
        data = json.loads(text) if text else {}
        return cls(
            replay=data.get("replay"),
            policy=data.get("policy", EARLIEST),
            last_commit_ms=data.get("last_commit_ms"),
            pending=[Rebackfill.from_json(p) for p in data.get("pending", [])],
            unrequested=[Landed.from_json(b) for b in data.get("unrequested", [])],
            unpositioned_since_ms=data.get("unpositioned_since_ms"),
        )

    def to_json(self) -> str:
        """The stored form (the same keys every version wrote)."""
        return dumps(
            {
                "replay": self.replay,
                "policy": self.policy,
                "last_commit_ms": self.last_commit_ms,
                "pending": [p.to_json() for p in self.pending],
                "unrequested": [b.to_json() for b in self.unrequested],
                "unpositioned_since_ms": self.unpositioned_since_ms,
            }
        )

    def copy(self) -> CdcCursor:
        """An independent copy (a tick works on one; a failed tick leaves the stored one)."""
        return CdcCursor.from_json(self.to_json())

    @property
    def replay_id(self) -> bytes | None:
        """The stored replay id in wire form."""
        return bytes.fromhex(self.replay) if self.replay else None

    def owe(self, names: list[str], since_ms: int, reason: str, not_before: float) -> None:
        """Schedule a re-backfill of each object from `since_ms`."""
        self.pending += [Rebackfill(n, since_ms, reason, not_before) for n in names]

    def take_due(self, now_s: float) -> list[Rebackfill]:
        """Remove and return the re-backfills whose time has come, in order."""
        due = [p for p in self.pending if p.not_before <= now_s]
        self.pending = [p for p in self.pending if p.not_before > now_s]
        return due

    def resubscribe_latest(self, now_ms: int) -> None:
        """The stored replay id expired: drop it and take new events from now on."""
        self.replay, self.policy = None, LATEST
        self.unpositioned_since_ms = now_ms

    def saw_commits(self, commit_ms: list[int]) -> None:
        """Remember the newest commit landed (where an expiry re-backfill starts)."""
        if commit_ms:
            self.last_commit_ms = max([*commit_ms, self.last_commit_ms or 0])

    def position(self, replay_id: bytes, now_ms: int) -> int | None:
        """Store the drain's replay id. Returns when the sensor was last resubscribed
        without a position, if that is before now: what was committed since is unread."""
        since = self.unpositioned_since_ms
        self.unpositioned_since_ms = None
        self.replay, self.policy = replay_id.hex(), CUSTOM
        return since if since is not None and since < now_ms else None

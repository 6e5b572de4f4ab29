"""From one transaction's changes to its CDC events, as Salesforce shapes them.

Identical UPDATEs (same changed values and nulled set), DELETEs and GAP_UPDATEs of one
object share one event (at most :data:`MAX_MERGED_IDS` recordIds); CREATE and UNDELETE are
never merged. Past the overflow limit (1 per create/delete/undelete, 1 per changed field
of an update) the remaining changes become one GAP_OVERFLOW per entity, after the normal
events (reference §2.5). Encoding is :class:`sfdc_emulator.cdc.EventLayout`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sfdc_emulator.cdc import EventLayout
from sfdc_emulator.transaction import Change

# Merged events carry several recordIds; bounded so one event stays far below the 1 MB cap.
MAX_MERGED_IDS = 1000


@dataclass
class PendingEvent:
    """An encoded event not yet in the log (it gets its replay id when published)."""

    entity: str
    change_type: str
    commit_ts: int
    transaction_key: str
    sequence_number: int
    record_ids: list[str]
    schema_id: str
    event_uuid: str
    payload: bytes


@dataclass(frozen=True)
class CommitHeader:
    """The header fields every event of one transaction shares."""

    commit_ts: int
    commit_number: int
    transaction_key: str
    origin: str
    user: str


@dataclass
class _Group:
    change: Change  # the first change: its body stands for the whole group
    ids: list[str]


def build_events(
    changes: Sequence[Change],
    layout_of: Callable[[str], EventLayout],
    header: CommitHeader,
    overflow_limit: int,
) -> list[PendingEvent]:
    """The events of one transaction, in sequence order."""
    groups, overflow = _merge(changes, overflow_limit)
    events: list[PendingEvent] = []
    seq = 0
    for group in groups:
        seq += 1
        events.append(_group_event(group, layout_of(group.change.object), header, seq))
    for obj in overflow:
        layout = layout_of(obj)
        seq += 1
        body = layout.body({}, only=())
        events.append(_event(layout, header, obj, "GAP_OVERFLOW", [], seq, body, [], []))
    return events


def _merge(changes: Sequence[Change], overflow_limit: int) -> tuple[list[_Group], list[str]]:
    """Changes grouped into events, and the objects whose changes overflowed."""
    groups: list[_Group] = []
    merge_index: dict[tuple, _Group] = {}
    overflow: dict[str, None] = {}
    cost = 0
    for ch in changes:
        cost += len(ch.fields) if ch.change_type == "UPDATE" else 1
        if cost > overflow_limit:
            overflow.setdefault(ch.object, None)
            continue
        key = _merge_key(ch)
        group = merge_index.get(key) if key is not None else None
        if group is not None and len(group.ids) < MAX_MERGED_IDS:
            group.ids.append(ch.record_id)
            continue
        group = _Group(ch, [ch.record_id])
        groups.append(group)
        if key is not None:
            merge_index[key] = group
    return groups, list(overflow)


def _merge_key(ch: Change) -> tuple | None:
    """Changes with equal keys share one event; None: never merged."""
    if ch.change_type == "GAP_UPDATE":
        return (ch.object, ch.change_type, (), tuple(ch.nulled))
    if ch.change_type == "UPDATE":
        body = tuple((f, ch.row[f]) for f in ch.fields)  # type: ignore[index]
        return (ch.object, ch.change_type, body, tuple(ch.nulled))
    if ch.change_type == "DELETE":
        return (ch.object, "DELETE")
    return None


def _group_event(
    group: _Group, layout: EventLayout, header: CommitHeader, seq: int
) -> PendingEvent:
    ch = group.change
    if ch.change_type == "UPDATE":
        body = layout.body(ch.row or {}, only=set(ch.fields))
        changed = layout.bitmaps(ch.fields)
        nulled = layout.bitmaps(ch.nulled)
    elif ch.change_type in ("CREATE", "UNDELETE"):
        body = layout.body(ch.row or {})
        changed, nulled = [], []
    else:
        # DELETE and GAP_*: header only
        body = layout.body({}, only=())
        changed, nulled = [], []
    number = 1 if ch.change_type.startswith("GAP_") else seq
    return _event(
        layout, header, ch.object, ch.change_type, group.ids, number, body, changed, nulled
    )


def _event(
    layout: EventLayout,
    header: CommitHeader,
    entity: str,
    change_type: str,
    record_ids: list[str],
    sequence: int,
    body: Mapping[str, Any],
    changed: list[str],
    nulled: list[str],
) -> PendingEvent:
    event_header = {
        "entityName": entity,
        "recordIds": record_ids,
        "changeType": change_type,
        "changeOrigin": header.origin,
        "transactionKey": header.transaction_key,
        "sequenceNumber": sequence,
        "commitTimestamp": header.commit_ts,
        "commitNumber": header.commit_number,
        "commitUser": header.user,
        "nulledFields": nulled,
        "diffFields": [],
        "changedFields": changed,
    }
    return PendingEvent(
        entity=entity,
        change_type=change_type,
        commit_ts=header.commit_ts,
        transaction_key=header.transaction_key,
        sequence_number=sequence,
        record_ids=list(record_ids),
        schema_id=layout.schema_id,
        event_uuid=str(uuid.uuid4()),
        payload=layout.encode(event_header, body),
    )

"""Extraction outputs -> the sync engine's typed change batches (``sync_engine.changes``).

Bulk/REST snapshot rows and decoded CDC rows become change rows through the engine's own
builders, so ``change_id`` and ``version`` are computed in exactly one place. This module
only converts values from their wire form: CDC sends datetimes as epoch ms, dates as days
since epoch and numbers as Avro doubles (reference §2.3); Bulk frames are already typed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow as pa

from resources.landing import BatchRef, LandingStore, Manifest
from resources.salesforce.cdc_decode import ChangeRow
from resources.salesforce.csv_types import OBSERVED_AT, read_page, schema_for
from resources.salesforce.rest import ObjectDescribe
from sync_engine.changes import build_batch, cdc_change, conform_batch, deleted_change
from sync_engine.snapshots import fill_changes, snapshot_changes
from sync_engine.spec import ObjectSpec

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DATE = dt.date(1970, 1, 1)


def cdc_value(sf_type: str, scale: int | None, value: Any) -> Any:
    """A CDC (Avro) value in the Python type the engine's Arrow column expects."""
    if value is None:
        return None
    t = sf_type.lower()
    if t == "datetime":
        return _EPOCH + dt.timedelta(milliseconds=int(value))
    if t == "date":
        return _EPOCH_DATE + dt.timedelta(days=int(value))
    if t in ("currency", "double", "percent"):
        q = Decimal(1).scaleb(-(2 if scale is None else int(scale)))
        return Decimal(repr(float(value))).quantize(q)
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def cdc_batch(spec: ObjectSpec, rows: Iterable[ChangeRow], batch_id: str | None = None) -> pa.Table:
    """Change rows of one object from decoded CDC rows (GAP_OVERFLOW rows have no id and
    are reported by the drain instead)."""
    types = {f.name: (f.sf_type, f.scale) for f in spec.fields}
    out = []
    for r in rows:
        if r.record_id is None or r.record_id.endswith("*"):
            continue
        values = {k: cdc_value(*types[k], v) if k in types else v for k, v in r.payload.items()}
        is_update = r.change_type == "UPDATE"
        nulled = [k for k in r.set_fields if r.payload.get(k) is None] if is_update else []
        out.append(
            cdc_change(
                spec,
                event_uuid=r.event_id,
                record_id=r.record_id,
                change_type=r.change_type,
                commit_ms=r.commit_ts,
                transaction_key=r.transaction_key,
                sequence_number=r.sequence_number,
                replay_id=r.replay_id_bytes,
                values=values,
                changed_fields=[k for k in r.set_fields if k not in nulled],
                nulled_fields=nulled,
                schema_id=r.schema_id,
                payload=json.dumps(dict(r.payload), sort_keys=True, default=_json_default),
                commit_user=r.commit_user,
            )
        )
    return build_batch(spec, out, batch_id)


def _exact_rows(spec: ObjectSpec, frame: pl.DataFrame) -> Iterator[dict[str, Any]]:
    """The frame's rows, with Bulk doubles (read as floats) as the exact decimals the
    engine stores, at each field's scale."""
    decimals = {
        f.name: Decimal(1).scaleb(-(2 if f.scale is None else int(f.scale)))
        for f in spec.fields
        if f.sf_type.lower() in ("currency", "double", "percent")
    }
    floats = [n for n in decimals if n in frame.columns and frame.schema[n].is_float()]
    for rec in frame.iter_rows(named=True):
        for name in floats:
            if rec[name] is not None:
                rec[name] = Decimal(repr(rec[name])).quantize(decimals[name])
        yield rec


def snapshot_batch(
    spec: ObjectSpec, frame: pl.DataFrame, *, source: str = "bulk", batch_id: str | None = None
) -> pa.Table:
    """Change rows from a landed Bulk chunk (or REST rows as a frame) carrying R: one
    ``changes.snapshot_change`` per row, built column at a time (``sync_engine.snapshots``)."""
    return snapshot_changes(spec, frame, observed_ms=OBSERVED_AT, source=source, batch_id=batch_id)


def fill_batch(
    spec: ObjectSpec, frame: pl.DataFrame, fields: Sequence[str], *, batch_id: str | None = None
) -> pa.Table:
    """Fill changes from a landed column-only Bulk chunk (``Id``, ``SystemModstamp`` and
    the fields to fill, carrying R): each sets only ``fields`` (``changes.fill_change`` per
    row, built column at a time by ``sync_engine.snapshots``)."""
    return fill_changes(spec, frame, fields, observed_ms=OBSERVED_AT, batch_id=batch_id)


def land_cdc(
    landing: LandingStore,
    topic: str,
    rows: Sequence[ChangeRow],
    specs: Mapping[str, ObjectSpec],
) -> list[Manifest]:
    """Write one immutable micro-batch per object and change day; idempotent per drain.

    The batch id is derived from the replay ids the drain covered, so landing the same
    drain twice (a crash before the cursor moved) commits nothing new.
    """
    if not rows:
        return []
    first, last = rows[0].replay_id_bytes.hex(), rows[-1].replay_id_bytes.hex()
    slug = topic.strip("/").replace("/", "_").replace("__", "_")
    by_object: dict[str, list[ChangeRow]] = defaultdict(list)
    for r in rows:
        by_object[r.entity].append(r)
    manifests = []
    for entity, entity_rows in sorted(by_object.items()):
        if entity not in specs:
            continue
        table = cdc_batch(specs[entity], entity_rows)
        if table.num_rows == 0:
            continue
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        for (day,), part in frame.group_by("change_date", maintain_order=True):
            batch_id = f"cdc-{slug}-{first}-{last}"
            ref = BatchRef("cdc", entity, day, batch_id)
            batch = conform_batch(
                specs[entity], part.with_columns(pl.lit(batch_id).alias("batch_id")).to_arrow()
            )
            manifests.append(
                landing.write_batch(
                    ref,
                    pl.from_arrow(batch),  # type: ignore[arg-type]
                    {"source": "cdc", "topic": topic, "first_replay": first, "last_replay": last},
                )
            )
    return manifests


def rest_frame(
    records: list[dict[str, Any]], describe: ObjectDescribe, observed_ms: int
) -> pl.DataFrame:
    """REST records -> the typed frame a Bulk page would give (same typing code)."""
    names = describe.field_names
    text = {
        n: [
            ""
            if r.get(n) is None
            else ("true" if r[n] is True else "false" if r[n] is False else str(r[n]))
            for r in records
        ]
        for n in names
    }
    frame = read_page(pl.DataFrame(text).write_csv().encode(), schema_for(describe, names))
    return frame.with_columns(pl.lit(observed_ms, dtype=pl.Int64).alias(OBSERVED_AT))


@dataclass
class Reread:
    """What a re-read by Id landed: the batches, and how many records it found or not."""

    manifests: list[Manifest] = field(default_factory=list)
    found: int = 0
    purged: int = 0


def land_rest_snapshots(
    client: Any,
    landing: LandingStore,
    topic: str,
    ids_by_object: Mapping[str, set[str]],
    specs: Mapping[str, tuple[ObjectSpec, ObjectDescribe]],
    tag: str,
    reason: str,
    deleted_at: Mapping[str, dt.datetime] | None = None,
) -> list[Manifest]:
    """Re-read records by Id over REST and land them as `rest` micro-batches (see
    `reread_by_id`); the landed manifests."""
    return reread_by_id(
        client, landing, topic, ids_by_object, specs, tag, reason, deleted_at
    ).manifests


def reread_by_id(
    client: Any,
    landing: LandingStore,
    topic: str,
    ids_by_object: Mapping[str, set[str]],
    specs: Mapping[str, tuple[ObjectSpec, ObjectDescribe]],
    tag: str,
    reason: str,
    deleted_at: Mapping[str, dt.datetime] | None = None,
) -> Reread:
    """Re-read records by Id over REST (queryAll: deleted ones come back with IsDeleted)
    and land them as micro-batches: gap events, records changed by CDC (whose formula
    fields and SystemModstamp no event carries), drift a reconciliation found.

    A record the re-read does not find was purged (hard-deleted past the Recycle Bin: no
    event says so): it lands as a `delete_scan` change, deleted at `deleted_at[id]` when
    getDeleted reported it, else at the read's start. `specs`: object -> (engine spec,
    describe). Named by `topic` and `tag`, so landing the same repair twice is a no-op.
    """
    out = Reread()
    slug = topic.strip("/").replace("/", "_").replace("__", "_")
    deleted_at = deleted_at or {}
    for entity, ids in sorted(ids_by_object.items()):
        if entity not in specs or not ids:
            continue
        spec, describe = specs[entity]
        rows = client.rest.retrieve(entity, sorted(ids), describe.field_names)
        tables = []
        if rows.records:
            frame = rest_frame(rows.records, describe, rows.observed_at_ms)
            tables.append(conform_batch(spec, snapshot_batch(spec, frame, source="rest")))
        found = {r["Id"] for r in rows.records}
        observed = _EPOCH + dt.timedelta(milliseconds=rows.observed_at_ms)
        purged = sorted(set(ids) - found)
        if purged:
            deletes = [
                deleted_change(
                    spec,
                    record_id=rid,
                    deleted_at=deleted_at.get(rid, observed),
                    read_started_at=observed,
                )
                for rid in purged
            ]
            tables.append(conform_batch(spec, build_batch(spec, deletes)))
        out.found += len(found)
        out.purged += len(purged)
        if not tables:
            continue
        changes = pl.from_arrow(pa.concat_tables(tables))
        assert isinstance(changes, pl.DataFrame)
        for (day,), part in changes.group_by("change_date", maintain_order=True):
            ref = BatchRef("cdc", entity, day, f"rest-{slug}-{tag}")
            meta = {"source": "rest", "topic": topic, "repair_of": reason}
            out.manifests.append(landing.write_batch(ref, part, meta))
    return out

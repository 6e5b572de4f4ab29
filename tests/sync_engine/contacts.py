"""A PII-bearing test object (Contact) and a loader that takes changes the way production
does: landed as a CDC micro-batch, validated file written, appended to raw, applied."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import polars as pl

from resources.landing import BatchRef, LandingStore
from sfdc_assets import batches
from sync_engine import changes as ch
from sync_engine.apply import append_raw, apply_batch
from sync_engine.changes import build_batch, conform_batch
from sync_engine.erasure import canonical_id
from sync_engine.spec import ObjectSpec
from sync_engine.warehouse import Warehouse

SPEC = ObjectSpec.of(
    "Contact",
    [
        ("FirstName", "string"),
        ("LastName", "string"),
        ("Email", "email"),
        ("Phone", "phone"),
        ("Birthdate", "date"),
        ("Title", "string"),
        ("AccountId", "reference"),
    ],
)
# As objects.yaml configures Contact: Name and MobilePhone/MailingStreet are not in SPEC.
PII = (
    "FirstName",
    "LastName",
    "Name",
    "Email",
    "Phone",
    "MobilePhone",
    "MailingStreet",
    "Birthdate",
)
BASE_MS = 1_717_200_000_000  # 2024-06-01 00:00 UTC
DAY = dt.date(2024, 6, 1)


def contact_id(n: int) -> str:
    """A valid 18-character Contact Id (the suffix computed as Salesforce does)."""
    return canonical_id(f"0035e{n:010d}")


def values(n: int) -> dict[str, Any]:
    """Field values of contact `n` (unique email and phone per contact)."""
    return {
        "FirstName": f"First{n}",
        "LastName": f"Last{n}",
        "Email": f"person{n}@example.com",
        "Phone": f"+1555000{n:04d}",
        "Birthdate": dt.date(1980, 1, 1) + dt.timedelta(days=n),
        "Title": f"Title{n % 3}",
        "AccountId": "0015e00000AbCdEAAV",
    }


def create(n: int, step: int = 0) -> dict[str, Any]:
    """A CDC CREATE of contact `n`."""
    return ch.cdc_change(
        SPEC,
        event_uuid=f"create-{n}",
        record_id=contact_id(n),
        change_type="CREATE",
        commit_ms=BASE_MS + n * 1000 + step,
        replay_id=n * 10 + step + 1,
        values=values(n),
    )


def update_title(n: int, step: int) -> dict[str, Any]:
    """A CDC UPDATE of contact `n`'s Title (a second scd2 version)."""
    return ch.cdc_change(
        SPEC,
        event_uuid=f"update-{n}-{step}",
        record_id=contact_id(n),
        change_type="UPDATE",
        commit_ms=BASE_MS + n * 1000 + 100 + step,
        replay_id=n * 10 + step + 2,
        values={"Title": f"Updated{step}"},
        changed_fields=["Title"],
    )


def land_and_apply(
    warehouse: Warehouse,
    landing: LandingStore,
    rows: Sequence[dict[str, Any]],
    name: str,
    spec: ObjectSpec = SPEC,
) -> batches.PartRef:
    """Land `rows` as one CDC micro-batch, then raw step + current/scd2 step, for real."""
    table = build_batch(spec, rows)
    ref = BatchRef("cdc", spec.name, DAY, name)
    manifest = landing.write_batch(ref, pl.from_arrow(table), {"source": "cdc"})
    part = batches.PartRef.of(manifest, 0)
    changes = conform_batch(spec, batches.read_part(landing, manifest, 0).to_arrow())
    batches.write_validated(landing, part, changes)
    append_raw(warehouse, spec, changes, batch_id=part.label)
    apply_batch(warehouse, spec, batches.read_validated(landing, part), batch_id=part.label)
    return part


def quarantine(warehouse: Warehouse, ns: Sequence[int], label: str = "q-batch") -> None:
    """Quarantine one row per contact `n` (as the raw step does for a failed row)."""
    rows = pl.DataFrame(
        {
            "change_id": [f"bad-{n}" for n in ns],
            "record_id": [contact_id(n) for n in ns],
            "reason": ["Email: not an email" for _ in ns],
            "payload": [f'{{"Email": "person{n}@example.com"}}' for n in ns],
        }
    )
    batches.quarantine(warehouse, SPEC.table, rows, label, dt.datetime(2024, 6, 2))

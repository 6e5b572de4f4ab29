"""Column-only fills of fields new to the warehouse (DESIGN §5, schema evolution).

A field added in Salesforce becomes a column the day describe shows it; its existing rows
are filled from one Bulk `queryAll` of `Id`, `SystemModstamp` and the new fields, not by a
full re-sync. Fill rows sort below every real change (`sync_engine.changes.fill_change`),
so a fill never undoes one.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sfdc_assets.describe import registry_spec
from sfdc_assets.partitions import BEGINNING

if TYPE_CHECKING:  # pragma: no cover
    from resources.landing import LandingStore, Manifest
    from sync_engine.spec import ObjectSpec
    from sync_engine.warehouse import Warehouse

# Fields added to an object whose existing rows still await their column-only fill:
# written before the column is added, cleared once the fill is in raw.
FILL_CHECKPOINT = "fill/{name}"
# Manifest metadata of a fill: the fields it fills.
FILL_META = "fill_fields"
# The fill reads every row: the reader takes a window, so its end lies two days ahead of
# the client's estimate of the org's clock (a lower bound, up to seconds behind).
FILL_LOOKAHEAD = dt.timedelta(days=2)


def fields_to_fill(
    warehouse: Warehouse, landing: LandingStore, name: str, spec: ObjectSpec
) -> list[str]:
    """Described fields whose existing rows need a column-only fill: the ones the registry
    does not know yet when the object's tables hold rows, plus any a crashed run left.

    Recorded in a checkpoint before `sync_schema` adds the columns: once a field is
    registered it is no longer new, so a crash before the fill landed would lose it.
    """
    from sync_engine.warehouse import qualified

    saved = landing.read_checkpoint(FILL_CHECKPOINT.format(name=name)) or {}
    described = {f.name for f in spec.fields}
    fields = [f for f in saved.get("fields", []) if f in described]
    registered = registry_spec(warehouse, name)
    if registered is not None:
        current = qualified(warehouse, warehouse.schema_names.current, spec.table)
        if warehouse.query(f"SELECT COUNT(*) FROM (SELECT 1 FROM {current} LIMIT 1) t")[0][0]:
            known = {f.name for f in registered.fields}
            fields += [f.name for f in spec.fields if f.name not in known and f.name not in fields]
    if fields:
        landing.write_checkpoint(FILL_CHECKPOINT.format(name=name), {"fields": fields})
    return fields


def fills_done(landing: LandingStore, name: str) -> None:
    """The fill is in raw and in the ledger: the next run need not fill again."""
    landing.clear_checkpoint(FILL_CHECKPOINT.format(name=name))


def is_fill(manifest: Manifest) -> bool:
    """Whether a landed batch is a column-only fill."""
    return bool(manifest.meta.get(FILL_META))


def land_fill(
    client: Any,
    landing: LandingStore,
    name: str,
    describe: Any,
    fields: list[str],
) -> list[Manifest]:
    """The column-only Bulk queryAll (`Id`, `SystemModstamp`, the new fields) over every
    synced day, landed as manifests marked with the fields they fill."""
    from resources.salesforce.bulk import BulkOptions

    if not fields:
        return []
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) + FILL_LOOKAHEAD
    # No read lag: a fill's version sorts below every real change, so reading the newest
    # state cannot undo one, and the lag would leave recently modified rows unfilled.
    reader = client.bulk(landing, BulkOptions(lag=-FILL_LOOKAHEAD))
    names = ["Id", "SystemModstamp", *fields]
    result = reader.backfill(
        name, BEGINNING, end, fields=names, describe=describe, meta={FILL_META: fields}
    )
    return result.manifests

"""What the platform knows of an object's fields: Salesforce's describe and the registry.

- `describe_object`: one describe call per raw run (new fields become columns), cached in
  the landing store for the CDC sensor, which types events with it (`describe_cache`).
- `registry_spec`: the merge spec as `sync_schema` left it in `sfdc_meta.schema_registry`
  (described and removed fields), for the apply step; no Salesforce call.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from resources.landing import LandingStore
    from resources.salesforce.rest import ObjectDescribe
    from sync_engine.spec import ObjectSpec
    from sync_engine.warehouse import Warehouse

DESCRIBE_CHECKPOINT = "describe/{name}"


def cache_describe(landing: LandingStore, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Cache the parts of `name`'s describe body the sensors need; returns what it cached."""
    cached = {"name": body["name"], "keyPrefix": body.get("keyPrefix"), "fields": body["fields"]}
    landing.write_checkpoint(DESCRIBE_CHECKPOINT.format(name=name), cached)
    return cached


def describe_cache(landing: LandingStore, name: str) -> dict[str, Any] | None:
    """The describe the raw asset last saw (the CDC sensor types events with it)."""
    return landing.read_checkpoint(DESCRIBE_CHECKPOINT.format(name=name))


def describe_object(
    client: Any, landing: LandingStore, name: str, pii_fields: tuple[str, ...] = ()
) -> tuple[ObjectSpec, ObjectDescribe]:
    """(engine spec, extraction describe) from one describe call; cached for the sensor."""
    from resources.salesforce.rest import parse_describe
    from sync_engine.spec import ObjectSpec

    body = client.rest.describe_body(name)
    cache_describe(landing, name, body)
    return ObjectSpec.from_describe(body), parse_describe(body, pii_fields)


def registry_spec(warehouse: Warehouse, name: str) -> ObjectSpec | None:
    """The merge spec from `sfdc_meta.schema_registry` (no Salesforce call): described and
    removed fields, as `sync_schema` returned it to the raw step."""
    from sync_engine.spec import FieldSpec, ObjectSpec
    from sync_engine.warehouse import qualified, quote

    q = functools.partial(quote, warehouse)
    reg = qualified(warehouse, warehouse.schema_names.meta, "schema_registry")
    try:
        rows = warehouse.query(
            f"SELECT {q('field_name')}, {q('sf_type')}, {q('warehouse_type')} FROM {reg} "
            f"WHERE {q('object_name')} = '{name}' ORDER BY {q('first_seen_at')}, "
            f"{q('field_name')}"
        )
    except Exception:  # no registry yet: nothing was ever landed
        return None
    fields = []
    for field_name, sf_type, label in rows:
        fields.append(FieldSpec(field_name, sf_type, decimal_scale(label)))
    return ObjectSpec(name, tuple(fields)) if fields else None


def decimal_scale(warehouse_type: str) -> int | None:
    """The scale of a registry type label such as `decimal(18,2)`; None for other types."""
    if not warehouse_type.startswith("decimal("):
        return None
    return int(warehouse_type.rstrip(")").split(",")[1])

"""Salesforce field type -> warehouse column type, for DuckDB, Snowflake and Arrow.

One `WarehouseType` per Salesforce describe type. Two Salesforce types are compatible when
they map to the same `WarehouseType` (picklist -> string is fine, string -> currency is
not); that rule is what schema evolution enforces.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# Salesforce numbers carry up to 18 significant digits (describe `precision` <= 18), so
# DECIMAL(18, scale) holds every value exactly; floats would round currency.
NUMBER_PRECISION = 18
# Salesforce currency fields default to 2 decimals; a describe without a scale gets this.
DEFAULT_SCALE = 2

_TEXT_TYPES = {
    "string",
    "textarea",
    "picklist",
    "multipicklist",  # values stay "a;b;c" text, as the API returns them
    "combobox",
    "phone",
    "email",
    "url",
    "encryptedstring",
    "base64",
    "anytype",
    "address",
    "location",
    "complexvalue",
    "json",
}
_ID_TYPES = {"id", "reference"}
_DECIMAL_TYPES = {"currency", "double", "percent"}


@dataclass(frozen=True)
class WarehouseType:
    """A column type the engine knows how to create, load and compare."""

    kind: str  # id | text | decimal | integer | boolean | date | timestamp | time
    scale: int = 0

    def duckdb(self) -> str:
        """The DuckDB DDL type."""
        return {
            "id": "VARCHAR(18)",
            "text": "VARCHAR",
            "decimal": f"DECIMAL({NUMBER_PRECISION},{self.scale})",
            "integer": "BIGINT",
            "boolean": "BOOLEAN",
            "date": "DATE",
            "timestamp": "TIMESTAMP",  # UTC by convention, no session time zone applied
            "time": "TIME",
        }[self.kind]

    def snowflake(self) -> str:
        """The Snowflake DDL type."""
        return {
            "id": "VARCHAR(18)",
            "text": "VARCHAR",
            "decimal": f"NUMBER({NUMBER_PRECISION},{self.scale})",
            "integer": f"NUMBER({NUMBER_PRECISION},0)",
            "boolean": "BOOLEAN",
            "date": "DATE",
            "timestamp": "TIMESTAMP_NTZ",  # UTC by convention
            "time": "TIME",
        }[self.kind]

    def ddl(self, dialect: str) -> str:
        """The DDL type for `dialect`."""
        return self.snowflake() if dialect == "snowflake" else self.duckdb()

    def arrow(self) -> pa.DataType:
        """The Arrow type of this column in a change batch."""
        return {
            "id": pa.string(),
            "text": pa.string(),
            "decimal": pa.decimal128(NUMBER_PRECISION, self.scale),
            "integer": pa.int64(),
            "boolean": pa.bool_(),
            "date": pa.date32(),
            "timestamp": pa.timestamp("us"),
            "time": pa.time64("us"),
        }[self.kind]

    def label(self) -> str:
        """A short, dialect-neutral name used in the registry and in error messages."""
        return f"decimal({NUMBER_PRECISION},{self.scale})" if self.kind == "decimal" else self.kind


class UnknownFieldTypeError(ValueError):
    """A describe type this engine has no mapping for."""


def warehouse_type(sf_type: str, scale: int | None = None) -> WarehouseType:
    """Map a Salesforce describe `type` (and `scale` for numbers) to a WarehouseType."""
    t = sf_type.lower()
    if t in _ID_TYPES:
        return WarehouseType("id")
    if t in _TEXT_TYPES:
        return WarehouseType("text")
    if t in _DECIMAL_TYPES:
        return WarehouseType("decimal", DEFAULT_SCALE if scale is None else int(scale))
    if t in {"int", "long"}:
        return WarehouseType("integer")
    if t == "boolean":
        return WarehouseType("boolean")
    if t == "date":
        return WarehouseType("date")
    if t == "datetime":
        return WarehouseType("timestamp")
    if t == "time":
        return WarehouseType("time")
    raise UnknownFieldTypeError(f"no warehouse type for Salesforce type {sf_type!r}")

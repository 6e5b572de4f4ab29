"""An object's shape as the engine sees it: its fields, their types and column names.

Built from a describe (or from configuration in tests). Column names are the lower-cased
API names (Salesforce names are case-insensitive), so `StageName` becomes `stagename` in
DuckDB and `STAGENAME` in Snowflake, and dbt can refer to either unquoted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sync_engine.types import WarehouseType, warehouse_type
from sync_engine.warehouse import validate_identifier

# Fields that are not ordinary columns: the key, and the deletion flag the engine owns.
ID_FIELD = "Id"
IS_DELETED_FIELD = "IsDeleted"
IS_DELETED_COLUMN = "is_deleted"

# Raw's own columns (DESIGN §3). A field whose column name collides with one is refused.
RAW_META_COLUMNS = (
    "change_id",
    "record_id",
    "source",
    "change_type",
    "version",
    "version_ts",
    "commit_ts",
    "system_modstamp",
    "transaction_key",
    "sequence_number",
    "replay_id",
    "schema_id",
    "set_fields",
    "payload",
    "batch_id",
    "ingested_at",
    "change_date",
)
# Columns whose change alone is not a new version of the record. Salesforce moves
# SystemModstamp on every save, also when nothing else changed (an automation writing a
# value the field already had, a roll-up recalculation) and then publishes no change event:
# only a Bulk/REST re-read can see that stamp. Were it part of the versioned state, scd2
# would depend on when reads happened, and a re-backfill after CDC traffic would open
# versions CDC never saw. current still keeps the newest stamp (per-field latest wins).
UNVERSIONED_COLUMNS = frozenset({"systemmodstamp"})
RESERVED_COLUMNS = frozenset(
    {*RAW_META_COLUMNS, "id", IS_DELETED_COLUMN, "valid_from", "valid_to", "is_current"}
)


class InvalidObjectSpecError(ValueError):
    """An object specification the engine cannot map to tables."""


@dataclass(frozen=True)
class FieldSpec:
    """One Salesforce field: API name and describe type (plus scale for numbers)."""

    name: str
    sf_type: str
    scale: int | None = None
    # A formula (describe `calculated`): change events never carry it (CDC developer
    # guide), so CDC changes never set it; reads do. Not part of the field's identity: the
    # schema registry, which rebuilds specs for the apply, does not record it.
    calculated: bool = field(default=False, compare=False)

    @property
    def column(self) -> str:
        """The warehouse column name (lower-cased API name)."""
        return self.name.lower()

    @property
    def wtype(self) -> WarehouseType:
        """The warehouse type."""
        return warehouse_type(self.sf_type, self.scale)


@dataclass(frozen=True)
class ObjectSpec:
    """An sObject: its API name and the fields the engine syncs (Id and IsDeleted aside)."""

    name: str
    fields: tuple[FieldSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        validate_identifier(self.name)
        seen: set[str] = set()
        kept = []
        for f in self.fields:
            validate_identifier(f.name)
            if f.name in (ID_FIELD, IS_DELETED_FIELD):
                continue  # the key and the deletion flag have their own columns
            if f.column in RESERVED_COLUMNS:
                raise InvalidObjectSpecError(
                    f"{self.name}.{f.name}: column {f.column!r} collides with an engine column"
                )
            if f.column in seen:
                raise InvalidObjectSpecError(f"{self.name}.{f.name}: duplicate field")
            seen.add(f.column)
            f.wtype  # noqa: B018 - fail now on an unknown type, not mid-batch
            kept.append(f)
        object.__setattr__(self, "fields", tuple(kept))

    @classmethod
    def from_describe(cls, describe: Mapping) -> ObjectSpec:
        """Build from a REST describe payload (`name`, `fields[].name/type/scale`).

        Compound parents are skipped: addresses and locations, and any field another
        field names as its `compoundFieldName` (a person's `Name`). CDC events carry only
        the components, so a synced parent would go stale after the first CDC update; the
        components are synced and dbt derives the parent.
        """
        parents = {f.get("compoundFieldName") for f in describe["fields"]} - {None}
        fields = [
            FieldSpec(f["name"], f["type"], f.get("scale"), bool(f.get("calculated")))
            for f in describe["fields"]
            if f["type"] not in ("address", "location") and f["name"] not in parents
        ]
        return cls(describe["name"], tuple(fields))

    @classmethod
    def of(cls, name: str, fields: Iterable[tuple[str, str] | tuple[str, str, int]]) -> ObjectSpec:
        """Shorthand: `ObjectSpec.of("Opportunity", [("Amount", "currency", 2), ...])`."""
        return cls(name, tuple(FieldSpec(*f) for f in fields))

    @property
    def table(self) -> str:
        """The table name used in every layer."""
        return self.name.lower()

    @property
    def calculated_fields(self) -> tuple[str, ...]:
        """API names of the formula fields (no change event carries them)."""
        return tuple(f.name for f in self.fields if f.calculated)

    @property
    def columns(self) -> tuple[str, ...]:
        """Field column names, in spec order."""
        return tuple(f.column for f in self.fields)

    @property
    def state_columns(self) -> tuple[str, ...]:
        """The columns that make up a record's state: the fields plus is_deleted."""
        return (*self.columns, IS_DELETED_COLUMN)

    @property
    def versioned_columns(self) -> tuple[str, ...]:
        """The state columns whose change opens a new scd2 version (`UNVERSIONED_COLUMNS`
        aside); a change that moves only the others updates current and no history."""
        return tuple(c for c in self.state_columns if c not in UNVERSIONED_COLUMNS)

    def field_by_column(self) -> dict[str, FieldSpec]:
        """Column name -> FieldSpec."""
        return {f.column: f for f in self.fields}

"""The Salesforce objects in scope, as data: `objects.yaml` parsed into typed models.

One entry per object (API name, channel group, freshness target, PII fields, CDC or
polling); everything else (assets, checks, sensors, freshness policies) is derived from it.
Read once per process (`load_config` is cached): no network, no warehouse.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sync_engine.warehouse import validate_identifier

OBJECTS_FILE = Path(__file__).with_name("objects.yaml")
# Override for a deployment with its own object list (tests use their own files).
OBJECTS_FILE_VAR = "SFDC_OBJECTS_FILE"
# Override of `settings.partitions_start` (YYYY-MM-DD): the local demo starts its partitions
# where the emulator's history starts instead of 5 years back, because every partition of
# a bootstrap backfill costs Dagster events (~10 ms each in the local SQLite storage).
PARTITIONS_START_VAR = "SFDC_PARTITIONS_START"


class ReconcileSettings(BaseModel):
    """How often the platform proves current equal to Salesforce, and repairs it.

    Each run is one Bulk `queryAll` listing compared with current in the warehouse
    (`sfdc_assets/reconcile.py`, docs/operations.md "Reconciliation"); 0 turns a kind off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Id + SystemModstamp + IsDeleted of the last `recent_days`, every `recent_minutes`.
    recent_days: int = Field(default=2, ge=1)
    recent_minutes: int = Field(default=15, ge=0)
    # The same over the whole history (the ID-set diff that finds purged records).
    full_hours: int = Field(default=24, ge=0)
    # Id + formula fields over the whole history (cross-object formulas), objects with any.
    formula_minutes: int = Field(default=60, ge=0)
    # Records re-read by REST per run at most (200 per call); the rest wait for the next.
    max_rereads: int = Field(default=20_000, ge=1)


class DbtSettings(BaseModel):
    """How often each domain's dbt models are built, and the nightly full build.

    A domain is a dbt tag (dbt/dbt_project.yml tags every model with one); its schedule
    `dbt_<domain>` builds the models with that tag every `domains[<domain>]` minutes, their
    tests reading the last `recent_days` days only. The nightly schedule `dbt_nightly`
    builds everything with every test over every row (docs/dbt.md "Cadence").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # domain (dbt tag) -> minutes between builds. Empty: one `dbt_refresh` sensor builds
    # everything every `dbt_refresh_minutes` instead (the platform before issue 11).
    domains: dict[str, int] = Field(default_factory=dict)
    recent_days: int = Field(default=2, ge=1)
    nightly_cron: str = "0 3 * * *"
    # Rebuild the incremental marts from scratch nightly (reads every row once a day).
    nightly_full_refresh: bool = False

    @field_validator("domains")
    @classmethod
    def _cadences(cls, value: dict[str, int]) -> dict[str, int]:
        for domain, minutes in value.items():
            validate_identifier(domain)  # reaches `dbt --select tag:<domain>` and job names
            dbt_cron(minutes)  # a cadence a cron expression cannot hold fails here, by name
        return value


def dbt_cron(minutes: int) -> str:
    """The cron expression of "every `minutes` minutes", aligned to the hour / the day.

    Cron cannot say "every 45 minutes", so a cadence must divide an hour (1-60) or be whole
    hours dividing a day (120, 180, 240, 360, 480, 720, 1440).
    """
    if 1 <= minutes < 60 and 60 % minutes == 0:
        return f"*/{minutes} * * * *"
    if minutes == 60:
        return "0 * * * *"
    if minutes > 0 and minutes % 60 == 0 and 24 % (minutes // 60) == 0:
        hours = minutes // 60
        return "0 0 * * *" if hours == 24 else f"0 */{hours} * * *"
    raise ValueError(
        f"dbt cadence {minutes} min: use minutes that divide an hour (5, 10, 15, 30, 60) "
        "or whole hours that divide a day (120, 180, 240, 360, 480, 720, 1440)"
    )


class SyncSettings(BaseModel):
    """Project-wide tunables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partitions_start: str = "2020-01-01"
    bulk_lag_seconds: int = Field(default=300, ge=0)
    quarantine_threshold_pct: float = Field(default=5.0, ge=0, le=100)
    rebackfill_margin_minutes: int = Field(default=10, ge=0)
    # An object whose first partition was never materialized is backfilled automatically
    # (sensor `sfdc_bootstrap`); a failed bootstrap is tried again after this long.
    bootstrap: bool = True
    bootstrap_retry_minutes: int = Field(default=30, ge=1)
    # dbt build (staging, marts, legacy) at most this often once every object is
    # bootstrapped and something new was applied (sensor `dbt_refresh`); 0 turns it off.
    dbt_refresh_minutes: int = Field(default=5, ge=0)
    # Per-domain dbt schedules; when any domain is set they replace `dbt_refresh`.
    dbt: DbtSettings = DbtSettings()
    reconcile: ReconcileSettings = ReconcileSettings()


class ChannelGroup(BaseModel):
    """A CDC custom channel and how often its sensor drains it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    channel: str
    interval_seconds: int = Field(default=30, ge=5)
    max_events: int = Field(default=2000, gt=0)
    max_seconds: float = Field(default=5.0, gt=0)

    @field_validator("channel")
    @classmethod
    def _channel_path(cls, value: str) -> str:
        if not value.startswith("/data/"):
            raise ValueError(f"CDC channel {value!r} must look like /data/<Name>__chn")
        return value


class SObjectConfig(BaseModel):
    """One synchronized object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    group: str
    freshness_minutes: int | None = Field(default=None, ge=1)
    pii_fields: tuple[str, ...] = ()
    # Reference fields dbt looks current up by (an index / search optimization each).
    lookup_fields: tuple[str, ...] = ()
    mode: Literal["cdc", "polling"] = "cdc"
    poll_minutes: int = Field(default=15, ge=1)
    # Re-read whole, by REST, the records each CDC drain changed: events carry neither
    # formula fields nor SystemModstamp, and a lost event leaves its fields stale.
    reread_after_cdc: bool = True
    # Overrides of `settings.reconcile` for this object (`SyncConfig.reconcile_for`).
    reconcile: dict[str, int] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _api_name(cls, value: str) -> str:
        # Reaches SOQL, SQL and asset keys: refuse anything but an API name here.
        return validate_identifier(value)

    @field_validator("pii_fields", "lookup_fields")
    @classmethod
    def _field_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(validate_identifier(v) for v in value)

    @property
    def key_name(self) -> str:
        """The object's part of its asset keys and table names (lower case)."""
        return self.name.lower()


class SyncConfig(BaseModel):
    """The whole file: settings, channel groups, objects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    settings: SyncSettings = SyncSettings()
    channel_groups: dict[str, ChannelGroup]
    objects: tuple[SObjectConfig, ...]

    @model_validator(mode="before")
    @classmethod
    def _name_groups(cls, data: dict) -> dict:
        groups = data.get("channel_groups") or {}
        data["channel_groups"] = {name: {"name": name, **(g or {})} for name, g in groups.items()}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SyncConfig:
        seen: set[str] = set()
        for obj in self.objects:
            if obj.key_name in seen:
                raise ValueError(f"{obj.name} is declared twice in the object list")
            seen.add(obj.key_name)
            self.reconcile_for(obj)  # an unknown or invalid override fails here, by name
            if obj.group not in self.channel_groups:
                raise ValueError(
                    f"{obj.name}: group {obj.group!r} is not one of the channel groups "
                    f"{sorted(self.channel_groups)}"
                )
        return self

    def reconcile_for(self, obj: SObjectConfig) -> ReconcileSettings:
        """The object's reconciliation settings: the project's, with its overrides."""
        return reconcile_settings(self.settings, obj)

    def objects_by_name(self) -> dict[str, SObjectConfig]:
        """API name -> config, in file order."""
        return {o.name: o for o in self.objects}

    def group_objects(self, group: str) -> list[SObjectConfig]:
        """The objects of one channel group."""
        return [o for o in self.objects if o.group == group]


def reconcile_settings(settings: SyncSettings, obj: SObjectConfig) -> ReconcileSettings:
    """`settings.reconcile` with `obj`'s overrides (an invalid one is named)."""
    try:
        return ReconcileSettings(**{**settings.reconcile.model_dump(), **obj.reconcile})
    except ValueError as exc:
        raise ValueError(f"{obj.name}: invalid reconcile override in objects.yaml: {exc}") from None


def parse_config(text: str) -> SyncConfig:
    """Parse the YAML text of an objects file."""
    return SyncConfig.model_validate(yaml.safe_load(text) or {})


@functools.cache
def load_config(path: str | None = None) -> SyncConfig:
    """The configuration (cached): `path`, else `$SFDC_OBJECTS_FILE`, else objects.yaml."""
    source = Path(path or os.environ.get(OBJECTS_FILE_VAR) or OBJECTS_FILE)
    config = parse_config(source.read_text())
    start = os.environ.get(PARTITIONS_START_VAR)
    if start:
        try:
            dt.date.fromisoformat(start)
        except ValueError:
            raise ValueError(
                f"{PARTITIONS_START_VAR}={start!r} is not a date: use YYYY-MM-DD"
            ) from None
        settings = config.settings.model_copy(update={"partitions_start": start})
        config = config.model_copy(update={"settings": settings})
    return config


def load_objects() -> dict[str, SObjectConfig]:
    """API name -> object config (the eight in scope by default)."""
    return load_config().objects_by_name()


def channel_groups() -> dict[str, ChannelGroup]:
    """Group name -> channel group."""
    return dict(load_config().channel_groups)

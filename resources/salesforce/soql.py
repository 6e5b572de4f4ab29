"""SOQL building blocks: identifier and literal validation, windows as WHERE clauses.

Every object or field name that reaches SOQL passes :func:`identifier` first: names come
from configuration and describe, and a name is never quoted in SOQL, so validation is the
only guard against injection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from resources.salesforce.errors import InvalidIdentifierError

# API names: a letter, then letters/digits/underscores (custom suffixes __c, __r, __e...),
# optionally namespace-prefixed (ns__Field__c). 80 is comfortably above Salesforce's limits.
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
# Relationship paths such as Account.Name in SELECT lists.
_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}(\.[A-Za-z][A-Za-z0-9_]{0,79}){0,4}$")
_RECORD_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def identifier(name: str) -> str:
    """Return ``name`` if it is a valid API name, else raise InvalidIdentifierError."""
    if not isinstance(name, str) or not _IDENT.match(name) or name.endswith("_"):
        raise InvalidIdentifierError(f"not a valid Salesforce API name: {name!r}")
    return name


def field_path(name: str) -> str:
    """Validate a SELECT-list entry (a field or a parent relationship path)."""
    if not isinstance(name, str) or not _PATH.match(name):
        raise InvalidIdentifierError(f"not a valid Salesforce field path: {name!r}")
    return name


def record_id(value: str) -> str:
    """Validate a 15/18-character record Id (or a keyset boundary) before quoting it."""
    if not isinstance(value, str) or not _RECORD_ID.match(value):
        raise InvalidIdentifierError(f"not a valid Salesforce record Id: {value!r}")
    return value


def datetime_literal(value: datetime) -> str:
    """A SOQL datetime literal in UTC (tz-aware input required; naive is ambiguous)."""
    if value.tzinfo is None:
        raise ValueError("SOQL datetimes must be timezone-aware")
    utc = value.astimezone(UTC)
    if utc.microsecond:
        # SystemModstamp is truncated to the second; fractional bounds are not portable.
        raise ValueError(f"window bounds must be whole seconds, got {utc.isoformat()}")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def select(obj: str, fields: Iterable[str], where: str | None = None, *, suffix: str = "") -> str:
    """``SELECT f1, f2 FROM obj [WHERE ...] [suffix]`` with every name validated."""
    names = [field_path(f) for f in fields]
    if not names:
        raise ValueError(f"no fields to select from {obj}")
    soql = f"SELECT {', '.join(names)} FROM {identifier(obj)}"
    if where:
        soql += f" WHERE {where}"
    if suffix:
        soql += f" {suffix}"
    return soql


def ids_in(ids: Iterable[str]) -> str:
    """``Id IN ('…','…')`` with every Id validated."""
    quoted = ", ".join(f"'{record_id(i)}'" for i in ids)
    return f"Id IN ({quoted})"

"""Field values on the write path: an API value becomes the stored Python value
(:func:`coerce`), fields Salesforce computes are recomputed (:func:`derive`), and
:class:`StoreError` is how any write-path check refuses a write.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sfdc_emulator import ids as idmod
from sfdc_emulator.describe import (
    LEAD_CONVERTED_STATUS,
    OPPORTUNITY_STAGES,
    TASK_CLOSED_STATUSES,
    FieldDef,
    SObjectDef,
)

_CENT = Decimal("0.01")
# DECIMAL(18,2): 16 digits before the point
_MAX_CURRENCY = Decimal(10) ** 16
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class StoreError(ValueError):
    """A write the org refuses; ``error_code`` is the Salesforce errorCode to report."""

    def __init__(self, message: str, error_code: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.fields = list(fields)


def to_utc_naive(value: datetime) -> datetime:
    """Aware -> naive UTC; naive is taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def coerce(spec: SObjectDef, f: FieldDef, value: Any) -> Any:
    """An API value -> the stored Python value of field ``f`` (StoreError when invalid)."""
    if value is None:
        return None
    t = f.type
    where = f"{spec.name}.{f.name}"
    try:
        if t == "boolean":
            if isinstance(value, str):
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                return value.lower() == "true"
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError(value)
        if t == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value) if isinstance(value, str) else value
            if int(number) != number:
                raise ValueError(value)
            return int(number)
        if t in ("double", "percent"):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if t == "currency":
            if isinstance(value, bool):
                raise ValueError(value)
            amount = Decimal(str(value)).quantize(_CENT)
            if abs(amount) >= _MAX_CURRENCY:
                raise StoreError(f"number too large for {where}", "NUMBER_OUTSIDE_VALID_RANGE")
            return amount
        if t == "date":
            if isinstance(value, datetime):
                return to_utc_naive(value).date()
            if isinstance(value, date):
                return value
            return date.fromisoformat(str(value)[:10])
        if t == "datetime":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = datetime.fromtimestamp(value / 1000, UTC)
            elif isinstance(value, str):
                value = datetime.fromisoformat(value)
            elif not isinstance(value, datetime):
                raise ValueError(value)
            # Salesforce keeps datetimes to the second
            return to_utc_naive(value).replace(microsecond=0)
        if t == "multipicklist" and isinstance(value, (list, tuple)):
            value = ";".join(str(v) for v in value)
        if not isinstance(value, str):
            if isinstance(value, (int, float, Decimal)) and t in ("string", "textarea"):
                value = str(value)
            else:
                raise ValueError(value)
    except StoreError:
        raise
    except (ValueError, TypeError, InvalidOperation, OverflowError) as exc:
        raise StoreError(
            f"{where}: value not of required type {t}",
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            [f.name],
        ) from exc
    if t in ("id", "reference"):
        if not idmod.is_valid_id(value):
            raise StoreError(f"{where}: malformed id", "MALFORMED_ID", [f.name])
        value = idmod.to_18(value)
        prefixes = {idmod.KEY_PREFIXES.get(target) for target in f.reference_to} - {None}
        if prefixes and value[:3] not in prefixes:
            raise StoreError(
                f"{where}: id value of incorrect type", "FIELD_INTEGRITY_EXCEPTION", [f.name]
            )
        return value
    if f.length and len(value) > f.length:
        raise StoreError(
            f"{where}: data value too large (max length={f.length})", "STRING_TOO_LONG", [f.name]
        )
    if t == "email" and not _EMAIL.match(value):
        raise StoreError(f"{where}: invalid email address", "INVALID_EMAIL_ADDRESS", [f.name])
    return value


def derive(
    spec: SObjectDef,
    row: dict[str, Any],
    old: Mapping[str, Any] | None,
    explicit: Collection[str],
    stamp: datetime,
) -> None:
    """Recompute the fields Salesforce derives from others (in place). ``old`` is None on
    create; ``explicit`` names the fields the caller set in this mutation."""
    has = row.__contains__
    name = spec.name

    def changed(col: str) -> bool:
        return old is None or old.get(col) != row.get(col)

    if has("Name") and has("LastName") and spec.field("Name").calculated:
        row["Name"] = " ".join(p for p in (row.get("FirstName"), row.get("LastName")) if p) or None
    if name == "Opportunity":
        stage = OPPORTUNITY_STAGES.get(row.get("StageName") or "")
        if stage is not None and changed("StageName"):
            probability, forecast, closed, won = stage
            if has("Probability") and "Probability" not in explicit:
                row["Probability"] = float(probability)
            if has("ForecastCategoryName") and "ForecastCategoryName" not in explicit:
                row["ForecastCategoryName"] = forecast
            if has("IsClosed"):
                row["IsClosed"] = closed
            if has("IsWon"):
                row["IsWon"] = won
        if has("ExpectedRevenue"):
            amount, prob = row.get("Amount"), row.get("Probability")
            row["ExpectedRevenue"] = (
                None
                if amount is None or prob is None
                else (amount * Decimal(str(prob)) / 100).quantize(_CENT)
            )
        close = row.get("CloseDate")
        if has("FiscalYear"):
            row["FiscalYear"] = close.year if close else None
        if has("FiscalQuarter"):
            row["FiscalQuarter"] = (close.month - 1) // 3 + 1 if close else None
    elif name == "OpportunityLineItem":
        qty, unit = row.get("Quantity"), row.get("UnitPrice")
        if unit is None and qty and row.get("TotalPrice") is not None:
            unit = row["UnitPrice"] = (row["TotalPrice"] / Decimal(str(qty))).quantize(_CENT)
        if has("TotalPrice") and qty is not None and unit is not None:
            discount = Decimal(str(row.get("Discount") or 0))
            total = unit * Decimal(str(qty)) * (1 - discount / 100)
            row["TotalPrice"] = total.quantize(_CENT)
        if has("ListPrice") and old is None and row.get("ListPrice") is None:
            row["ListPrice"] = unit
    elif name == "Task":
        closed = row.get("Status") in TASK_CLOSED_STATUSES
        if has("IsClosed"):
            row["IsClosed"] = closed
        if has("IsHighPriority"):
            row["IsHighPriority"] = row.get("Priority") == "High"
        if has("CompletedDateTime") and changed("Status"):
            row["CompletedDateTime"] = stamp if closed else None
    elif name == "Event":
        start = row.get("StartDateTime")
        if start is None and row.get("ActivityDateTime") is not None:
            start = row["StartDateTime"] = row["ActivityDateTime"]
        if has("ActivityDateTime"):
            row["ActivityDateTime"] = start
        if has("ActivityDate"):
            row["ActivityDate"] = start.date() if start else None
        if has("EndDateTime"):
            minutes = row.get("DurationInMinutes")
            row["EndDateTime"] = (
                start + timedelta(minutes=minutes) if start and minutes is not None else None
            )
    elif name == "Lead":
        converted = row.get("Status") == LEAD_CONVERTED_STATUS
        if has("IsConverted"):
            row["IsConverted"] = converted
        if has("ConvertedDate") and changed("Status"):
            row["ConvertedDate"] = stamp.date() if converted else None

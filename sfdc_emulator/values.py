"""Field values on the write path: an API value becomes the stored Python value
(:func:`coerce`), fields Salesforce computes are recomputed (:func:`derive`), and
:class:`StoreError` is how any write-path check refuses a write.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
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
    where = f"{spec.name}.{f.name}"
    try:
        converted = _CONVERTERS.get(f.type, _to_text)(f.type, value, where)
    except StoreError:
        raise
    except (ValueError, TypeError, InvalidOperation, OverflowError) as exc:
        raise StoreError(
            f"{where}: value not of required type {f.type}",
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            [f.name],
        ) from exc
    if f.type in _CONVERTERS:
        return converted
    return _checked_text(f, converted, where)


def _to_bool(t: str, value: Any, where: str) -> bool:
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError(value)
        return value.lower() == "true"
    if isinstance(value, (bool, int)):
        return bool(value)
    raise ValueError(value)


def _to_int(t: str, value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    number = float(value) if isinstance(value, str) else value
    if int(number) != number:
        raise ValueError(value)
    return int(number)


def _to_float(t: str, value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def _to_currency(t: str, value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(value)
    amount = Decimal(str(value)).quantize(_CENT)
    if abs(amount) >= _MAX_CURRENCY:
        raise StoreError(f"number too large for {where}", "NUMBER_OUTSIDE_VALID_RANGE")
    return amount


def _to_date(t: str, value: Any, where: str) -> date:
    if isinstance(value, datetime):
        return to_utc_naive(value).date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _to_datetime(t: str, value: Any, where: str) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = datetime.fromtimestamp(value / 1000, UTC)
    elif isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif not isinstance(value, datetime):
        raise ValueError(value)
    # Salesforce keeps datetimes to the second
    return to_utc_naive(value).replace(microsecond=0)


def _to_text(t: str, value: Any, where: str) -> str:
    if t == "multipicklist" and isinstance(value, (list, tuple)):
        value = ";".join(str(v) for v in value)
    if not isinstance(value, str):
        if isinstance(value, (int, float, Decimal)) and t in ("string", "textarea"):
            value = str(value)
        else:
            raise ValueError(value)
    return value


_CONVERTERS: dict[str, Callable[[str, Any, str], Any]] = {
    "boolean": _to_bool,
    "int": _to_int,
    "double": _to_float,
    "percent": _to_float,
    "currency": _to_currency,
    "date": _to_date,
    "datetime": _to_datetime,
}


def _checked_text(f: FieldDef, value: str, where: str) -> str:
    """Ids normalised to 18 characters and of the referenced object; lengths; emails."""
    if f.type in ("id", "reference"):
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
    if f.type == "email" and not _EMAIL.match(value):
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
    if "Name" in row and "LastName" in row and spec.field("Name").calculated:
        row["Name"] = " ".join(p for p in (row.get("FirstName"), row.get("LastName")) if p) or None
    derive_object = _DERIVED.get(spec.name)
    if derive_object is not None:
        derive_object(row, old, explicit, stamp)


def _changed(row: Mapping[str, Any], old: Mapping[str, Any] | None, col: str) -> bool:
    return old is None or old.get(col) != row.get(col)


def _opportunity(
    row: dict[str, Any], old: Mapping[str, Any] | None, explicit: Collection[str], stamp: datetime
) -> None:
    stage = OPPORTUNITY_STAGES.get(row.get("StageName") or "")
    if stage is not None and _changed(row, old, "StageName"):
        probability, forecast, closed, won = stage
        if "Probability" in row and "Probability" not in explicit:
            row["Probability"] = float(probability)
        if "ForecastCategoryName" in row and "ForecastCategoryName" not in explicit:
            row["ForecastCategoryName"] = forecast
        if "IsClosed" in row:
            row["IsClosed"] = closed
        if "IsWon" in row:
            row["IsWon"] = won
    if "ExpectedRevenue" in row:
        amount, prob = row.get("Amount"), row.get("Probability")
        row["ExpectedRevenue"] = (
            None
            if amount is None or prob is None
            else (amount * Decimal(str(prob)) / 100).quantize(_CENT)
        )
    close = row.get("CloseDate")
    if "FiscalYear" in row:
        row["FiscalYear"] = close.year if close else None
    if "FiscalQuarter" in row:
        row["FiscalQuarter"] = (close.month - 1) // 3 + 1 if close else None


def _line_item(
    row: dict[str, Any], old: Mapping[str, Any] | None, explicit: Collection[str], stamp: datetime
) -> None:
    qty, unit = row.get("Quantity"), row.get("UnitPrice")
    if unit is None and qty and row.get("TotalPrice") is not None:
        unit = row["UnitPrice"] = (row["TotalPrice"] / Decimal(str(qty))).quantize(_CENT)
    if "TotalPrice" in row and qty is not None and unit is not None:
        discount = Decimal(str(row.get("Discount") or 0))
        total = unit * Decimal(str(qty)) * (1 - discount / 100)
        row["TotalPrice"] = total.quantize(_CENT)
    if "ListPrice" in row and old is None and row.get("ListPrice") is None:
        row["ListPrice"] = unit


def _task(
    row: dict[str, Any], old: Mapping[str, Any] | None, explicit: Collection[str], stamp: datetime
) -> None:
    closed = row.get("Status") in TASK_CLOSED_STATUSES
    if "IsClosed" in row:
        row["IsClosed"] = closed
    if "IsHighPriority" in row:
        row["IsHighPriority"] = row.get("Priority") == "High"
    if "CompletedDateTime" in row and _changed(row, old, "Status"):
        row["CompletedDateTime"] = stamp if closed else None


def _event(
    row: dict[str, Any], old: Mapping[str, Any] | None, explicit: Collection[str], stamp: datetime
) -> None:
    start = row.get("StartDateTime")
    if start is None and row.get("ActivityDateTime") is not None:
        start = row["StartDateTime"] = row["ActivityDateTime"]
    if "ActivityDateTime" in row:
        row["ActivityDateTime"] = start
    if "ActivityDate" in row:
        row["ActivityDate"] = start.date() if start else None
    if "EndDateTime" in row:
        minutes = row.get("DurationInMinutes")
        row["EndDateTime"] = (
            start + timedelta(minutes=minutes) if start and minutes is not None else None
        )


def _lead(
    row: dict[str, Any], old: Mapping[str, Any] | None, explicit: Collection[str], stamp: datetime
) -> None:
    converted = row.get("Status") == LEAD_CONVERTED_STATUS
    if "IsConverted" in row:
        row["IsConverted"] = converted
    if "ConvertedDate" in row and _changed(row, old, "Status"):
        row["ConvertedDate"] = stamp.date() if converted else None


_Deriver = Callable[[dict[str, Any], Mapping[str, Any] | None, Collection[str], datetime], None]
_DERIVED: dict[str, _Deriver] = {
    "Opportunity": _opportunity,
    "OpportunityLineItem": _line_item,
    "Task": _task,
    "Event": _event,
    "Lead": _lead,
}

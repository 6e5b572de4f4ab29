"""Admin commands: ``POST /__emulator/admin`` with ``{"command": ..., "args": {...}}``.

The endpoint is authenticated with an access token (like any API call) but is neither
counted against the API limits nor subject to injected faults. Commands change the org
the way real-world events would: record changes through the store's write path, schema
changes, scripted faults, clock jumps, traffic. ``admin_call`` is the client the CLI uses.

Commands (``args`` keys in parentheses):

- ``update`` / ``delete`` / ``undelete`` / ``purge`` (object, count[, fields]): random
  records; ``fields`` = explicit values for update; commits in transactions of 200.
- ``touch`` (object, count): an automated recalculation (workflow, roll-up) of random live
  records that changes no field: SystemModstamp moves, LastModifiedDate stays, no event.
- ``commit`` (mutations: [{op, object, id?, values?}]): one transaction, exactly as given.
- ``add-field`` (object, field, type[, label, length, values]), ``remove-field`` (object,
  field), ``set-picklist`` (object, field, values).
- ``overflow`` (object, changes): one transaction with that many field changes
  (> 100,000 -> GAP_OVERFLOW). ``gap`` (object, count): changes outside the app server.
- ``fail`` (target: rest | bulk | pubsub | limit, ...): rest (status, count[, error_code]);
  bulk (count[, message]); pubsub (count[, status, error_code]); limit (kind: daily |
  concurrent | deliveries | bulk-jobs | bulk-mb[, max, count, clear]); ``deliveries`` sets
  the CDC delivered-events allocation (default: what was delivered in the last 24 h, so the
  next delivery fails); bulk-jobs / bulk-mb set the Max of DailyBulkV2QueryJobs /
  DailyBulkV2QueryFileStorageMB (default: what the rolling 24 h used already, so the next
  Bulk job is refused with EXCEEDED_QUOTA).
- ``slow`` (target, seconds, count), ``expire-sessions``, ``delay-events`` (fraction,
  seconds), ``drop-events`` (fraction[, count]): events lost for good, the commits stand;
  ``duplicate-on-resubscribe`` (n), ``advance-clock`` (duration: "73h", "30m",
  "2d", "90s" or seconds), ``traffic`` (rate, mix, paused), ``reset-faults``, ``status``,
  ``issue-token``, ``truth`` (object, out: Parquet path on the emulator's host),
  ``query-log`` ([clear]): the SOQL served by query, queryAll and Bulk job creation,
  oldest first (the last 2,000), so a test can prove what reached the org.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sfdc_emulator.describe import FieldDef
from sfdc_emulator.oauth import JWT_BEARER_GRANT, Session
from sfdc_emulator.rest import ApiContext, ApiError, ApiRoute
from sfdc_emulator.soql import quote_ident
from sfdc_emulator.store import Mutation, StoreError

ADMIN_PATH = "/__emulator/admin"
TRANSACTION_SIZE = 200  # records per transaction, like one API DML call
DEFAULT_ERROR_CODES = {
    400: "MALFORMED_QUERY",
    401: "INVALID_SESSION_ID",
    403: "REQUEST_LIMIT_EXCEEDED",
    404: "NOT_FOUND",
    500: "UNKNOWN_EXCEPTION",
    502: "SERVER_UNAVAILABLE",
    503: "SERVER_UNAVAILABLE",
}
_UPDATABLE_TYPES = frozenset(
    {"string", "picklist", "double", "currency", "percent", "int", "boolean", "date", "textarea"}
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class AdminError(Exception):
    """A refused admin command (bad arguments, unknown command)."""


def parse_duration(value: Any) -> float:
    """``"73h"`` / ``"30m"`` / ``"2d"`` / ``"90s"`` / ``90`` -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if m is None:
        raise AdminError(f"bad duration {value!r}: use e.g. 73h, 30m, 2d, 90s")
    return float(m.group(1)) * _UNITS[m.group(2)]


class AdminApi:
    """Dispatches admin commands to the store, schema, faults, clock and traffic."""

    def __init__(self, ctx: ApiContext, server: Any = None) -> None:
        self.ctx = ctx
        self.server = server
        self.rng = random.Random(0)
        self.commands: dict[str, Callable[[dict[str, Any]], Any]] = {
            "update": self.update,
            "delete": self.delete,
            "undelete": self.undelete,
            "purge": self.purge,
            "touch": self.touch,
            "commit": self.commit,
            "add-field": self.add_field,
            "remove-field": self.remove_field,
            "set-picklist": self.set_picklist,
            "overflow": self.overflow,
            "gap": self.gap,
            "fail": self.fail,
            "slow": self.slow,
            "expire-sessions": self.expire_sessions,
            "delay-events": self.delay_events,
            "drop-events": self.drop_events,
            "duplicate-on-resubscribe": self.duplicate_on_resubscribe,
            "advance-clock": self.advance_clock,
            "traffic": self.traffic,
            "reset-faults": self.reset_faults,
            "status": self.status,
            "issue-token": self.issue_token,
            "truth": self.truth,
            "query-log": self.query_log,
        }

    @property
    def store(self) -> Any:
        return self.ctx.store

    @property
    def faults(self) -> Any:
        return self.ctx.faults

    def handle(self, request: Request, session: Session, body: bytes) -> Response:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
        return JSONResponse(self.run(str(payload.get("command", "")), payload.get("args") or {}))

    def run(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run one command; returns ``{"ok": True, "command": ..., "result": ...}``."""
        name = command.strip().lower().replace("_", "-").replace(" ", "-")
        handler = self.commands.get(name)
        if handler is None:
            raise ApiError(
                400, "ADMIN_ERROR", f"unknown command {command!r}; known: {sorted(self.commands)}"
            )
        if not isinstance(args, dict):
            raise ApiError(400, "ADMIN_ERROR", "args must be a JSON object")
        try:
            result = handler(args)
        except (AdminError, KeyError, ValueError, TypeError) as exc:
            code = exc.error_code if isinstance(exc, StoreError) else "ADMIN_ERROR"
            raise ApiError(400, code, f"{name}: {exc}") from None
        return {"ok": True, "command": name, "result": result}

    def routes(self) -> list[ApiRoute]:
        return [ApiRoute(ADMIN_PATH, self.handle, ("POST",), auth=True, count=False)]

    def _object(self, args: dict[str, Any]) -> str:
        name = args.get("object") or args.get("obj")
        if not name:
            raise AdminError("missing 'object'")
        return self.store.schema.get(str(name)).name

    @staticmethod
    def _count(args: dict[str, Any], default: int = 1) -> int:
        count = int(args.get("count", default))
        if count < 0:
            raise AdminError("count must be >= 0")
        return count

    def _sample_ids(self, obj: str, count: int, deleted: bool | None) -> list[str]:
        where = ""
        if deleted is True:
            where = ' WHERE "IsDeleted"'
        elif deleted is False:
            where = ' WHERE NOT "IsDeleted"'
        cur = self.store.read_cursor()
        try:
            rows = cur.execute(
                f'SELECT "Id" FROM {quote_ident(obj)}{where} ORDER BY random() LIMIT ?', [count]
            ).fetchall()
        finally:
            cur.close()
        return [r[0] for r in rows]

    def _commit_chunks(self, mutations: list[Mutation]) -> dict[str, Any]:
        ids: list[str] = []
        replay_ids: list[int] = []
        dropped: list[str] = []
        for start in range(0, len(mutations), TRANSACTION_SIZE):
            result = self.store.commit(mutations[start : start + TRANSACTION_SIZE])
            ids.extend(result.ids)
            replay_ids.extend(result.replay_ids)
            dropped.extend(result.dropped_ids)
        return {"ids": ids, "count": len(ids), "replay_ids": replay_ids, "dropped_ids": dropped}

    def _candidate_fields(self, obj: str) -> list[FieldDef]:
        spec = self.store.schema.get(obj)
        return [
            f
            for f in spec.stored_fields()
            if f.updateable
            and not f.calculated
            and f.type in _UPDATABLE_TYPES
            and f.compound_field_name is None
            and not (f.type == "picklist" and not f.picklist_values)
        ]

    def _random_value(self, f: FieldDef) -> Any:
        rng = self.rng
        if f.type == "picklist":
            return rng.choice(f.picklist_values)
        if f.type in ("string", "textarea"):
            text = f"{f.label} {rng.randrange(10**6):06d}"
            return text[: f.length] if f.length else text
        if f.type == "currency":
            return round(rng.uniform(1_000, 500_000), 2)
        if f.type == "percent":
            return float(rng.randrange(0, 101))
        if f.type == "double":
            digits = max(1, (f.precision or 6) - (f.scale or 0))
            return float(rng.randrange(0, 10 ** min(digits, 6)))
        if f.type == "int":
            return rng.randrange(0, 10_000)
        if f.type == "boolean":
            return rng.random() < 0.5
        if f.type == "date":
            today = self.store.clock.now().date()
            return (today + dt.timedelta(days=rng.randrange(-90, 180))).isoformat()
        raise AdminError(f"cannot generate a value for {f.name} ({f.type})")

    def _update_values(self, obj: str, args: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        explicit = args.get("fields") or args.get("values")
        if explicit:
            if not isinstance(explicit, dict):
                raise AdminError("'fields' must be an object {field: value}")
            return lambda: dict(explicit)
        field_name = args.get("field")
        candidates = self._candidate_fields(obj)
        if field_name:
            spec = self.store.schema.get(obj).field(str(field_name))
            candidates = [spec]
        if not candidates:
            raise AdminError(f"{obj} has no field the admin can update")
        return lambda: {(f := self.rng.choice(candidates)).name: self._random_value(f)}

    def _delegate(self, method: str, obj: str, *args: Any) -> dict[str, Any] | None:
        """Use the traffic generator's one-shot (realistic values) when there is one."""
        fn = getattr(self.ctx.traffic, method, None) if self.ctx.traffic is not None else None
        if fn is None:
            return None
        result = fn(obj, *args)
        return {
            "ids": result.ids,
            "count": len(result.ids),
            "replay_ids": result.replay_ids,
            "dropped_ids": result.dropped_ids,
        }

    def update(self, args: dict[str, Any]) -> dict[str, Any]:
        obj = self._object(args)
        count = self._count(args)
        if not (args.get("fields") or args.get("values") or args.get("field")):
            delegated = self._delegate("update", obj, count)
            if delegated is not None:
                return delegated
        values = self._update_values(obj, args)
        ids = self._sample_ids(obj, count, deleted=False)
        return self._commit_chunks([Mutation("update", obj, rid, values()) for rid in ids])

    def delete(self, args: dict[str, Any]) -> dict[str, Any]:
        obj = self._object(args)
        delegated = self._delegate("delete", obj, self._count(args))
        if delegated is not None:
            return delegated
        ids = self._sample_ids(obj, self._count(args), deleted=False)
        return self._commit_chunks([Mutation("delete", obj, rid) for rid in ids])

    def undelete(self, args: dict[str, Any]) -> dict[str, Any]:
        obj = self._object(args)
        delegated = self._delegate("undelete", obj, self._count(args))
        if delegated is not None:
            return delegated
        ids = self._sample_ids(obj, self._count(args), deleted=True)
        return self._commit_chunks([Mutation("undelete", obj, rid) for rid in ids])

    def purge(self, args: dict[str, Any]) -> dict[str, Any]:
        """Physical deletes (no event, gone from queryAll): what only ID-set diffs catch."""
        obj = self._object(args)
        only_deleted = args.get("deleted")
        if only_deleted is None:
            delegated = self._delegate("purge", obj, self._count(args))
            if delegated is not None:
                return delegated
        ids = self._sample_ids(
            obj, self._count(args), deleted=None if only_deleted is None else bool(only_deleted)
        )
        return self._commit_chunks([Mutation("purge", obj, rid) for rid in ids])

    def touch(self, args: dict[str, Any]) -> dict[str, Any]:
        """Automation that recalculates and changes no field (a roll-up or workflow
        re-evaluation): SystemModstamp moves, LastModifiedDate does not, and no change
        event is published, since no field an event reports changed."""
        obj = self._object(args)
        ids = self._sample_ids(obj, self._count(args), deleted=False)
        result: dict[str, Any] = {"ids": [], "count": 0, "replay_ids": []}
        for start in range(0, len(ids), TRANSACTION_SIZE):
            chunk = ids[start : start + TRANSACTION_SIZE]
            done = self.store.commit(
                [Mutation("update", obj, rid) for rid in chunk], automation=True
            )
            result["ids"] += done.ids
            result["replay_ids"] += done.replay_ids
        result["count"] = len(result["ids"])
        return result

    def commit(self, args: dict[str, Any]) -> dict[str, Any]:
        raw = args.get("mutations")
        if not isinstance(raw, list) or not raw:
            raise AdminError("'mutations' must be a non-empty list")
        mutations = [
            Mutation(m["op"], m["object"], m.get("id"), m.get("values") or {}) for m in raw
        ]
        result = self.store.commit(mutations, automation=bool(args.get("automation", False)))
        return {
            "ids": result.ids,
            "commit_ts": result.commit_ts,
            "replay_ids": result.replay_ids,
            "dropped_ids": result.dropped_ids,
        }

    def overflow(self, args: dict[str, Any]) -> dict[str, Any]:
        """One transaction with ``changes`` field changes (updates count one per field)."""
        obj = self._object(args)
        changes = int(args.get("changes", 100_001))
        delegated = self._delegate("overflow", obj, changes)
        if delegated is not None:
            return delegated
        fields = [f for f in self._candidate_fields(obj) if f.type != "picklist"]
        fields = fields or self._candidate_fields(obj)
        live = self._sample_ids(obj, changes, deleted=False)
        if not live or not fields:
            raise AdminError(f"{obj} has no live records or updatable fields")
        per_record = min(len(fields), math.ceil(changes / len(live)))
        needed = math.ceil(changes / per_record)
        if needed > len(live):
            raise AdminError(
                f"{obj} has {len(live)} live records x {len(fields)} fields: "
                f"cannot make {changes} changes in one transaction"
            )
        mutations = []
        for rid in live[:needed]:
            values = {f.name: self._random_value(f) for f in fields[:per_record]}
            mutations.append(Mutation("update", obj, rid, values))
        result = self.store.commit(mutations)
        return {
            "records": len(mutations),
            "changes": needed * per_record,
            "replay_ids": result.replay_ids,
        }

    def gap(self, args: dict[str, Any]) -> dict[str, Any]:
        obj = self._object(args)
        if not (args.get("fields") or args.get("values") or args.get("field")):
            delegated = self._delegate("gap", obj, self._count(args))
            if delegated is not None:
                return delegated
        ids = self._sample_ids(obj, self._count(args), deleted=False)
        if not ids:
            return {"ids": [], "count": 0, "replay_ids": []}
        values = self._update_values(obj, args)()
        result = self.store.gap(obj, ids, values)
        return {"ids": result.ids, "count": len(result.ids), "replay_ids": result.replay_ids}

    def add_field(self, args: dict[str, Any]) -> dict[str, Any]:
        obj = self._object(args)
        name = str(args.get("field") or args.get("name") or "")
        ftype = str(args.get("type") or "string")
        values = tuple(args.get("values") or ())
        kwargs: dict[str, Any] = {}
        if ftype in ("string", "textarea", "picklist", "multipicklist", "email", "phone", "url"):
            default_length = {"textarea": 32000, "email": 80, "phone": 40}.get(ftype, 255)
            kwargs["length"] = int(args.get("length", default_length))
        if ftype in ("double", "currency", "percent"):
            kwargs["precision"] = int(args.get("precision", 18))
            kwargs["scale"] = int(args.get("scale", 2))
        if ftype == "reference":
            targets = args.get("reference_to") or []
            kwargs["reference_to"] = tuple([targets] if isinstance(targets, str) else targets)
            kwargs["relationship_name"] = args.get("relationship_name") or (
                name[:-3] + "__r" if name.endswith("__c") else None
            )
        if ftype == "boolean":
            kwargs["nillable"] = False
            kwargs["default_value"] = False
        spec = FieldDef(
            name=name,
            type=ftype,
            label=str(args.get("label") or name.removesuffix("__c").replace("_", " ")),
            picklist_values=values,
            custom=name.endswith("__c"),
            pii=bool(args.get("pii", False)),
            **kwargs,
        )
        new = self.store.schema.add_field(obj, spec)
        return {"object": new.name, "field": spec.name, "version": self.store.schema.version(obj)}

    def remove_field(self, args: dict[str, Any]) -> dict[str, Any]:
        obj = self._object(args)
        name = str(args.get("field") or args.get("name") or "")
        new = self.store.schema.remove_field(obj, name)
        return {"object": new.name, "field": name, "version": self.store.schema.version(obj)}

    def set_picklist(self, args: dict[str, Any]) -> dict[str, Any]:
        obj = self._object(args)
        name = str(args.get("field") or "")
        values = args.get("values")
        if isinstance(values, str):
            values = [v.strip() for v in values.split(",") if v.strip()]
        if not values:
            raise AdminError("'values' must be a non-empty list")
        self.store.schema.set_picklist(obj, name, list(values))
        return {"object": obj, "field": name, "values": list(values)}

    def fail(self, args: dict[str, Any]) -> dict[str, Any]:
        target = str(args.get("target", "rest")).lower()
        count = self._count(args)
        if target == "rest":
            status = int(args.get("status", 503))
            code = str(
                args.get("error_code") or DEFAULT_ERROR_CODES.get(status, "UNKNOWN_EXCEPTION")
            )
            self.faults.rest_error(status, code, count)
            return {"target": "rest", "status": status, "error_code": code, "count": count}
        if target == "bulk":
            message = str(args.get("message") or "InternalServerError")
            self.faults.bulk_failure(message, count)
            return {"target": "bulk", "count": count}
        if target == "pubsub":
            grpc_status = str(args.get("status") or "UNAVAILABLE")
            code = str(args.get("error_code") or "sfdc.platform.eventbus.grpc.service.unavailable")
            self.faults.pubsub_error(grpc_status, code, count)
            return {"target": "pubsub", "status": grpc_status, "error_code": code, "count": count}
        if target == "limit":
            return self._fail_limit(args)
        raise AdminError(f"unknown fail target {target!r}: rest, bulk, pubsub or limit")

    def _fail_limit(self, args: dict[str, Any]) -> dict[str, Any]:
        kind = str(args.get("kind", "daily")).lower()
        clear = bool(args.get("clear", False))
        if kind == "daily":
            if clear:
                self.faults.daily_limit(None)
                return {"kind": "daily", "max": self.ctx.usage.default_max}
            # Default: the limit is what has been used already, so the next call is refused.
            mx = int(args["max"]) if args.get("max") is not None else self.ctx.usage.used()
            self.faults.daily_limit(mx)
            return {"kind": "daily", "max": mx, "used": self.ctx.usage.used()}
        if kind == "concurrent":
            if clear:
                self.faults.concurrent_limit(None)
                return {"kind": "concurrent", "max": None}
            if args.get("count") is not None:
                count = self._count(args)
                self.faults.rest_error(
                    403, "REQUEST_LIMIT_EXCEEDED:ConcurrentPerOrgLongTxn Limit exceeded.", count
                )
                return {"kind": "concurrent", "count": count}
            mx = int(args.get("max", 0))
            self.faults.concurrent_limit(mx)
            return {"kind": "concurrent", "max": mx}
        if kind in ("bulk-jobs", "bulk-mb"):
            bulk = self.ctx.extra.get("bulk")
            if bulk is None:
                raise AdminError("this server has no Bulk API")
            setter = (
                self.faults.bulk_jobs_limit if kind == "bulk-jobs" else self.faults.bulk_mb_limit
            )
            used = bulk.jobs_last_24h() if kind == "bulk-jobs" else bulk.megabytes_last_24h()
            if clear:
                setter(None)
                return {
                    "kind": kind,
                    "max": bulk.jobs_max() if kind == "bulk-jobs" else bulk.mb_max(),
                }
            mx = int(args["max"]) if args.get("max") is not None else used
            setter(mx)
            return {"kind": kind, "max": mx, "used": used}
        if kind == "deliveries":
            return self._fail_deliveries(args, clear)
        raise AdminError(
            f"unknown limit {kind!r}: daily, concurrent, deliveries, bulk-jobs or bulk-mb"
        )

    def query_log(self, args: dict[str, Any]) -> dict[str, Any]:
        entries = [{"endpoint": e, "soql": q} for e, q in list(self.ctx.soql_log)]
        if args.get("clear"):
            self.ctx.soql_log.clear()
        return {"queries": entries}

    def _fail_deliveries(self, args: dict[str, Any], clear: bool) -> dict[str, Any]:
        pubsub = self.ctx.extra.get("pubsub")
        if pubsub is None:
            raise AdminError("this emulator serves no Pub/Sub API: no delivery allocation")
        if clear:
            self.faults.delivery_limit(None)
        else:
            delivered = pubsub.delivered_last_24h()
            # Default: what was delivered already, so the next delivery is refused.
            mx = int(args["max"]) if args.get("max") is not None else delivered
            self.faults.delivery_limit(mx)
        return {
            "kind": "deliveries",
            "max": pubsub.effective_delivery_limit(),
            "delivered": pubsub.delivered_last_24h(),
        }

    def slow(self, args: dict[str, Any]) -> dict[str, Any]:
        target = str(args.get("target", "rest")).lower()
        seconds = parse_duration(args.get("seconds", 1))
        count = self._count(args)
        self.faults.slow(target, seconds, count)
        return {"target": target, "seconds": seconds, "count": count}

    def expire_sessions(self, args: dict[str, Any]) -> dict[str, Any]:
        self.faults.expire_sessions()
        return {"session_epoch": self.faults.session_epoch}

    def delay_events(self, args: dict[str, Any]) -> dict[str, Any]:
        fraction = float(args.get("fraction", 0.1))
        seconds = parse_duration(args.get("seconds", 30))
        self.faults.delay_events(fraction, seconds)
        return {"fraction": fraction, "seconds": seconds}

    def drop_events(self, args: dict[str, Any]) -> dict[str, Any]:
        """Lose ``fraction`` of the new CDC events (at most ``count``), as Salesforce does
        "in rare cases": never delivered, never replayable, the commits stand."""
        fraction = float(args.get("fraction", 0.1))
        count = None if args.get("count") is None else self._count(args)
        self.faults.drop_events(fraction, count)
        return {"fraction": fraction, "count": count}

    def duplicate_on_resubscribe(self, args: dict[str, Any]) -> dict[str, Any]:
        n = int(args.get("n", args.get("count", 1)))
        self.faults.duplicate_on_resubscribe(n)
        return {"n": n}

    def reset_faults(self, args: dict[str, Any]) -> dict[str, Any]:
        self.faults.reset()
        return self.faults.snapshot()

    def advance_clock(self, args: dict[str, Any]) -> dict[str, Any]:
        seconds = parse_duration(args.get("duration", args.get("seconds", 0)))
        advance = getattr(self.store, "advance_clock", None)
        if advance is not None:
            advance(seconds)
        else:
            self.store.clock.advance(seconds)
        return {"advanced_s": seconds, "now_ms": self.store.clock.now_ms()}

    def traffic(self, args: dict[str, Any]) -> dict[str, Any]:
        traffic = self.ctx.traffic
        if traffic is None:
            raise AdminError("no traffic generator is running")
        if args.get("mix") is not None:
            from sfdc_emulator.traffic import Mix

            mix = args["mix"]
            traffic.mix = Mix(**mix) if isinstance(mix, dict) else mix
        if args.get("rate") is not None:
            traffic.rate = float(args["rate"])
            if traffic.rate > 0 and not traffic.running:
                traffic.start()
        if args.get("paused") is True:
            traffic.stop()
        elif args.get("paused") is False:
            traffic.start()
        return {"rate": traffic.rate, "running": traffic.running, "stats": dict(traffic.stats)}

    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        counts = {}
        for name in self.store.schema.names():
            counts[name] = {
                "live": self.store.count(name),
                "total": self.store.count(name, include_deleted=True),
            }
        return {
            "now_ms": self.store.clock.now_ms(),
            "api_usage": {"used": self.ctx.usage.used(), "max": self.ctx.daily_max()},
            "faults": self.faults.snapshot(),
            "objects": counts,
            "latest_replay_id": self.store.latest_replay_id(),
        }

    def truth(self, args: dict[str, Any]) -> dict[str, Any]:
        """Write the ground truth of an object (live + soft-deleted rows) to Parquet at
        ``out`` (a path on the emulator's host): the CLI's ``truth`` while a server holds
        the DuckDB file."""
        import pyarrow.parquet as pq

        obj = self._object(args)
        out = args.get("out")
        if not out:
            raise AdminError("missing 'out' (a Parquet file path)")
        table = self.store.truth(obj)
        pq.write_table(table, str(out))
        return {"object": obj, "rows": table.num_rows, "out": str(out)}

    def issue_token(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"access_token": self.ctx.oauth.issue_token("admin")}


def _ssl_context(info: dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=info.get("ca_bundle"))


def _post(url: str, data: bytes, headers: dict[str, str], context: ssl.SSLContext) -> Any:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    # No proxies: the emulator is local, and an https_proxy in the environment must not
    # intercept (or see) the admin token.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(request, timeout=600) as response:
        return json.loads(response.read() or b"null")


def _fresh_token(info: dict[str, Any], context: ssl.SSLContext) -> str:
    """A new token through the JWT bearer flow (the handshake's token may be expired)."""
    import jwt

    key = open(info["private_key_path"], "rb").read()  # noqa: SIM115 - tiny file
    assertion = jwt.encode(
        {
            "iss": info["client_id"],
            "sub": info["username"],
            "aud": info["instance_url"],
            "exp": int(time.time()) + 170,
        },
        key,
        algorithm="RS256",
    )
    form = urllib.parse.urlencode({"grant_type": JWT_BEARER_GRANT, "assertion": assertion})
    body = _post(
        info["token_url"],
        form.encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
        context,
    )
    return str(body["access_token"])


def admin_call(info: dict[str, Any], command: str, **args: Any) -> dict[str, Any]:
    """Run an admin command against a running emulator; returns the command's result.

    ``info`` is the handshake dict (``admin_url``, ``access_token``, ``ca_bundle``, and for
    re-authentication ``token_url``, ``client_id``, ``username``, ``private_key_path``,
    ``instance_url``). When the handshake token was revoked (``expire-sessions``), a new one
    is obtained through the JWT bearer flow, stored back into ``info``, and the call retried.
    Raises ``RuntimeError`` with the server's message when the command is refused.
    """
    context = _ssl_context(info)
    payload = json.dumps({"command": command, "args": args}).encode()
    for attempt in range(2):
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {info.get('access_token', '')}",
        }
        try:
            body = _post(info["admin_url"], payload, headers, context)
            return body["result"]
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", errors="replace")
            if exc.code == 401 and attempt == 0 and info.get("private_key_path"):
                info["access_token"] = _fresh_token(info, context)
                continue
            try:
                detail = json.loads(text)[0]
                message = f"{detail['errorCode']}: {detail['message']}"
            except (ValueError, KeyError, IndexError, TypeError):
                message = text
            raise RuntimeError(f"admin {command} failed ({exc.code}): {message}") from None
    raise RuntimeError(f"admin {command} failed: not authorized")

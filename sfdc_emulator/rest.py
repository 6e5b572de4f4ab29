"""REST API routes of the emulator (``/services/data/...``) and the pieces shared with Bulk.

Resources: versions list, per-version resource map, limits, record counts (a snapshot
refreshed every 5 minutes of org time, live rows only), describe global, sObject basic
info and describe, query / queryAll with server-side cursors (``nextRecordsUrl``), record
retrieve, getDeleted / getUpdated, and record create / update / delete through
``OrgStore.commit`` (so third-party tools can write too).

Handlers are plain functions run in a worker thread by ``http_server`` (DuckDB calls
block); ``http_server`` does authentication, faults, API-usage counting and the
``Sforce-Limit-Info`` header around them. Errors are raised as :class:`ApiError` and
rendered as Salesforce's JSON array ``[{"message", "errorCode"[, "fields"]}]``.

Query cursors: the first page is read straight from DuckDB; when a result has more than
one page, the rest of the stream is spooled to an Arrow IPC file (record batches of exactly
one page), so a cursor is a consistent snapshot of the moment of the query and paging
costs no re-execution. Cursors expire after 15 idle minutes and a user keeps at most 10
open (the oldest is dropped), as in Salesforce; a dropped or expired cursor answers
``INVALID_QUERY_LOCATOR``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sfdc_emulator.describe import SObjectDef, describe_global, describe_global_entry
from sfdc_emulator.ids import BASE62, is_valid_id, to_18
from sfdc_emulator.oauth import OAuthService, Session
from sfdc_emulator.soql import SoqlError, SoqlQuery, parse, quote_ident, to_sql
from sfdc_emulator.store import Mutation, StoreError

# API versions the emulator answers (Spring '15 .. Summer '25); simple-salesforce
# defaults to 59.0.
MIN_VERSION, MAX_VERSION = 31, 64
VERSION_LABELS = {
    56: "Winter '23", 57: "Spring '23", 58: "Summer '23", 59: "Winter '24", 60: "Spring '24",
    61: "Summer '24", 62: "Winter '25", 63: "Spring '25", 64: "Summer '25",
}  # fmt: skip
MAX_BATCH_SIZE = 2000  # REST query pages hold at most 2,000 records
MIN_BATCH_SIZE = 200  # Sforce-Query-Options: batchSize below 200 is raised to 200
CURSOR_IDLE_SECONDS = 15 * 60
MAX_CURSORS_PER_USER = 10
DELETED_WINDOW = timedelta(days=15)
UPDATED_WINDOW = timedelta(days=30)
MAX_REPLICATION_IDS = 600_000
DEFAULT_DAILY_API_LIMIT = 100_000
# /limits/recordCount is documented as approximate: Salesforce serves a periodically
# refreshed figure, not a query, so the emulator serves a snapshot this old at most.
RECORD_COUNT_REFRESH_MS = 5 * 60 * 1000
RECORD_COUNT_MIN_VERSION = 40
SOQL_LOG_SIZE = 2000  # statements kept for the admin ``query-log``


class ApiError(Exception):
    """An error response in Salesforce's shape."""

    def __init__(
        self, status: int, error_code: str, message: str, fields: Sequence[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = list(fields) if fields is not None else None

    def body(self) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            item["fields"] = self.fields
        return [item]


def error_response(status: int, error_code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse([{"message": message, "errorCode": error_code}], status, headers=headers)


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def soql_error(exc: SoqlError) -> ApiError:
    return ApiError(exc.status, exc.error_code, exc.message)


class ApiUsage:
    """API requests counted over a rolling 24 h of emulator time (hour buckets), so
    ``advance-clock 24h`` frees the daily budget as it would in a real org."""

    def __init__(self, now_ms: Callable[[], int], default_max: int) -> None:
        self._lock = threading.Lock()
        self._now_ms = now_ms
        self.default_max = default_max
        self._buckets: dict[int, int] = {}

    def _prune(self, hour: int) -> None:
        for key in [k for k in self._buckets if k <= hour - 24]:
            del self._buckets[key]

    def record(self, n: int = 1) -> int:
        hour = self._now_ms() // 3_600_000
        with self._lock:
            self._prune(hour)
            self._buckets[hour] = self._buckets.get(hour, 0) + n
            return sum(self._buckets.values())

    def used(self) -> int:
        hour = self._now_ms() // 3_600_000
        with self._lock:
            self._prune(hour)
            return sum(self._buckets.values())


@dataclass
class ApiContext:
    """What every handler needs. ``instance_url`` is filled in once the port is bound."""

    store: Any  # OrgStore (typed loosely: store.py is another module's contract)
    faults: Any  # Faults
    oauth: OAuthService
    usage: ApiUsage
    work_dir: Path
    api_version: str = "59.0"
    instance_url: str = ""
    traffic: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    # (endpoint, SOQL) of every query served, newest last (the admin ``query-log``).
    soql_log: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=SOQL_LOG_SIZE))

    def record_soql(self, endpoint: str, soql: str) -> None:
        """Remember one served statement (query, queryAll or a Bulk job)."""
        self.soql_log.append((endpoint, soql))

    def daily_max(self) -> int:
        override = self.faults.daily_limit_max if self.faults is not None else None
        return override if override is not None else self.usage.default_max

    def catalog(self) -> dict[str, SObjectDef]:
        return {spec.name: spec for spec in self.store.schema.objects()}

    def object_spec(self, name: str) -> SObjectDef:
        try:
            return self.store.schema.get(name)
        except KeyError:
            raise ApiError(
                404, "NOT_FOUND", f"The requested resource does not exist: sobject {name}"
            ) from None


Handler = Callable[[Request, Session, bytes], Response]


@dataclass(frozen=True)
class ApiRoute:
    """A route served under authentication (``auth``) and counted as an API call."""

    path: str
    handler: Handler
    methods: tuple[str, ...] = ("GET",)
    auth: bool = True
    count: bool = True


def check_version(request: Request) -> str:
    version = request.path_params.get("version", "")
    m = re.fullmatch(r"(\d+)\.0", version)
    if m is None or not MIN_VERSION <= int(m.group(1)) <= MAX_VERSION:
        raise not_found()
    return version


def format_datetime(value: datetime | None) -> str | None:
    """REST JSON datetime: ``2024-01-31T12:34:56.000+0000`` (UTC)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _json_value(value: Any, ftype: str) -> Any:
    if value is None:
        return None
    if ftype == "datetime" and isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _address_key(component: str, compound: str) -> str:
    prefix = compound[: -len("Address")]
    suffix = component[len(prefix) :]
    return suffix[:1].lower() + suffix[1:]


class RecordShaper:
    """Arrow rows of a translated query -> REST records (attributes, nested parents,
    compound addresses), in SELECT order."""

    def __init__(self, query: SoqlQuery, version: str, prefixes: dict[str, str]) -> None:
        self.query = query
        self.version = version
        self.prefixes = prefixes  # key prefix -> object name (polymorphic parents)

    def _url(self, obj: str, record_id: str) -> str:
        return f"/services/data/v{self.version}/sobjects/{obj}/{record_id}"

    def records(self, table: pa.Table) -> list[dict[str, Any]]:
        query = self.query
        data = {name: table.column(name).to_pylist() for name in table.column_names}
        n = table.num_rows
        base_type = query.object.name
        id_col = None
        for col in query.columns:
            if col.path == ("Id",):
                id_col = col.sql_names[0]
        rels = {r.path: data[r.sql_name] for r in query.relationships}
        out: list[dict[str, Any]] = []
        for i in range(n):
            attrs: dict[str, Any] = {"type": base_type}
            if id_col is not None and data[id_col][i] is not None:
                attrs["url"] = self._url(base_type, data[id_col][i])
            record: dict[str, Any] = {"attributes": attrs}
            for col in query.columns:
                target = record
                dead = False
                for depth in range(len(col.path) - 1):
                    rel_path = col.path[: depth + 1]
                    key = col.path[depth]
                    parent_id = rels[rel_path][i]
                    if parent_id is None:
                        target.setdefault(key, None)
                        dead = True
                        break
                    child = target.get(key)
                    if child is None:
                        obj = self.prefixes.get(parent_id[:3], key)
                        child = {"attributes": {"type": obj, "url": self._url(obj, parent_id)}}
                        target[key] = child
                    target = child
                if dead:
                    continue
                leaf = col.path[-1]
                if col.components:
                    parts = {
                        _address_key(c.name, col.field.name): _json_value(data[s][i], c.type)
                        for c, s in zip(col.components, col.sql_names, strict=True)
                    }
                    if any(v is not None for v in parts.values()):
                        parts.setdefault("geocodeAccuracy", None)
                        target[leaf] = dict(sorted(parts.items()))
                    else:
                        target[leaf] = None
                else:
                    target[leaf] = _json_value(data[col.sql_names[0]][i], col.field.type)
            out.append(record)
        return out


@dataclass
class QueryCursor:
    cursor_id: str
    owner: str
    query: SoqlQuery
    endpoint: str  # "query" | "queryAll"
    batch_size: int
    total: int
    spool: Path | None
    last_access: float = field(default_factory=time.monotonic)


def _new_cursor_id() -> str:
    # Shaped like a query locator id ("01g" + 15 chars); random so it is unguessable.
    return "01g" + "".join(secrets.choice(BASE62) for _ in range(15))


class CursorRegistry:
    """Open REST query cursors; thread-safe; spools live under ``work_dir``."""

    def __init__(self, work_dir: Path) -> None:
        self._lock = threading.Lock()
        self._cursors: OrderedDict[str, QueryCursor] = OrderedDict()
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)

    def _drop(self, cursor: QueryCursor) -> None:
        self._cursors.pop(cursor.cursor_id, None)
        if cursor.spool is not None:
            cursor.spool.unlink(missing_ok=True)

    def _expire(self) -> None:
        deadline = time.monotonic() - CURSOR_IDLE_SECONDS
        for cursor in [c for c in self._cursors.values() if c.last_access < deadline]:
            self._drop(cursor)

    def add(self, cursor: QueryCursor) -> None:
        with self._lock:
            self._expire()
            owned = [c for c in self._cursors.values() if c.owner == cursor.owner]
            # Salesforce keeps 10 open cursors per user; opening another drops the oldest.
            for old in owned[: max(0, len(owned) - MAX_CURSORS_PER_USER + 1)]:
                self._drop(old)
            self._cursors[cursor.cursor_id] = cursor

    def get(self, cursor_id: str) -> QueryCursor | None:
        with self._lock:
            self._expire()
            cursor = self._cursors.get(cursor_id)
            if cursor is not None:
                cursor.last_access = time.monotonic()
            return cursor

    def clear(self) -> None:
        with self._lock:
            for cursor in list(self._cursors.values()):
                self._drop(cursor)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cursors)


def parse_batch_size(header: str | None) -> int:
    if not header:
        return MAX_BATCH_SIZE
    m = re.search(r"batchSize\s*=\s*(\d+)", header)
    if m is None:
        return MAX_BATCH_SIZE
    return max(MIN_BATCH_SIZE, min(MAX_BATCH_SIZE, int(m.group(1))))


def _take_rows(reader: pa.RecordBatchReader, n: int) -> tuple[list[pa.RecordBatch], int, bool]:
    """Read at least ``n`` rows (or to the end); returns batches, row count, exhausted."""
    batches: list[pa.RecordBatch] = []
    rows = 0
    while rows < n:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return batches, rows, True
        batches.append(batch)
        rows += batch.num_rows
    return batches, rows, False


def _rebatch(batches: Iterable[pa.RecordBatch], size: int) -> Iterable[pa.Table]:
    """Regroup a stream of record batches into tables of exactly ``size`` rows (last: fewer)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending = rest.to_batches()
            count = rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


class RestApi:
    """The ``/services/data`` handlers."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.cursors = CursorRegistry(ctx.work_dir / "cursors")
        self._counts_lock = threading.Lock()
        self._counts: tuple[int, dict[str, int] | None] = (0, None)

    def _json(self, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status)

    def _prefixes(self) -> dict[str, str]:
        return {spec.key_prefix: spec.name for spec in self.ctx.store.schema.objects()}

    def _parse(self, soql: str) -> SoqlQuery:
        try:
            return parse(soql, self.ctx.store.schema)
        except SoqlError as exc:
            raise soql_error(exc) from None

    def versions(self, request: Request, session: Session | None, body: bytes) -> Response:
        out = []
        for v in range(MIN_VERSION, MAX_VERSION + 1):
            label = VERSION_LABELS.get(v, f"API {v}.0")
            out.append({"label": label, "url": f"/services/data/v{v}.0", "version": f"{v}.0"})
        return self._json(out)

    def resources(self, request: Request, session: Session, body: bytes) -> Response:
        version = check_version(request)
        base = f"/services/data/v{version}"
        names = ["sobjects", "query", "queryAll", "limits", "jobs", "search", "recent", "tooling"]
        return self._json({n: f"{base}/{n}" for n in names})

    def limits(self, request: Request, session: Session, body: bytes) -> Response:
        check_version(request)
        daily_max = self.ctx.daily_max()
        used = self.ctx.usage.used()
        bulk = self.ctx.extra.get("bulk")
        jobs_24h = bulk.jobs_last_24h() if bulk is not None else 0
        mb_24h = bulk.megabytes_last_24h() if bulk is not None else 0
        jobs_max = bulk.jobs_max() if bulk is not None else 10000
        mb_max = bulk.mb_max() if bulk is not None else 976562
        # CDC deliveries over CometD and Pub/Sub count against DailyDeliveredPlatformEvents
        # (reference §2.7); without a Pub/Sub server only the unenforced default is shown.
        pubsub = self.ctx.extra.get("pubsub")
        delivery_max = pubsub.effective_delivery_limit() if pubsub is not None else None
        delivered = pubsub.delivered_last_24h() if pubsub is not None else 0

        def lim(mx: int, remaining: int | None = None) -> dict[str, int]:
            return {"Max": mx, "Remaining": mx if remaining is None else max(0, remaining)}

        body_out = {
            "ActiveScratchOrgs": lim(3),
            "AnalyticsExternalDataSizeMB": lim(40960),
            "ConcurrentAsyncGetReportInstances": lim(200),
            "ConcurrentEinsteinDataInsightsStoryCreation": lim(5),
            "ConcurrentSyncReportRuns": lim(20),
            "DailyAnalyticsDataflowJobExecutions": lim(60),
            "DailyApiRequests": {
                **lim(daily_max, daily_max - used),
                "Salesforce CLI": lim(0),
            },
            "DailyAsyncApexExecutions": lim(250000),
            "DailyAsyncApexTests": lim(500),
            "DailyBulkApiBatches": lim(15000),
            "DailyBulkV2QueryFileStorageMB": lim(mb_max, mb_max - mb_24h),
            "DailyBulkV2QueryJobs": lim(jobs_max, jobs_max - jobs_24h),
            "DailyDeliveredPlatformEvents": (
                lim(50000) if delivery_max is None else lim(delivery_max, delivery_max - delivered)
            ),
            "DailyDurableGenericStreamingApiEvents": lim(10000),
            "DailyDurableStreamingApiEvents": lim(10000),
            "DailyEinsteinDataInsightsStoryCreation": lim(1000),
            "DailyGenericStreamingApiEvents": lim(10000),
            "DailyScratchOrgs": lim(6),
            "DailyStandardVolumePlatformEvents": lim(10000),
            "DailyStreamingApiEvents": lim(10000),
            "DailyWorkflowEmails": lim(1950),
            "DataStorageMB": lim(1024),
            "DurableStreamingApiConcurrentClients": lim(20),
            "FileStorageMB": lim(1024),
            "HourlyAsyncReportRuns": lim(1200),
            "HourlyDashboardRefreshes": lim(200),
            "HourlyDashboardResults": lim(5000),
            "HourlyDashboardStatuses": lim(999999999),
            "HourlyLongTermIdMapping": lim(100000),
            "HourlyManagedContentPublicRequests": lim(50000),
            "HourlyODataCallout": lim(10000),
            "HourlyPublishedPlatformEvents": lim(50000),
            "HourlyPublishedStandardVolumePlatformEvents": lim(50000),
            "HourlyShortTermIdMapping": lim(100000),
            "HourlySyncReportRuns": lim(500),
            "HourlyTimeBasedWorkflow": lim(50),
            "MassEmail": lim(10),
            "MonthlyPlatformEventsUsageEntitlement": lim(3000000),
            "Package2VersionCreates": lim(6),
            "PermissionSets": lim(1500),
            "SingleEmail": lim(15),
            "StreamingApiConcurrentClients": lim(20),
        }
        return self._json(body_out)

    def record_count(self, request: Request, session: Session, body: bytes) -> Response:
        """``/limits/recordCount[?sObjects=A,B]``: approximate live counts from a snapshot.

        Like Salesforce: no soft-deleted rows, names the org does not know are left out,
        no ``sObjects`` means every object, and the figure lags (refreshed every 5 minutes
        of org time, so rows written since are not in it)."""
        version = check_version(request)
        if float(version) < RECORD_COUNT_MIN_VERSION:
            raise not_found()
        counts = self._record_counts()
        wanted = request.query_params.get("sObjects")
        if wanted is None:
            names = sorted(counts)
        else:
            by_lower = {n.lower(): n for n in counts}
            names = [
                by_lower[w.strip().lower()]
                for w in wanted.split(",")
                if w.strip().lower() in by_lower
            ]
        return self._json({"sObjects": [{"count": counts[n], "name": n} for n in names]})

    def _record_counts(self) -> dict[str, int]:
        now = self.ctx.store.clock.now_ms()
        with self._counts_lock:
            taken, counts = self._counts
            if counts is None or now - taken >= RECORD_COUNT_REFRESH_MS or now < taken:
                counts = {
                    name: self.ctx.store.count(name) for name in self.ctx.store.schema.names()
                }
                self._counts = (now, counts)
            return counts

    def describe_global(self, request: Request, session: Session, body: bytes) -> Response:
        version = check_version(request)
        return self._json(describe_global(self.ctx.store.schema.objects(), version))

    def sobject_info(self, request: Request, session: Session, body: bytes) -> Response:
        version = check_version(request)
        spec = self.ctx.object_spec(request.path_params["sobject"])
        return self._json(
            {"objectDescribe": describe_global_entry(spec, version), "recentItems": []}
        )

    def describe(self, request: Request, session: Session, body: bytes) -> Response:
        version = check_version(request)
        spec = self.ctx.object_spec(request.path_params["sobject"])
        body_out = spec.describe_json(version, self.ctx.store.schema.objects())
        return self._json(body_out)

    def query(self, request: Request, session: Session, body: bytes) -> Response:
        return self._start_query(request, session, include_deleted=False)

    def query_all(self, request: Request, session: Session, body: bytes) -> Response:
        return self._start_query(request, session, include_deleted=True)

    def _start_query(self, request: Request, session: Session, include_deleted: bool) -> Response:
        version = check_version(request)
        soql = request.query_params.get("q")
        if soql is None:
            raise ApiError(400, "MALFORMED_QUERY", "A query string must be provided.")
        query = self._parse(soql)
        endpoint = "queryAll" if include_deleted else "query"
        self.ctx.record_soql(endpoint, soql)
        batch_size = parse_batch_size(request.headers.get("sforce-query-options"))
        sql, params = to_sql(query, include_deleted=include_deleted)
        cur = self.ctx.store.read_cursor()
        try:
            if query.is_count:
                total = cur.execute(sql, params).fetchone()[0]
                return self._json({"totalSize": total, "done": True, "records": []})
            reader = cur.sql(sql, params=params).to_arrow_reader(batch_size)
            batches, rows, exhausted = _take_rows(reader, batch_size + 1)
            table = pa.Table.from_batches(batches, schema=reader.schema)
            shaper = RecordShaper(query, version, self._prefixes())
            if exhausted and rows <= batch_size:
                records = shaper.records(table)
                return self._json({"totalSize": rows, "done": True, "records": records})
            cursor_id = _new_cursor_id()
            spool = self.cursors.work_dir / f"{cursor_id}.arrow"
            total = 0
            with pa.OSFile(str(spool), "wb") as sink, pa.ipc.new_file(sink, reader.schema) as out:
                stream = [*batches, *reader] if exhausted else _chain(batches, reader)
                for page in _rebatch(stream, batch_size):
                    out.write_table(page, max_chunksize=batch_size)
                    total += page.num_rows
        finally:
            cur.close()
        cursor = QueryCursor(cursor_id, session.user_id, query, endpoint, batch_size, total, spool)
        self.cursors.add(cursor)
        first = table.slice(0, batch_size)
        return self._json(self._page(cursor, version, 0, first, shaper))

    def _page(
        self,
        cursor: QueryCursor,
        version: str,
        offset: int,
        table: pa.Table,
        shaper: RecordShaper,
    ) -> dict[str, Any]:
        end = offset + table.num_rows
        done = end >= cursor.total
        body: dict[str, Any] = {"totalSize": cursor.total, "done": done}
        if not done:
            body["nextRecordsUrl"] = (
                f"/services/data/v{version}/{cursor.endpoint}/{cursor.cursor_id}-{end}"
            )
        body["records"] = shaper.records(table)
        return body

    def query_more(self, request: Request, session: Session, body: bytes) -> Response:
        version = check_version(request)
        locator = request.path_params["locator"]
        cursor_id, _, offset_text = locator.rpartition("-")
        cursor = self.cursors.get(cursor_id) if offset_text.isdigit() else None
        if cursor is None or cursor.owner != session.user_id or cursor.spool is None:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        offset = int(offset_text)
        if offset >= cursor.total:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        try:
            with pa.memory_map(str(cursor.spool)) as source:
                reader = pa.ipc.open_file(source)
                table = _read_rows(reader, offset, cursor.batch_size)
        except FileNotFoundError:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator") from None
        shaper = RecordShaper(cursor.query, version, self._prefixes())
        return self._json(self._page(cursor, version, offset, table, shaper))

    def retrieve(self, request: Request, session: Session, body: bytes) -> Response:
        check_version(request)
        spec = self.ctx.object_spec(request.path_params["sobject"])
        record_id = request.path_params["record_id"]
        if not is_valid_id(record_id):
            raise not_found()
        fields_param = request.query_params.get("fields")
        if fields_param:
            names = [n.strip() for n in fields_param.split(",") if n.strip()]
            bad = [n for n in names if not spec.has_field(n)]
            if bad:
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{bad[0]}' on entity '{spec.name}'. If you are attempting "
                    "to use a custom field, be sure to append the '__c' after the custom field "
                    "name. Please reference your WSDL or the describe call for the appropriate "
                    "names.",
                )
            select = ", ".join(["Id", *[spec.field(n).name for n in names if n.lower() != "id"]])
        else:
            select = ", ".join(f.name for f in spec.fields)
        # record_id is validated (base62, 15/18 chars) before it is placed in the SOQL text.
        query = self._parse(f"SELECT {select} FROM {spec.name} WHERE Id = '{to_18(record_id)}'")
        version = request.path_params["version"]
        sql, params = to_sql(query, include_deleted=False)
        cur = self.ctx.store.read_cursor()
        try:
            table = cur.sql(sql, params=params).to_arrow_table()
        finally:
            cur.close()
        if table.num_rows == 0:
            raise not_found()
        record = RecordShaper(query, version, self._prefixes()).records(table)[0]
        return self._json(record)

    def deleted(self, request: Request, session: Session, body: bytes) -> Response:
        return self._replication(request, deleted=True)

    def updated(self, request: Request, session: Session, body: bytes) -> Response:
        return self._replication(request, deleted=False)

    def _replication(self, request: Request, deleted: bool) -> Response:
        check_version(request)
        spec = self.ctx.object_spec(request.path_params["sobject"])
        start = _parse_replication_date(request.query_params.get("start"), "start")
        end = _parse_replication_date(request.query_params.get("end"), "end")
        if start >= end:
            raise ApiError(
                400,
                "INVALID_REPLICATION_DATE",
                "startDate must chronologically precede endDate by more than one minute",
            )
        now = self.ctx.store.clock.now().replace(tzinfo=None)
        window = DELETED_WINDOW if deleted else UPDATED_WINDOW
        earliest = _floor_minute(now - window)
        if not deleted and start < earliest:
            raise ApiError(
                400,
                "INVALID_REPLICATION_DATE",
                "startDate cannot be more than 30 days ago",
            )
        if deleted:
            earliest = self._delete_log_start(spec.name, start, earliest)
        # Covered up to the minute before now; the next call should start there.
        latest = _floor_minute(min(end, now))
        lower = max(start, earliest) if deleted else start
        table = quote_ident(spec.name)
        if deleted:
            sql = (
                f'SELECT "Id", "SystemModstamp" FROM {table} WHERE "IsDeleted" '
                f'AND "SystemModstamp" >= ? AND "SystemModstamp" < ? ORDER BY "SystemModstamp" '
                "LIMIT ?"
            )
        else:
            sql = (
                f'SELECT "Id" FROM {table} WHERE NOT "IsDeleted" '
                f'AND "SystemModstamp" >= ? AND "SystemModstamp" < ? ORDER BY "SystemModstamp" '
                "LIMIT ?"
            )
        cur = self.ctx.store.read_cursor()
        try:
            rows = cur.execute(sql, [lower, latest, MAX_REPLICATION_IDS + 1]).fetchall()
        finally:
            cur.close()
        if len(rows) > MAX_REPLICATION_IDS:
            raise ApiError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_REPLICATION_IDS} records "
                "into this call",
            )
        if deleted:
            return self._json(
                {
                    "deletedRecords": [
                        {"id": rid, "deletedDate": format_datetime(ts)} for rid, ts in rows
                    ],
                    "earliestDateAvailable": format_datetime(earliest),
                    "latestDateCovered": format_datetime(latest),
                }
            )
        return self._json(
            {"ids": [r[0] for r in rows], "latestDateCovered": format_datetime(latest)}
        )

    def _delete_log_start(self, obj: str, start: datetime, earliest: datetime) -> datetime:
        """earliestDateAvailable of getDeleted: 15 days back, or later when ``obj`` rows
        were physically deleted since (hard delete, Recycle Bin emptied); a window that
        starts before such a deletion is refused with INVALID_REPLICATION_DATE, as the
        SOAP getDeleted() guide says, because the deletes before it are no longer listed
        and only a full comparison of Ids finds them."""
        purged_ms = self.ctx.store.last_physical_delete(obj)
        if purged_ms is None:
            return earliest
        # the whole second of the deletion is unreliable: complete from the next one
        purged = datetime.fromtimestamp(purged_ms // 1000 + 1, UTC).replace(tzinfo=None)
        if purged <= earliest:
            return earliest
        if start < purged:
            raise ApiError(
                400,
                "INVALID_REPLICATION_DATE",
                f"{obj} records were physically deleted (hard delete or Recycle Bin emptied): "
                f"the delete log is complete only from earliestDateAvailable "
                f"{format_datetime(purged)}; startDate {format_datetime(start)} precedes it. "
                f"Resynchronize {obj} with a full comparison of Ids.",
            )
        return purged

    def create(self, request: Request, session: Session, body: bytes) -> Response:
        check_version(request)
        spec = self.ctx.object_spec(request.path_params["sobject"])
        values = self._write_values(spec, body)
        result = self._commit("create", spec, None, values, session)
        return JSONResponse({"id": result.ids[0], "success": True, "errors": []}, 201)

    def update(self, request: Request, session: Session, body: bytes) -> Response:
        check_version(request)
        spec = self.ctx.object_spec(request.path_params["sobject"])
        record_id = self._existing_id(spec, request.path_params["record_id"])
        values = self._write_values(spec, body)
        self._commit("update", spec, record_id, values, session)
        return Response(status_code=204)

    def delete(self, request: Request, session: Session, body: bytes) -> Response:
        check_version(request)
        spec = self.ctx.object_spec(request.path_params["sobject"])
        record_id = self._existing_id(spec, request.path_params["record_id"])
        self._commit("delete", spec, record_id, {}, session)
        return Response(status_code=204)

    def _existing_id(self, spec: SObjectDef, record_id: str) -> str:
        if not is_valid_id(record_id):
            raise not_found()
        record_id = to_18(record_id)
        cur = self.ctx.store.read_cursor()
        try:
            row = cur.execute(
                f'SELECT "IsDeleted" FROM {quote_ident(spec.name)} WHERE "Id" = ?', [record_id]
            ).fetchone()
        finally:
            cur.close()
        if row is None:
            raise not_found()
        if row[0]:
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return record_id

    def _write_values(self, spec: SObjectDef, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "attributes":
                continue
            if not spec.has_field(key):
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{key}' on sobject of type {spec.name}",
                    [key],
                )
            # The store coerces JSON values (ISO datetimes, numbers) and reports bad types.
            values[spec.field(key).name] = value
        return values

    def _commit(
        self,
        op: str,
        spec: SObjectDef,
        record_id: str | None,
        values: dict[str, Any],
        session: Session,
    ) -> Any:
        mutation = Mutation(op=op, object=spec.name, id=record_id, values=values)  # type: ignore[arg-type]
        try:
            return self.ctx.store.commit(
                [mutation],
                user_id=session.user_id,
                origin=f"com/salesforce/api/rest/{self.ctx.api_version}",
            )
        except StoreError as exc:
            raise ApiError(400, exc.error_code, str(exc), exc.fields or None) from None
        except (ValueError, KeyError) as exc:
            raise ApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", str(exc)) from None

    def routes(self) -> list[ApiRoute]:
        base = "/services/data/v{version}"
        obj = base + "/sobjects/{sobject}"
        return [
            ApiRoute("/services/data", self.versions, auth=False, count=False),
            ApiRoute(base, self.resources),
            ApiRoute(base + "/limits", self.limits),
            ApiRoute(base + "/limits/recordCount", self.record_count),
            ApiRoute(base + "/sobjects", self.describe_global),
            ApiRoute(base + "/query", self.query),
            ApiRoute(base + "/query/{locator}", self.query_more),
            ApiRoute(base + "/queryAll", self.query_all),
            ApiRoute(base + "/queryAll/{locator}", self.query_more),
            ApiRoute(obj, self.sobject_info),
            ApiRoute(obj, self.create, ("POST",)),
            ApiRoute(obj + "/describe", self.describe),
            ApiRoute(obj + "/deleted", self.deleted),
            ApiRoute(obj + "/updated", self.updated),
            ApiRoute(obj + "/{record_id}", self.retrieve),
            ApiRoute(obj + "/{record_id}", self.update, ("PATCH",)),
            ApiRoute(obj + "/{record_id}", self.delete, ("DELETE",)),
        ]


def _chain(first: list[pa.RecordBatch], reader: pa.RecordBatchReader) -> Iterable[pa.RecordBatch]:
    yield from first
    yield from reader


def _read_rows(reader: pa.ipc.RecordBatchFileReader, offset: int, count: int) -> pa.Table:
    """Rows ``[offset, offset+count)`` of a spool written in batches of ``count`` rows."""
    batches = []
    position = 0
    for index in range(reader.num_record_batches):
        batch = reader.get_batch(index)
        end = position + batch.num_rows
        if end > offset and position < offset + count:
            lo = max(0, offset - position)
            hi = min(batch.num_rows, offset + count - position)
            batches.append(batch.slice(lo, hi - lo))
        if end >= offset + count:
            break
        position = end
    # Batches are memory-mapped; copy out before the map closes.
    return pa.Table.from_batches(batches, schema=reader.schema).combine_chunks()


def _floor_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def _parse_replication_date(text: str | None, name: str) -> datetime:
    if not text:
        raise ApiError(400, "MALFORMED_QUERY", f"Missing required parameter: {name}")
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "+"))
    except ValueError:
        raise ApiError(
            400, "INVALID_REPLICATION_DATE", f"invalid {name} date: expected ISO 8601"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    # getUpdated/getDeleted ignore seconds' fractions.
    return value.replace(microsecond=0)

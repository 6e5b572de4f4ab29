"""Alerting sensors: failed runs, failed checks, stale assets and the API budget, to Slack.

One Slack message per incident, not per tick. Each sensor keeps what it already reported in
its cursor (run failures: Dagster's run-status cursor), so a restart of the daemon neither
repeats nor loses an alert:

- a failed run: one message per run;
- a failed check: one message when a check's latest evaluation turns from passing (or
  never run) to failing; none while it keeps failing; a passing evaluation closes it;
- a stale asset: one message when an asset's freshness state becomes FAIL; none again until
  it has been fresh again;
- the API budget: one message when a daily limit passes the threshold of the platform's
  share or of the org's max; none again until usage falls below it (rolling 24 h).

Messages carry names, counts, ages and UI links, never field values (DESIGN §6). What each
alert means and what to do: docs/operations.md.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import dagster as dg

from resources.slack import Alert, SlackAlerter, SlackDeliveryError

log = logging.getLogger(__name__)

SLACK_RESOURCE_KEY = "slack"
RUN_FAILURE_SENSOR = "slack_on_run_failure"
CHECK_FAILURE_SENSOR = "slack_on_check_failure"
STALE_ASSET_SENSOR = "slack_on_stale_asset"
API_BUDGET_SENSOR = "slack_on_api_budget"

# Intervals: a run failure and a failed check matter within a minute; freshness windows are
# >= 10 min, so a 60 s staleness check adds < 10% to the detection time; /limits costs one
# API request per tick, so 5 min = 288 requests/day (< 2% of a 15,000/day org).
RUN_FAILURE_INTERVAL_S = 30
CHECK_FAILURE_INTERVAL_S = 60
STALE_INTERVAL_S = 60
API_BUDGET_INTERVAL_S = 300
# Alert before the governor's hard stop: it refuses all work when less than 10% of an org
# limit is left (resources/salesforce/budget.py floor_pct).
API_BUDGET_ALERT_PCT = 80.0
# The org limits the governor manages (resources/salesforce/budget.py LIMIT_NAMES).
BUDGET_LIMIT_NAMES = ("DailyApiRequests", "DailyBulkV2QueryJobs", "DailyDeliveredPlatformEvents")
# The run metadata the raw assets record from the governor, per limit (sfdc_assets/assets.py).
USAGE_METADATA = {"DailyApiRequests": "api_requests", "DailyBulkV2QueryJobs": "bulk_jobs_created"}
RAW_PREFIX = ["salesforce", "raw"]
_DAY_S = 86_400

LimitsReader = Callable[[], Mapping[str, Any]]


def _load_cursor(cursor: str | None) -> dict[str, Any]:
    try:
        value = json.loads(cursor) if cursor else {}
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def _send_all(
    context: dg.SensorEvaluationContext,
    slack: SlackAlerter,
    pending: list[tuple[Alert, Callable[[], None]]],
) -> int:
    """Send alerts in order; mark each as reported (its callback) only once Slack took it.

    Stops at the first delivery failure so the rest are retried on the next tick, with the
    cursor recording exactly what was delivered (no duplicates, no losses).
    """
    sent = 0
    for alert, mark_reported in pending:
        try:
            slack.send(alert)
        except SlackDeliveryError as exc:
            context.log.warning(f"Slack alert not delivered, retrying next tick: {exc}")
            break
        mark_reported()
        sent += 1
    return sent


def _age(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _root_error_class(error: Any) -> str:
    """The user's exception class: Dagster wraps it in DagsterExecutionStepExecutionError."""
    if error is None:
        return "unknown error"
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.cls_name


def _run_failure_alert(context: dg.RunFailureSensorContext, slack: SlackAlerter) -> Alert:
    run = context.dagster_run
    tags = run.tags or {}
    what = ", ".join(k.to_user_string() for k in sorted(run.asset_selection or ())) or run.job_name
    details = [f"Run `{run.run_id}` of `{run.job_name}`"]
    if "dagster/partition" in tags:
        details.append(f"Partition: {tags['dagster/partition']}")
    elif "dagster/asset_partition_range_start" in tags:
        details.append(
            f"Partitions: {tags['dagster/asset_partition_range_start']} .. "
            f"{tags.get('dagster/asset_partition_range_end', '?')}"
        )
    if "dagster/backfill" in tags:
        details.append(f"Backfill: {tags['dagster/backfill']}")
    if "dagster/retry_number" in tags:
        details.append(f"Retry number: {tags['dagster/retry_number']}")
    # Error class names only: exception messages may quote record values.
    steps = [
        f"`{e.step_key}` ({_root_error_class(e.step_failure_data.error)})"
        for e in context.get_step_failure_events()
    ]
    if steps:
        details.append("Failed steps: " + ", ".join(steps))
    return Alert(
        kind="run_failure",
        title=f"Run failed: {what}",
        details=details,
        link=slack.run_url(run.run_id),
        link_text="Open the run",
    )


def run_failure_alert_sensor() -> dg.SensorDefinition:
    """One Slack message per failed run in this code location."""

    @dg.run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        minimum_interval_seconds=RUN_FAILURE_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts one Slack message per failed run (docs/operations.md).",
    )
    def slack_on_run_failure(context: dg.RunFailureSensorContext, slack: SlackAlerter) -> None:
        # Raising on a delivery failure leaves the run unreported; Dagster retries the tick.
        slack.send(_run_failure_alert(context, slack))

    return slack_on_run_failure


def _check_failure_alert(record: Any, slack: SlackAlerter) -> Alert:
    key: dg.AssetCheckKey = record.key
    evaluation = record.evaluation
    severity = evaluation.severity.value if evaluation is not None else "ERROR"
    details = [f"Asset: `{key.asset_key.to_user_string()}`", f"Severity: {severity}"]
    if record.partition:
        details.append(f"Partition: {record.partition}")
    if evaluation is not None:
        # Numbers only (counts, rates): text metadata can hold failing rows' values.
        for label, value in sorted(evaluation.metadata.items()):
            number = getattr(value, "value", value)
            if isinstance(number, int | float) and not isinstance(number, bool):
                details.append(f"{label}: {number}")
    details.append(f"Run: `{record.run_id}`")
    return Alert(
        kind="check_failure",
        title=f"Check failed: {key.asset_key.to_user_string()} / {key.name}",
        details=details,
        link=slack.asset_url(key.asset_key, view="checks"),
        link_text="Open the asset's checks",
    )


def check_failure_alert_sensor() -> dg.SensorDefinition:
    """One Slack message per failing-check incident (see the module docstring)."""

    @dg.sensor(
        name=CHECK_FAILURE_SENSOR,
        minimum_interval_seconds=CHECK_FAILURE_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts one Slack message when an asset check starts failing.",
    )
    def slack_on_check_failure(
        context: dg.SensorEvaluationContext, slack: SlackAlerter
    ) -> dg.SkipReason:
        cursor = _load_cursor(context.cursor)
        # check key -> id of the evaluation that opened the incident.
        failing: dict[str, int] = cursor.get("failing", {})
        # The latest evaluation per check (one indexed lookup each): the event log's
        # run-sharded check events cannot be paged with a plain storage-id cursor on SQLite.
        pending: list[tuple[Alert, Callable[[], None]]] = []
        check_keys = _repository(context).asset_graph.asset_check_keys
        for check_key in sorted(check_keys, key=str):
            record = context.instance.get_latest_asset_check_evaluation_record(check_key)
            if record is None:
                continue
            name = check_key.to_user_string()
            status = record.status.value
            if status == "SUCCEEDED":
                failing.pop(name, None)
            elif status == "FAILED" and name not in failing:
                pending.append(
                    (
                        _check_failure_alert(record, slack),
                        partial(failing.__setitem__, name, record.id),
                    )
                )
        sent = _send_all(context, slack, pending)
        context.update_cursor(json.dumps({"failing": failing}, sort_keys=True))
        return dg.SkipReason(f"{sent} check failure alert(s) sent; {len(failing)} failing")

    return slack_on_check_failure


@dataclass(frozen=True)
class Freshness:
    """The freshness of one asset as the sensor sees it."""

    state: str  # PASS, WARN, FAIL, UNKNOWN (FreshnessState values)
    age_s: float | None  # seconds since the last materialization, if any
    window_s: float | None  # the policy's fail window, if it is a time window


def freshness_states(
    instance: dg.DagsterInstance,
    policies: Mapping[dg.AssetKey, Any],
    now: float,
) -> dict[dg.AssetKey, Freshness]:
    """The freshness state per asset with a policy.

    The FreshnessDaemon's state record wins where it exists (what the UI shows). Where it
    does not (daemon not running, freshness disabled, or not evaluated yet), the state is
    computed with the daemon's rule for time windows: FAIL when the last materialization is
    at least ``fail_window`` old, WARN past ``warn_window``, UNKNOWN when never materialized.
    """
    keys = list(policies)
    try:
        records = instance.get_freshness_state_records(keys)
    except NotImplementedError:
        records = {}
    out: dict[dg.AssetKey, Freshness] = {}
    for key in keys:
        policy = policies[key]
        fail = getattr(policy, "fail_window", None)
        warn = getattr(policy, "warn_window", None)
        fail_s = fail.to_timedelta().total_seconds() if fail is not None else None
        warn_s = warn.to_timedelta().total_seconds() if warn is not None else None
        event = instance.get_latest_materialization_event(key)
        age = now - event.timestamp if event is not None else None
        record = records.get(key)
        if record is not None:
            state = record.freshness_state.value
        elif fail_s is None:
            state = "UNKNOWN"  # cron policies: only the daemon evaluates them
        elif age is None:
            state = "UNKNOWN"
        elif age >= fail_s:
            state = "FAIL"
        elif warn_s and age >= warn_s:
            state = "WARN"
        else:
            state = "PASS"
        out[key] = Freshness(state, age, fail_s)
    return out


def _repository(context: dg.SensorEvaluationContext) -> dg.RepositoryDefinition:
    """The code location's definitions, which these sensors read their assets and checks from."""
    # The daemon always passes them; a hand-built context (a test) may not.
    if context.repository_def is None:
        raise dg.DagsterInvariantViolationError(
            "this sensor reads the asset graph: build its context with definitions"
        )
    return context.repository_def


def _policies(repository_def: dg.RepositoryDefinition) -> dict[dg.AssetKey, Any]:
    policies: dict[dg.AssetKey, Any] = {}
    for key, assets_def in repository_def.assets_defs_by_key.items():
        spec = assets_def.specs_by_key.get(key)
        if spec is not None and spec.freshness_policy is not None:
            policies[key] = spec.freshness_policy
    return policies


def _stale_alert(key: dg.AssetKey, fresh: Freshness, slack: SlackAlerter) -> Alert:
    details = []
    if fresh.age_s is not None:
        details.append(f"Last materialized {_age(fresh.age_s)} ago")
    if fresh.window_s is not None:
        details.append(f"Freshness window: {_age(fresh.window_s)}")
    return Alert(
        kind="stale",
        title=f"Stale: {key.to_user_string()}",
        details=details,
        link=slack.asset_url(key),
        link_text="Open the asset",
    )


def stale_asset_alert_sensor(clock: Callable[[], float] = time.time) -> dg.SensorDefinition:
    """One Slack message when an asset goes stale; none again until it recovers."""

    @dg.sensor(
        name=STALE_ASSET_SENSOR,
        minimum_interval_seconds=STALE_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts one Slack message when an asset's freshness policy fails.",
    )
    def slack_on_stale_asset(
        context: dg.SensorEvaluationContext, slack: SlackAlerter
    ) -> dg.SkipReason:
        cursor = _load_cursor(context.cursor)
        stale: set[str] = set(cursor.get("stale", []))
        policies = _policies(_repository(context))
        pending: list[tuple[Alert, Callable[[], None]]] = []
        for key, fresh in freshness_states(context.instance, policies, clock()).items():
            name = key.to_user_string()
            if fresh.state == "PASS":
                stale.discard(name)
            elif fresh.state == "FAIL" and name not in stale:
                pending.append((_stale_alert(key, fresh, slack), partial(stale.add, name)))
        sent = _send_all(context, slack, pending)
        context.update_cursor(json.dumps({"stale": sorted(stale)}))
        return dg.SkipReason(f"{sent} stale alert(s) sent; {len(stale)} asset(s) stale")

    return slack_on_stale_asset


def org_limits_from_env() -> Mapping[str, Any]:
    """The org's ``/limits`` through the platform's Salesforce client (``SFDC_*`` settings)."""
    from resources.salesforce.resource import SalesforceClient
    from resources.salesforce.settings import SalesforceSettings

    client = SalesforceClient(SalesforceSettings.from_env(dict(os.environ)))
    try:
        return client.rest.limits()
    finally:
        client.close()


def budget_usage(limits: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """``{limit name: (org used, org max)}`` for the limits the governor manages."""
    usage: dict[str, tuple[int, int]] = {}
    for name in BUDGET_LIMIT_NAMES:
        entry = limits.get(name)
        if isinstance(entry, Mapping) and int(entry.get("Max") or 0) > 0:
            maximum = int(entry["Max"])
            remaining = int(entry.get("Remaining", maximum))
            usage[name] = (max(maximum - remaining, 0), maximum)
    return usage


def _metadata_number(metadata: Mapping[str, Any], key: str) -> float | None:
    value = metadata.get(key)
    number = getattr(value, "value", value)
    return number if isinstance(number, int | float) and not isinstance(number, bool) else None


def fold_platform_usage(
    instance: dg.DagsterInstance,
    raw_keys: list[dg.AssetKey],
    state: dict[str, Any],
    now: float,
) -> dict[str, int]:
    """Add the usage the raw assets recorded since the last tick; return the 24 h totals.

    Every raw materialization carries its run's governor counters (``api_requests``,
    ``bulk_jobs_created``). ``state`` (the sensor cursor) keeps per-asset storage-id
    cursors, hourly buckets per limit, and the run/asset pairs of the last tick: a
    partition-range run records one materialization per partition with the same counters,
    so each run counts once per asset.
    """
    after: dict[str, int] = state.setdefault("after", {})
    hours: dict[str, dict[str, float]] = state.setdefault("hours", {})
    previous = set(state.get("last_runs", []))
    seen: set[str] = set()
    for key in raw_keys:
        name = key.to_user_string()
        if name in after:
            records_filter = dg.AssetRecordsFilter(asset_key=key, after_storage_id=after[name])
        else:
            records_filter = dg.AssetRecordsFilter(asset_key=key, after_timestamp=now - _DAY_S)
        result = instance.fetch_materializations(records_filter, limit=10_000, ascending=True)
        for record in result.records:
            after[name] = record.storage_id
            run_asset = f"{record.run_id}|{name}"
            materialization = record.asset_materialization
            if run_asset in previous or run_asset in seen or materialization is None:
                continue
            seen.add(run_asset)
            hour = str(int(record.timestamp // 3600))
            for limit, meta_key in USAGE_METADATA.items():
                n = _metadata_number(materialization.metadata, meta_key)
                if n:
                    bucket = hours.setdefault(limit, {})
                    bucket[hour] = bucket.get(hour, 0) + n
    horizon = int(now // 3600) - 24
    for bucket in hours.values():
        for hour in [h for h in bucket if int(h) <= horizon]:
            del bucket[hour]
    state["last_runs"] = sorted(seen)
    return {limit: int(sum(bucket.values())) for limit, bucket in hours.items()}


def _budget_share_pct() -> float:
    # The same variable and default as resources/salesforce/settings.py api_budget_pct.
    try:
        return float(os.environ.get("SFDC_API_BUDGET_PCT") or 25.0)
    except ValueError:
        return 25.0


def api_budget_alert_sensor(
    limits_reader: LimitsReader = org_limits_from_env,
    threshold_pct: float = API_BUDGET_ALERT_PCT,
    share_pct: Callable[[], float] = _budget_share_pct,
    clock: Callable[[], float] = time.time,
) -> dg.SensorDefinition:
    """One Slack message per limit when usage passes ``threshold_pct`` of its cap.

    Two caps per daily limit (API requests, Bulk query jobs, delivered CDC events):

    - this platform's share, ``SFDC_API_BUDGET_PCT`` of the org's max: usage is what the raw
      assets recorded as run metadata over the last 24 h (the governor refuses work past
      the share, so this warns before runs start failing with ``BudgetExhaustedError``);
    - the org as a whole (``/limits``), which every integration shares.

    Without ``/limits`` (org unreachable) the org's max is taken from the governor's
    conservative defaults and only the platform's share is evaluated.
    """

    @dg.sensor(
        name=API_BUDGET_SENSOR,
        minimum_interval_seconds=API_BUDGET_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Posts one Slack message when the API budget passes {threshold_pct:.0f}% "
        "of the platform's share or of the org's daily limit.",
    )
    def slack_on_api_budget(
        context: dg.SensorEvaluationContext, slack: SlackAlerter
    ) -> dg.SkipReason:
        from resources.salesforce.budget import DEFAULT_MAX, LIMIT_NAMES

        state = _load_cursor(context.cursor)
        alerted: set[str] = set(state.pop("alerted", []))
        now = clock()
        raw_keys = sorted(
            (k for k in _repository(context).assets_defs_by_key if k.path[:2] == RAW_PREFIX),
            key=str,
        )
        platform = fold_platform_usage(context.instance, raw_keys, state, now)
        note = ""
        try:
            org = budget_usage(limits_reader())
        except Exception as exc:  # the org being unreachable is not this sensor's alert
            org = {}
            note = f"; org limits unavailable: {type(exc).__name__}"
        share = share_pct()
        pending: list[tuple[Alert, Callable[[], None]]] = []

        def consider(scope: str, name: str, used: int, cap: int, title: str, why: str) -> None:
            tag = f"{scope}:{name}"
            ratio = 100.0 * used / cap if cap else 0.0
            if ratio < threshold_pct:
                alerted.discard(tag)
            elif tag not in alerted:
                alert = Alert(
                    kind="api_budget",
                    title=f"{title} at {ratio:.0f}%",
                    details=[f"Used {used:,} of {cap:,} in the rolling 24 h", why],
                    link=slack.runs_url(),
                    link_text="Open runs",
                )
                pending.append((alert, partial(alerted.add, tag)))

        for kind, name in LIMIT_NAMES.items():
            org_used, org_max = org.get(name, (None, DEFAULT_MAX[kind]))
            consider(
                "platform",
                name,
                platform.get(name, 0),
                int(org_max * share / 100),
                f"Salesforce API budget: sfdc-sync's share of {name}",
                f"Share: SFDC_API_BUDGET_PCT = {share:g}% of the org's {org_max:,}; the "
                "governor refuses work past it",
            )
            if org_used is not None:
                consider(
                    "org",
                    name,
                    org_used,
                    org_max,
                    f"Salesforce API budget: the org's {name}",
                    "All integrations together; the governor stops sfdc-sync below 10% left",
                )
        sent = _send_all(context, slack, pending)
        context.update_cursor(json.dumps({**state, "alerted": sorted(alerted)}, sort_keys=True))
        return dg.SkipReason(f"{sent} API budget alert(s) sent{note}")

    return slack_on_api_budget


def alert_sensors(
    *,
    clock: Callable[[], float] = time.time,
    limits_reader: LimitsReader = org_limits_from_env,
    budget_threshold_pct: float = API_BUDGET_ALERT_PCT,
) -> list[dg.SensorDefinition]:
    """Every alerting sensor; they need a ``SlackAlerter`` bound as the ``slack`` resource."""
    return [
        run_failure_alert_sensor(),
        check_failure_alert_sensor(),
        stale_asset_alert_sensor(clock),
        api_budget_alert_sensor(limits_reader, budget_threshold_pct, clock=clock),
    ]

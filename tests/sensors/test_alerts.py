"""Slack alerts (sensors/alerts.py, resources/slack.py) against a real local HTTP capture server.

The definitions are a small stand-in with the platform's key names; the sensors only read
the instance (runs, check evaluations, materializations) and the repository's policies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from resources.slack import Alert, SlackAlerter
from sensors.alerts import (
    API_BUDGET_SENSOR,
    CHECK_FAILURE_SENSOR,
    RUN_FAILURE_SENSOR,
    STALE_ASSET_SENSOR,
    alert_sensors,
)
from tests.sensors.slack_capture import SlackCapture, slack_capture_server

OPP = dg.AssetKey(["salesforce", "current", "opportunity"])
RAW_OPP = dg.AssetKey(["salesforce", "raw", "opportunity"])
ACCOUNT = dg.AssetKey(["salesforce", "current", "account"])
UI = "http://dagster.example:3000"
# A field value that must never reach Slack, even when a check records it as metadata.
PII = "jane.doe@example.com"


class Knobs(dg.ConfigurableResource):
    """Test switches: what the next run does."""

    state_file: str

    def get(self) -> dict:
        path = Path(self.state_file)
        return json.loads(path.read_text()) if path.exists() else {}


def _definitions(knobs_file: Path) -> dg.Definitions:
    @dg.asset(
        key=OPP,
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=10)),
        check_specs=[dg.AssetCheckSpec("ids_valid", asset=OPP)],
    )
    def opportunity(knobs: Knobs) -> Iterator:
        state = knobs.get()
        if state.get("fail_run"):
            raise ValueError(f"bad row {PII}")  # a value in the error text: must not leak
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(
            check_name="ids_valid",
            passed=not state.get("fail_check"),
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"failed_rows": 3, "sample": PII},
        )

    @dg.asset(key=ACCOUNT)
    def account() -> None:
        return None

    @dg.asset(key=RAW_OPP)
    def raw_opportunity(knobs: Knobs) -> dg.MaterializeResult:
        # What the extraction layer records from its governor on every raw run.
        usage = knobs.get().get("api_requests", 0)
        return dg.MaterializeResult(metadata={"api_requests": usage, "bulk_jobs_created": 1})

    return dg.Definitions(
        assets=[opportunity, account, raw_opportunity],
        sensors=alert_sensors(
            clock=lambda: clock_box[0], limits_reader=lambda: limits_box[0] or {}
        ),
        resources={"knobs": Knobs(state_file=str(knobs_file))},
    )


# Mutable boxes the sensors read through their injected callables.
clock_box: list[float] = [0.0]
limits_box: list[dict | None] = [None]


@pytest.fixture
def capture() -> Iterator[SlackCapture]:
    with slack_capture_server() as cap:
        yield cap


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


class Harness:
    """Runs the stand-in assets and ticks sensors the way the daemon does (cursor carried)."""

    def __init__(self, tmp_path: Path, instance: dg.DagsterInstance, slack: SlackAlerter):
        self.knobs = tmp_path / "knobs.json"
        self.instance = instance
        self.slack = slack
        self.defs = _definitions(self.knobs)
        self.cursors: dict[str, str | None] = {}

    def run(self, asset: dg.AssetKey = OPP, **knobs: object) -> dg.ExecuteInProcessResult:
        self.knobs.write_text(json.dumps(knobs))
        return self.defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=self.instance, asset_selection=[asset], raise_on_error=False
        )

    def tick(self, name: str) -> None:
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            definitions=self.defs,
            resources={"slack": self.slack},
        )
        data = sensor.evaluate_tick(context)
        self.cursors[name] = data.cursor


@pytest.fixture
def harness(tmp_path: Path, instance: dg.DagsterInstance, capture: SlackCapture) -> Harness:
    clock_box[0] = 0.0
    limits_box[0] = None
    return Harness(tmp_path, instance, SlackAlerter(webhook_url=capture.webhook_url, ui_url=UI))


def test_webhook_alert_is_posted_as_json_text_and_blocks_with_the_ui_link(
    capture: SlackCapture,
) -> None:
    slack = SlackAlerter(webhook_url=capture.webhook_url, ui_url=UI)
    sent = slack.send(Alert(kind="stale", title="Stale: x", link=slack.asset_url(OPP)))

    assert sent is True
    [post] = capture.posts
    assert post.path == "/services/T000/B000/XXXX"
    assert post.headers["Content-Type"].startswith("application/json")
    assert "Stale: x" in post.body["text"]
    button = post.body["blocks"][-1]["elements"][0]
    assert button["url"] == f"{UI}/assets/salesforce/current/opportunity"


def test_bot_token_alert_is_posted_with_chat_post_message_to_the_channel(
    capture: SlackCapture,
) -> None:
    slack = SlackAlerter(
        bot_token="xoxb-test-token", channel="#data-alerts", api_url=capture.api_url, ui_url=UI
    )
    slack.send(Alert(kind="run_failure", title="Run failed: x", link=slack.run_url("abc")))

    [post] = capture.posts
    assert post.path == "/api/chat.postMessage"
    assert post.headers["Authorization"] == "Bearer xoxb-test-token"
    assert post.body["channel"] == "#data-alerts"
    assert f"<{UI}/runs/abc|" in post.body["text"]


def test_unconfigured_slack_sends_nothing_and_reports_it(capture: SlackCapture) -> None:
    assert SlackAlerter().send(Alert(kind="stale", title="Stale: x")) is False
    assert capture.posts == []


def test_a_failed_run_produces_exactly_one_message_linking_to_the_run(
    harness: Harness, capture: SlackCapture
) -> None:
    harness.tick(RUN_FAILURE_SENSOR)  # the first tick starts watching from now
    result = harness.run(fail_run=True)
    assert not result.success

    harness.tick(RUN_FAILURE_SENSOR)
    harness.tick(RUN_FAILURE_SENSOR)

    [text] = capture.texts()
    assert "Run failed: salesforce/current/opportunity" in text
    assert f"{UI}/runs/{result.run_id}" in text
    assert "ValueError" in text
    assert PII not in json.dumps(capture.posts[0].body)


def test_a_failed_check_produces_exactly_one_message_per_incident(
    harness: Harness, capture: SlackCapture
) -> None:
    harness.run(fail_check=True)
    harness.tick(CHECK_FAILURE_SENSOR)
    harness.run(fail_check=True)  # still failing: the same incident
    harness.tick(CHECK_FAILURE_SENSOR)
    harness.tick(CHECK_FAILURE_SENSOR)
    assert len(capture.posts) == 1
    text = capture.texts()[0]
    assert "Check failed: salesforce/current/opportunity / ids_valid" in text
    assert "Severity: ERROR" in text
    assert "failed_rows: 3" in text
    assert PII not in json.dumps(capture.posts[0].body)
    assert f"{UI}/assets/salesforce/current/opportunity?view=checks" in text

    harness.run()  # passes: the incident is over
    harness.tick(CHECK_FAILURE_SENSOR)
    harness.run(fail_check=True)  # a new incident
    harness.tick(CHECK_FAILURE_SENSOR)
    assert len(capture.posts) == 2


def test_a_stale_asset_produces_exactly_one_message_until_it_recovers(
    harness: Harness, capture: SlackCapture
) -> None:
    harness.run()
    materialized_at = harness.instance.get_latest_materialization_event(OPP).timestamp
    clock_box[0] = materialized_at + 9 * 60  # inside the 10-minute window
    harness.tick(STALE_ASSET_SENSOR)
    assert capture.posts == []

    clock_box[0] = materialized_at + 11 * 60
    for _ in range(3):
        harness.tick(STALE_ASSET_SENSOR)
    [text] = capture.texts()
    assert "Stale: salesforce/current/opportunity" in text
    assert "Last materialized 11 min ago" in text
    assert "Freshness window: 10 min" in text
    assert "account" not in text  # no policy, never alerts

    harness.run()  # fresh again, then stale again: a second incident
    clock_box[0] = harness.instance.get_latest_materialization_event(OPP).timestamp + 60
    harness.tick(STALE_ASSET_SENSOR)
    clock_box[0] += 10 * 60
    harness.tick(STALE_ASSET_SENSOR)
    assert len(capture.posts) == 2


def test_a_slack_outage_delays_the_alert_without_losing_or_repeating_it(
    harness: Harness, capture: SlackCapture
) -> None:
    harness.run(fail_check=True)
    capture.fail_next = 1
    harness.tick(CHECK_FAILURE_SENSOR)
    assert capture.posts == []

    harness.tick(CHECK_FAILURE_SENSOR)
    harness.tick(CHECK_FAILURE_SENSOR)
    assert len(capture.posts) == 1


def test_an_org_limit_over_the_threshold_alerts_once_until_usage_falls(
    harness: Harness, capture: SlackCapture
) -> None:
    def limits(used: int) -> dict:
        return {
            "DailyApiRequests": {"Max": 15000, "Remaining": 15000 - used},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
        }

    limits_box[0] = limits(11_000)  # 73%
    harness.tick(API_BUDGET_SENSOR)
    assert capture.posts == []

    limits_box[0] = limits(12_500)  # 83%
    harness.tick(API_BUDGET_SENSOR)
    harness.tick(API_BUDGET_SENSOR)
    [text] = capture.texts()
    assert "DailyApiRequests at 83%" in text
    assert "Used 12,500 of 15,000" in text

    limits_box[0] = limits(1_000)  # the rolling day moved on
    harness.tick(API_BUDGET_SENSOR)
    limits_box[0] = limits(13_000)
    harness.tick(API_BUDGET_SENSOR)
    assert len(capture.posts) == 2


def test_the_platform_share_alerts_once_from_the_usage_raw_runs_record(
    harness: Harness, capture: SlackCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SFDC_API_BUDGET_PCT", "20")  # share = 3,000 of 15,000; alert at 2,400
    limits_box[0] = {"DailyApiRequests": {"Max": 15000, "Remaining": 14000}}
    clock_box[0] = time.time()
    harness.run(RAW_OPP, api_requests=1_500)
    harness.tick(API_BUDGET_SENSOR)
    assert capture.posts == []

    harness.run(RAW_OPP, api_requests=1_000)
    harness.tick(API_BUDGET_SENSOR)
    harness.tick(API_BUDGET_SENSOR)  # nothing new: the same incident, counted once
    [text] = capture.texts()
    assert "sfdc-sync's share of DailyApiRequests at 83%" in text
    assert "Used 2,500 of 3,000" in text

    clock_box[0] += 25 * 3600  # both runs left the rolling day
    harness.tick(API_BUDGET_SENSOR)
    harness.run(RAW_OPP, api_requests=2_600)
    clock_box[0] = time.time()
    harness.tick(API_BUDGET_SENSOR)
    assert len(capture.posts) == 2


def test_an_unreachable_org_skips_the_budget_tick_without_alerting(
    harness: Harness, capture: SlackCapture
) -> None:
    def unreachable() -> dict:
        raise ConnectionError("org down")

    sensor = alert_sensors(limits_reader=unreachable)[3]
    context = dg.build_sensor_context(
        instance=harness.instance, definitions=harness.defs, resources={"slack": harness.slack}
    )
    data = sensor.evaluate_tick(context)

    assert "org limits unavailable: ConnectionError" in (data.skip_message or "")
    assert capture.posts == []


def test_alert_sensors_load_in_definitions_with_the_slack_resource_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resources.slack import slack_alerter_from_env

    monkeypatch.setenv("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("DAGSTER_UI_URL", "https://dagster.internal")
    defs = dg.Definitions(sensors=alert_sensors(), resources={"slack": slack_alerter_from_env()})

    dg.Definitions.validate_loadable(defs)
    names = {s.name for s in defs.sensors}
    assert names == {
        RUN_FAILURE_SENSOR,
        CHECK_FAILURE_SENSOR,
        STALE_ASSET_SENSOR,
        API_BUDGET_SENSOR,
    }
    slack = slack_alerter_from_env()
    assert slack.run_url("r1") == "https://dagster.internal/runs/r1"


@pytest.mark.parametrize("name", [CHECK_FAILURE_SENSOR, STALE_ASSET_SENSOR, API_BUDGET_SENSOR])
def test_sensors_reading_the_asset_graph_say_so_when_the_context_has_no_definitions(
    harness: Harness, name: str
) -> None:
    sensor = harness.defs.resolve_sensor_def(name)
    context = dg.build_sensor_context(instance=harness.instance, resources={"slack": harness.slack})
    with pytest.raises(dg.DagsterInvariantViolationError, match="build its context with"):
        sensor.evaluate_tick(context)

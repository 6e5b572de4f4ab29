"""A CDC sensor ticks every `interval_seconds`, not every other daemon loop.

Dagster's sensor daemon looks every 5 s and ticks when `minimum_interval_seconds` have
passed since the previous tick *started*, a few milliseconds into its loop: asking for
exactly 5 s missed by those milliseconds and ticked every 10.0 s at production shape.
"""

from __future__ import annotations

import pytest
from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME

from sensors.cdc import build_cdc_sensor, tick_interval
from sfdc_assets.objects import load_config


def test_the_shipped_revenue_sensor_asks_for_less_than_one_daemon_loop() -> None:
    sync = load_config()
    group = sync.channel_groups["revenue"]
    sensor = build_cdc_sensor(group, sync)
    assert group.interval_seconds == MIN_INTERVAL_LOOP_TIME
    # Due at the next look even when that look comes a little under 5 s after the tick.
    assert sensor.minimum_interval_seconds is not None
    assert sensor.minimum_interval_seconds < MIN_INTERVAL_LOOP_TIME


@pytest.mark.parametrize(("configured", "asked"), [(1, 1), (2, 1), (5, 4), (60, 59)])
def test_the_interval_asked_of_dagster_is_one_second_under_the_configured_one(
    configured: int, asked: int
) -> None:
    assert tick_interval(configured) == asked

"""The local instance's batched SQLite event log (resources/event_log.py) against Dagster's own.

A single-run range materialization must leave the same record on both: every partition's
materialization, its metadata and tags, the asset's latest event; and the batched one must
write each batch in one transaction per shard instead of one per event.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from resources.event_log import BatchedSqliteEventLogStorage
from scripts.demo import instance_yaml_text

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-03-02")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def ranged(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """One result for the whole range: Dagster reports one materialization per partition."""
    start, end = context.partition_key_range
    return dg.MaterializeResult(metadata={"range": f"{start}..{end}"})


@pytest.fixture
def batch_size(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "25")
    yield


def _local(home: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(instance_yaml_text(home))
    return dg.DagsterInstance.from_config(str(home))


def _materialize(instance: dg.DagsterInstance) -> str:
    keys = DAYS.get_partition_keys()
    result = dg.materialize(
        [ranged],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
    )
    return result.run_id


def _record(instance: dg.DagsterInstance) -> dict:
    key = dg.AssetKey("ranged")
    records = instance.fetch_materializations(key, limit=1000).records
    latest = instance.get_latest_materialization_event(key)
    assert latest is not None and latest.asset_materialization is not None
    return {
        "partitions": sorted(instance.get_materialized_partitions(key)),
        "per_partition": sorted(
            (
                r.partition_key,
                r.asset_materialization.metadata["range"].value,  # type: ignore[union-attr]
            )
            for r in records
        ),
        "latest": latest.asset_materialization.partition,
    }


def test_the_local_instance_uses_the_batched_event_log(tmp_path: Path) -> None:
    with _local(tmp_path / "home") as instance:
        assert isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)


def test_a_range_run_leaves_the_same_record_as_dagsters_sqlite(
    tmp_path: Path, batch_size: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_by_one: list[int] = []
    original = BatchedSqliteEventLogStorage.store_event

    def counting(self: BatchedSqliteEventLogStorage, event: dg.EventLogEntry) -> None:
        one_by_one.append(1)
        original(self, event)

    (tmp_path / "stock").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "stock")) as stock:
        stock_logged = len(stock.all_logs(_materialize(stock)))
        expected = _record(stock)
    monkeypatch.setattr(BatchedSqliteEventLogStorage, "store_event", counting)
    with _local(tmp_path / "home") as local:
        run_id = _materialize(local)
        got = _record(local)
        logged = len(local.all_logs(run_id))
    assert len(expected["partitions"]) == len(DAYS.get_partition_keys()) == 60
    assert got == expected
    # Every event is stored, but the 60 materializations went in 3 batches of 25, 25, 10.
    assert logged == stock_logged
    assert len(one_by_one) == logged - 60


def test_mixed_batches_fall_back_to_one_event_at_a_time(tmp_path: Path, batch_size: None) -> None:
    # Partitioned runs of two assets are not one asset's batch: stored event by event.
    with _local(tmp_path / "home") as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, BatchedSqliteEventLogStorage)
        _materialize(instance)
        run_id = instance.get_runs()[0].run_id
        materializations = [
            e
            for e in instance.all_logs(run_id)
            if e.dagster_event is not None and e.dagster_event.is_step_materialization
        ]
        other = dg.AssetKey("other")
        mixed = [materializations[0], _with_key(materializations[1], other)]
        storage.store_event_batch(mixed)
        assert instance.get_latest_materialization_event(other) is not None
        assert len(instance.fetch_materializations(dg.AssetKey("ranged"), limit=1000).records) == 61


def _with_key(entry: dg.EventLogEntry, key: dg.AssetKey) -> dg.EventLogEntry:
    event = entry.get_dagster_event()
    data = event.step_materialization_data
    materialization = data.materialization._replace(asset_key=key)  # type: ignore[attr-defined]
    new_event = event._replace(event_specific_data=data._replace(materialization=materialization))
    return entry._replace(dagster_event=new_event)


def test_batch_size_is_read_from_the_environment() -> None:
    # The demo's environment sets it: without it Dagster never calls store_event_batch.
    from scripts.demo import local_environment

    env = local_environment(Path("/tmp/x"), Path("/tmp/x/emulator.json"))
    assert int(env["DAGSTER_EVENT_BATCH_SIZE"]) > 1

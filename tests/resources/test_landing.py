"""Landing store: immutable parts, manifest = commit, idempotent batches, checkpoints."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from resources.landing import BatchRef, LandingStore

REF = BatchRef("cdc", "Opportunity", date(2026, 1, 2), "cdc-00000001-00000009")


def frame(n: int = 3) -> pl.DataFrame:
    return pl.DataFrame({"record_id": [f"006{i}" for i in range(n)], "v": list(range(n))})


def test_batch_is_invisible_until_committed(tmp_path: Path) -> None:
    store = LandingStore(str(tmp_path))
    part = store.write_part(REF, 0, frame())
    assert store.manifest(REF) is None and list(store.manifests()) == []
    manifest = store.commit(REF, [part], {"replay_ids": [1, 9]})
    assert [m.batch_id for m in store.manifests("cdc", "Opportunity")] == [REF.batch_id]
    assert store.read(manifest).equals(frame())
    assert (tmp_path / "cdc/Opportunity/2026-01-02/cdc-00000001-00000009").is_dir()


def test_writing_the_same_batch_twice_is_a_no_op(tmp_path: Path) -> None:
    store = LandingStore(str(tmp_path))
    first = store.write_batch(REF, frame(3))
    second = store.write_batch(REF, frame(5))
    assert second == first and store.read(second).height == 3


def test_committed_batches_are_immutable(tmp_path: Path) -> None:
    store = LandingStore(str(tmp_path))
    store.write_batch(REF, frame())
    with pytest.raises(FileExistsError):
        store.write_part(REF, 0, frame(1))


def test_checkpoints_round_trip_and_clear(tmp_path: Path) -> None:
    store = LandingStore(str(tmp_path))
    store.write_checkpoint("bulk/Task/abc", {"job_id": "750x", "locator": "MTAw"})
    assert store.read_checkpoint("bulk/Task/abc") == {"job_id": "750x", "locator": "MTAw"}
    store.clear_checkpoint("bulk/Task/abc")
    assert store.read_checkpoint("bulk/Task/abc") is None


def test_any_fsspec_url_works(tmp_path: Path) -> None:
    store = LandingStore("memory://landing-test")
    manifest = store.write_batch(REF, frame())
    assert store.read(manifest).height == 3


def test_path_components_cannot_escape_the_root() -> None:
    with pytest.raises(ValueError):
        BatchRef("cdc", "../etc", date(2026, 1, 1), "x")

"""Landing store: the one sanctioned rewrite of a committed batch (audited erase)."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from resources.landing import BatchRef, LandingStore

REF = BatchRef("cdc", "Contact", date(2026, 1, 2), "cdc-00000001-00000009")


def frame(n: int = 3) -> pl.DataFrame:
    return pl.DataFrame({"record_id": [f"003{i}" for i in range(n)], "v": list(range(n))})


def test_rewrite_part_replaces_the_file_and_recommits_a_matching_manifest(tmp_path: Path):
    store = LandingStore(str(tmp_path))
    manifest = store.write_batch(REF, frame(3))
    table = store.read_parquet(manifest.parts[0].path)
    updated = store.rewrite_part(manifest, 0, table.slice(1), {"erasure_id": "e1", "rows": 1})
    assert store.manifest(REF) == updated
    part = updated.parts[0]
    data = (tmp_path / part.path).read_bytes()
    assert (part.rows, part.bytes, part.sha256) == (2, len(data), hashlib.sha256(data).hexdigest())
    assert updated.rows == 2 and updated.meta["rewrites"] == [{"erasure_id": "e1", "rows": 1}]
    assert store.read(updated)["record_id"].to_list() == ["0031", "0032"]
    assert updated.created_at_ms == manifest.created_at_ms


def test_a_rewritten_batch_stays_committed_and_immutable_to_writers(tmp_path: Path):
    store = LandingStore(str(tmp_path))
    manifest = store.write_batch(REF, frame(3))
    store.rewrite_part(manifest, 0, store.read_parquet(manifest.parts[0].path).slice(2), {})
    assert store.write_batch(REF, frame(5)).rows == 1  # still the committed batch
    with pytest.raises(FileExistsError):
        store.write_part(REF, 0, frame(1))


def test_files_lists_relative_paths_and_read_parquet_reads_only_asked_columns(tmp_path: Path):
    store = LandingStore(str(tmp_path))
    manifest = store.write_batch(REF, frame(2))
    assert store.files("cdc/Contact/*/*/*.parquet") == [manifest.parts[0].path]
    assert store.files("nothing/*") == []
    assert store.read_parquet(manifest.parts[0].path, columns=["v"]).column_names == ["v"]

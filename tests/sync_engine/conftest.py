"""Fixtures: a fresh DuckDB warehouse with the test object's tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resources.duckdb_warehouse import DuckDBWarehouse
from sync_engine import registry
from sync_engine.spec import ObjectSpec
from tests.sync_engine.histories import SPEC


def fresh_duckdb(path: str = ":memory:", spec: ObjectSpec = SPEC) -> DuckDBWarehouse:
    """A DuckDB warehouse with the test object's tables created."""
    wh = DuckDBWarehouse(path=path)
    registry.sync_schema(wh, spec)
    return wh


@pytest.fixture
def duck() -> Iterator[DuckDBWarehouse]:
    """An in-memory DuckDB warehouse with the Opportunity test tables."""
    wh = fresh_duckdb()
    yield wh
    wh.close()

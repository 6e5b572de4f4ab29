"""Generic emulator fixtures: an OrgStore on tmp_path, empty or seeded at tiny scale."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sfdc_emulator.generator import generate
from sfdc_emulator.store import OrgStore

# A fixed "now" for generated history so seeded data is identical run to run.
ANCHOR = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[OrgStore]:
    """An OrgStore with only the two system users."""
    store = OrgStore(tmp_path / "org")
    yield store
    store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OrgStore]:
    """An OrgStore seeded at tiny scale (seed 1): tens of rows per object, no events."""
    store = OrgStore(tmp_path / "org")
    generate(store, "tiny", seed=1, anchor=ANCHOR)
    yield store
    store.close()

"""Landing store: immutable Parquet batch files plus a manifest per batch.

Layout under the root (a local folder or any fsspec URL, ``s3://…`` in production)::

    <kind>/<object>/<YYYY-MM-DD>/<batch_id>/part-00000.parquet   data, never rewritten
    _manifests/<kind>/<object>/<YYYY-MM-DD>/<batch_id>.json      written last = committed
    _checkpoints/<name>.json                                     resumable work in progress

``kind`` is ``cdc`` (micro-batches) or ``backfill`` (Bulk chunks). A batch exists for
loaders only once its manifest exists, so a crash mid-batch leaves nothing half-visible;
committing the same batch id again is a no-op, so a retried writer cannot duplicate it.
Loaders keep the set of batch ids they applied and replay any batch from its manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import polars as pl

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
KINDS = ("cdc", "backfill")


def _safe(part: str, what: str) -> str:
    # Path components come from object names and ids; keep them from escaping the root.
    if not _SAFE.match(part) or ".." in part:
        raise ValueError(f"unsafe {what} for a landing path: {part!r}")
    return part


@dataclass(frozen=True)
class BatchRef:
    """Where one batch lives: kind, object, partition day, batch id."""

    kind: str
    object: str
    day: date
    batch_id: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        _safe(self.object, "object")
        _safe(self.batch_id, "batch id")

    @property
    def prefix(self) -> str:
        """Folder of the batch's data files, relative to the root."""
        return f"{self.kind}/{self.object}/{self.day.isoformat()}/{self.batch_id}"

    @property
    def manifest_path(self) -> str:
        """The manifest's path, relative to the root."""
        return f"_manifests/{self.kind}/{self.object}/{self.day.isoformat()}/{self.batch_id}.json"


@dataclass(frozen=True)
class PartInfo:
    """One data file of a batch."""

    path: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The commit record of a batch: its files and what produced them."""

    kind: str
    object: str
    day: str
    batch_id: str
    parts: tuple[PartInfo, ...]
    rows: int
    created_at_ms: int
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> BatchRef:
        """The batch this manifest commits."""
        return BatchRef(self.kind, self.object, date.fromisoformat(self.day), self.batch_id)

    def to_json(self) -> str:
        """Serialized form (stable key order)."""
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        d["parts"] = tuple(PartInfo(**p) for p in d["parts"])
        return cls(**d)


class LandingStore:
    """Immutable batch files with manifests on a local folder or an fsspec URL."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **dict(storage_options or {}))
        self._local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        self.fs.makedirs(self.root, exist_ok=True)

    def _abs(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _write_bytes(self, rel: str, data: bytes) -> None:
        path = self._abs(rel)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if self._local:
            # Local rename is atomic: readers never see a torn file.
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            self.fs.mv(tmp, path)
        else:
            # Object stores publish a PUT atomically.
            with self.fs.open(path, "wb") as fh:
                fh.write(data)

    def write_part(self, ref: BatchRef, index: int, frame: pl.DataFrame) -> PartInfo:
        """Write part ``index`` of an uncommitted batch (same index = same file name).

        Rewriting a part of a batch that is not committed yet is allowed: a resumed writer
        re-produces the same page into the same name.
        """
        if self.manifest(ref) is not None:
            raise FileExistsError(f"batch {ref.prefix} is committed and immutable")
        import io

        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd", statistics=True)
        data = buf.getvalue()
        rel = f"{ref.prefix}/part-{index:05d}.parquet"
        self._write_bytes(rel, data)
        return PartInfo(rel, frame.height, len(data), hashlib.sha256(data).hexdigest())

    def commit(
        self, ref: BatchRef, parts: Sequence[PartInfo], meta: Mapping[str, Any] | None = None
    ) -> Manifest:
        """Commit a batch by writing its manifest; a second commit returns the first."""
        existing = self.manifest(ref)
        if existing is not None:
            return existing
        manifest = Manifest(
            kind=ref.kind,
            object=ref.object,
            day=ref.day.isoformat(),
            batch_id=ref.batch_id,
            parts=tuple(parts),
            rows=sum(p.rows for p in parts),
            created_at_ms=int(time.time() * 1000),
            meta=dict(meta or {}),
        )
        self._write_bytes(ref.manifest_path, manifest.to_json().encode())
        return manifest

    def write_batch(
        self, ref: BatchRef, frame: pl.DataFrame, meta: Mapping[str, Any] | None = None
    ) -> Manifest:
        """Write a one-file batch (a CDC micro-batch) and commit it; idempotent by batch id."""
        existing = self.manifest(ref)
        if existing is not None:
            return existing
        return self.commit(ref, [self.write_part(ref, 0, frame)], meta)

    def manifest(self, ref: BatchRef) -> Manifest | None:
        """The batch's manifest, or None while it is not committed."""
        path = self._abs(ref.manifest_path)
        try:
            with self.fs.open(path, "rb") as fh:
                return Manifest.from_json(fh.read().decode())
        except FileNotFoundError:
            return None

    def manifests(self, kind: str | None = None, obj: str | None = None) -> Iterator[Manifest]:
        """Committed batches, optionally of one kind/object, in path order."""
        pattern = "_manifests/" + (kind or "*") + "/" + (obj or "*") + "/*/*.json"
        for path in sorted(self.fs.glob(self._abs(pattern))):
            with self.fs.open(path, "rb") as fh:
                yield Manifest.from_json(fh.read().decode())

    def scan(self, manifest: Manifest) -> pl.LazyFrame:
        """A lazy frame over a committed batch's files."""
        paths = [self._abs(p.path) for p in manifest.parts]
        if self._local:
            return pl.scan_parquet(paths)
        return pl.concat([pl.read_parquet(self.fs.open(p, "rb").read()).lazy() for p in paths])

    def read(self, manifest: Manifest) -> pl.DataFrame:
        """A committed batch in memory (small batches: CDC micro-batches, tests)."""
        return self.scan(manifest).collect()

    def _checkpoint_path(self, name: str) -> str:
        return f"_checkpoints/{'/'.join(_safe(p, 'checkpoint') for p in name.split('/'))}.json"

    def read_checkpoint(self, name: str) -> dict[str, Any] | None:
        """A resumable writer's saved state, or None."""
        try:
            with self.fs.open(self._abs(self._checkpoint_path(name)), "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            return None

    def write_checkpoint(self, name: str, state: Mapping[str, Any]) -> None:
        """Save a resumable writer's state (atomic replace locally)."""
        self._write_bytes(self._checkpoint_path(name), json.dumps(state, default=str).encode())

    def clear_checkpoint(self, name: str) -> None:
        """Forget a checkpoint once its batch is committed."""
        path = self._abs(self._checkpoint_path(name))
        if self.fs.exists(path):
            self.fs.rm(path)

    # Audited erasure is the only sanctioned rewrite of committed data (DESIGN §6): it
    # removes a data subject's rows from landed files. Everything else about a batch stays
    # immutable.
    def files(self, pattern: str) -> list[str]:
        """Paths (relative to the root) matching a glob relative to the root, sorted."""
        prefix = f"{self.root}/"
        return sorted(
            p[len(prefix) :] if p.startswith(prefix) else p
            for p in (self.fs.glob(self._abs(pattern)) or [])
        )

    def read_parquet(self, rel: str, columns: Sequence[str] | None = None) -> Any:
        """One Parquet file as an Arrow table (optionally only some columns)."""
        import pyarrow.parquet as pq

        with self.fs.open(self._abs(rel), "rb") as fh:
            return pq.read_table(fh, columns=list(columns) if columns else None)

    def replace_parquet(self, rel: str, table: Any) -> PartInfo:
        """Replace a Parquet file with `table` (same schema, zstd); atomic locally."""
        import io

        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        self._write_bytes(rel, data)
        return PartInfo(rel, table.num_rows, len(data), hashlib.sha256(data).hexdigest())

    def rewrite_part(
        self, manifest: Manifest, index: int, table: Any, note: Mapping[str, Any]
    ) -> Manifest:
        """Replace part `index` of a committed batch and re-commit its manifest.

        For an audited erase only: the part is rewritten first, then the manifest (rows,
        bytes, sha256 of the new file, and `note` appended to `meta["rewrites"]`). A crash in
        between leaves a manifest whose row count no longer matches its file; the erase
        compares the two on every run and re-commits such a manifest.
        """
        import dataclasses

        part = self.replace_parquet(manifest.parts[index].path, table)
        parts = tuple(part if i == index else p for i, p in enumerate(manifest.parts))
        meta = dict(manifest.meta)
        meta["rewrites"] = [*meta.get("rewrites", []), dict(note)]
        updated = dataclasses.replace(
            manifest, parts=parts, rows=sum(p.rows for p in parts), meta=meta
        )
        self._write_bytes(manifest.ref.manifest_path, updated.to_json().encode())
        return updated

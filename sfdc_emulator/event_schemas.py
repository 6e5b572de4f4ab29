"""Which Avro schema each object's change events use now, and every schema id ever served.

A schema id must resolve for as long as events carrying it are retained, so each new
schema's JSON is persisted in ``_meta`` (``avro_schema:<id>``) before an event uses it.
Layouts are cached per object and rebuilt when the catalog version of the object moves.
"""

from __future__ import annotations

import threading

import duckdb

from sfdc_emulator.cdc import EventLayout
from sfdc_emulator.schema import OrgSchema
from sfdc_emulator.tables import put_meta

_PREFIX = "avro_schema:"


class EventSchemas:
    """The current :class:`EventLayout` per object and the JSON of every schema id."""

    def __init__(
        self,
        schema: OrgSchema,
        cur: duckdb.DuckDBPyConnection,
        lock: threading.RLock,
        meta: dict[str, str],
    ) -> None:
        """``cur`` and ``lock`` are the store's write cursor and lock; ``meta`` the
        ``_meta`` content."""
        self._schema = schema
        self._w = cur
        self._lock = lock
        self._json = {k.split(":", 1)[1]: v for k, v in meta.items() if k.startswith(_PREFIX)}
        self._layouts: dict[str, tuple[int, EventLayout]] = {}

    def layout(self, obj: str) -> EventLayout:
        """The layout of ``obj``'s events at its current catalog version."""
        spec = self._schema.get(obj)
        version = self._schema.version(spec.name)
        cached = self._layouts.get(spec.name)
        if cached is not None and cached[0] == version:
            return cached[1]
        layout = EventLayout(spec)
        with self._lock:
            if layout.schema_id not in self._json:
                put_meta(self._w, {_PREFIX + layout.schema_id: layout.schema_json})
                self._json[layout.schema_id] = layout.schema_json
            self._layouts[spec.name] = (version, layout)
        return layout

    def persist(self, layout: EventLayout, cur: duckdb.DuckDBPyConnection) -> None:
        """Write ``layout``'s schema if new (inside the caller's transaction); call
        :meth:`learn` once that transaction committed."""
        if layout.schema_id not in self._json:
            put_meta(cur, {_PREFIX + layout.schema_id: layout.schema_json})

    def learn(self, layout: EventLayout) -> None:
        """Resolve ``layout``'s schema id from now on."""
        self._json[layout.schema_id] = layout.schema_json

    def schema_json(self, schema_id: str) -> str:
        """The Avro schema text of ``schema_id``; KeyError if never served."""
        try:
            return self._json[schema_id]
        except KeyError:
            raise KeyError(f"unknown schema id {schema_id!r}") from None

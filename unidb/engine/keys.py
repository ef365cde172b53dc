"""The primary key -> row id map of one table's live rows."""
from __future__ import annotations

import threading
from typing import Any, Iterable

import pyarrow as pa

from unidb.storage.table_store import TableStore


class KeyMap:
    """Primary key -> row id of every live row, built from the rows on first use.

    The writer keeps it in step with its writes (`record`, under the write lock); a read-only
    process rebuilds it whenever the state it reads has moved on (the writer is another
    process)."""

    def __init__(self, store: TableStore, primary_key: str):
        self._store = store
        self._pk = primary_key
        self._keys: dict[Any, int] | None = None
        self._lsn = -1
        self._lock = threading.Lock()           # guards a (re)build against a concurrent one

    def current(self) -> dict[Any, int]:
        """The map for the latest state (rebuilt after another process wrote)."""
        state = self._store.state
        with self._lock:
            if self._keys is None or (self._store.read_only and self._lsn != state.lsn):
                keys: dict[Any, int] = {}
                for part in state.parts:
                    live = state.live_mask(part)
                    ks = part.table.column(self._pk)
                    ids = part.row_ids
                    if not live.all():
                        ks = ks.filter(pa.array(live))
                        ids = ids[live]
                    keys.update(zip(ks.to_pylist(), ids.tolist()))
                self._keys = keys
                self._lsn = state.lsn
            return self._keys

    def record(self, removed: Iterable, added: list, first_rowid: int) -> None:
        """A write removed the keys `removed` and gave `added` the row ids from `first_rowid`
        on (the engine calls this under its write lock, once the write is published)."""
        kmap = self.current()
        for k in removed:
            kmap.pop(k, None)
        kmap.update(zip(added, range(first_rowid, first_rowid + len(added))))
        self._lsn = self._store.state.lsn

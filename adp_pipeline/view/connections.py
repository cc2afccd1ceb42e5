"""The viewer's connections to the lake: one lake-only catalog connection shared by the requests
of a few seconds, each request on a cursor of its own; and the filter's choices, kept until the
lake's trajectories change.

Opening the catalog (a fresh confined DuckDB, the catalog attached and compared with adp's views)
costs ~70 ms on this project's 2-core machine, more than a page's queries at 100k trajectories
(bench/bench_view.py). A cursor is another connection to the same in-memory database: the same
attached catalog and the same confinement and limits (global settings, locked), opened in well
under a millisecond. The views' globs find new partitions at every query, so a connection kept a
few seconds sees every batch a run commits meanwhile; it is reopened every ``max_age`` seconds
so that a rebuilt catalog is picked up, and it never attaches dbt's ``quality.duckdb`` (holding
that file would make the nightly ``dbt build`` fail to open it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from adp_pipeline.storage import QueryLimits, open_catalog
from adp_pipeline.storage.catalog import CATALOG_NAME
from adp_pipeline.storage.view_queries import FilterChoices, filter_choices


@dataclass
class _Opened:
    connection: duckdb.DuckDBPyConnection
    opened_at: float
    users: int = 0
    retired: bool = False


class SharedCatalog:
    """Cursors on a catalog connection of ``data_dir`` under ``limits``, reopened every
    ``max_age`` seconds (a retired connection is closed once its last cursor is)."""

    def __init__(self, data_dir: Path, limits: QueryLimits, max_age: float = 10.0) -> None:
        self._data_dir = data_dir
        self._limits = limits
        self._max_age = max_age
        self._lock = threading.Lock()
        self._current: _Opened | None = None

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection of its own for one request (interrupting it stops only its query)."""
        with self._lock:
            opened = self._fresh()
            opened.users += 1
            try:
                cursor = opened.connection.cursor()
            except BaseException:
                self._release(opened)
                raise
        try:
            cursor.execute(f"USE {CATALOG_NAME}")  # a cursor starts in DuckDB's default database
            yield cursor
        finally:
            cursor.close()
            with self._lock:
                self._release(opened)

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._retire(self._current)
                self._current = None

    def _fresh(self) -> _Opened:
        current = self._current
        if current is not None and time.monotonic() - current.opened_at < self._max_age:
            return current
        if current is not None:
            self._retire(current)
        connection = open_catalog(self._data_dir, self._limits, quality=False)
        self._current = _Opened(connection, time.monotonic())
        return self._current

    def _retire(self, opened: _Opened) -> None:
        opened.retired = True
        if opened.users == 0:
            opened.connection.close()

    def _release(self, opened: _Opened) -> None:
        opened.users -= 1
        if opened.retired and opened.users == 0:
            opened.connection.close()


class ChoicesCache:
    """The trajectories filter's choices (a scan of every trajectory), kept until a file of the
    lake's ``trajectories`` changes: a partition is only ever replaced by a rename, which gives
    it a new inode and time, so the files' stats are the cache's key."""

    def __init__(self, lake_root: Path) -> None:
        self._folder = lake_root / "trajectories"
        self._lock = threading.Lock()
        self._key: tuple[tuple[str, int, int, int], ...] | None = None
        self._value: FilterChoices | None = None

    def get(self, connection: duckdb.DuckDBPyConnection) -> FilterChoices:
        key = self._signature()
        with self._lock:
            if key == self._key and self._value is not None:
                return self._value
        value = filter_choices(connection)
        with self._lock:
            self._key, self._value = key, value
        return value

    def _signature(self) -> tuple[tuple[str, int, int, int], ...]:
        found = []
        for path in self._folder.glob("*/*.parquet"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # replaced meanwhile: the next request sees the new one
                continue
            found.append((str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(found))

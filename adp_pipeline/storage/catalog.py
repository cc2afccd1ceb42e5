"""The DuckDB catalog file: views over the lake, for any number of concurrent readers.

DuckDB lets one process open a file read-write, or many read-only. The catalog holds only
views whose globs find new partitions by themselves, so runs never have to write it: it is
written once, and again only when the lake's schema or location changes. Readers open it
read-only and so never block a run, and a run never blocks them.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import duckdb

from adp_pipeline.storage.lake import Lake
from runtimes.core import CatalogError

CATALOG_FILE = "adp.duckdb"
QUALITY_FILE = "quality.duckdb"  # dbt_quality's own database (profiles.yml)
_META_TABLE = "adp_catalog"
_LOCK_WAIT_SECONDS = 10.0


def catalog_path(data_dir: Path) -> Path:
    return Path(data_dir).absolute() / CATALOG_FILE


def ensure_catalog(data_dir: Path) -> Path:
    """Create or update the catalog's views if they are missing or stale; return its path."""
    lake = Lake(data_dir)
    lake.ensure_layout()
    path = catalog_path(data_dir)
    fingerprint = _fingerprint(lake)
    if path.exists() and _stored_fingerprint(path) == fingerprint:
        return path
    with _connect(path, read_only=False) as connection:
        for sql in lake.views_sql():
            connection.execute(sql)
        connection.execute(f"CREATE OR REPLACE TABLE {_META_TABLE} AS SELECT ? AS fingerprint", [fingerprint])
    return path


def open_catalog(data_dir: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog, creating the catalog first if needed.

    The dbt quality models (``quality.duckdb``, written by the nightly job's ``dbt build``) are
    attached read-only when they exist, and found by name like the catalog's views: a query
    can join ``success_by_day`` with ``trajectories``. While dbt is writing them they are left
    out for that connection rather than waited for.
    """
    connection = _connect(ensure_catalog(data_dir), read_only=True)
    quality = Path(data_dir).absolute() / QUALITY_FILE
    if quality.is_file():
        try:
            connection.execute(f"ATTACH '{_sql_text(quality)}' AS quality (READ_ONLY)")
            connection.execute("SET search_path = 'main,quality.main'")
        except duckdb.Error:
            pass  # dbt holds it for writing this moment: the catalog's views are still there
    return connection


def _sql_text(path: Path) -> str:
    return str(path).replace("'", "''")


def _fingerprint(lake: Lake) -> str:
    return hashlib.sha256("\n".join(lake.views_sql()).encode()).hexdigest()


def _stored_fingerprint(path: Path) -> str | None:
    with _connect(path, read_only=True) as connection:
        try:
            row = connection.execute(f"SELECT fingerprint FROM {_META_TABLE}").fetchone()
        except duckdb.CatalogException:
            return None
    return None if row is None else str(row[0])


def _connect(path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    # Another process may hold the file read-write for the moment it takes to rewrite the
    # views; wait for it with a deadline instead of failing at once.
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if time.monotonic() > deadline:
                raise CatalogError(
                    f"cannot open the DuckDB catalog {path}: {exc}. Another program (a DuckDB "
                    "shell or notebook?) holds it open for writing; close it and try again."
                ) from exc
            time.sleep(0.1)

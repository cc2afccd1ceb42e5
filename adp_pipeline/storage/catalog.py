"""The DuckDB catalog file: views over the lake, for any number of concurrent readers.

DuckDB lets one process open a file read-write, or many read-only. The catalog holds only
views whose globs find new partitions by themselves, so runs never have to write it. Every
reader attaches it read-only in a connection confined to the lake, and first compares what it
holds with the views adp would build: anything else (a view replaced through another
program, an extra table or macro, a moved data dir, a changed view) and the catalog is built
again beside the old one and renamed over it. A reader never blocks a run, and a run never
blocks a reader.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import duckdb

from adp_pipeline.storage.confine import QueryLimits, confine, confined_connection
from adp_pipeline.storage.lake import Lake
from runtimes.core import CatalogError

CATALOG_FILE = "adp.duckdb"
QUALITY_FILE = "quality.duckdb"  # dbt_quality's own database (profiles.yml)
CATALOG_NAME = "adp"  # the catalog's database name in a reader's connection (its file's stem)
_QUALITY_NAME = "quality"
_LOCK_WAIT_SECONDS = 10.0
# Everything a database file can hold that a query could meet, as (kind, name, definition).
_OBJECTS_SQL = """
    SELECT 'view', schema_name || '.' || view_name, sql FROM duckdb_views()
      WHERE database_name = $name AND NOT internal
    UNION ALL SELECT 'table', schema_name || '.' || table_name, sql FROM duckdb_tables()
      WHERE database_name = $name
    UNION ALL SELECT 'function', schema_name || '.' || function_name, coalesce(macro_definition, '')
      FROM duckdb_functions() WHERE database_name = $name AND NOT internal
    UNION ALL SELECT 'sequence', schema_name || '.' || sequence_name, sql FROM duckdb_sequences()
      WHERE database_name = $name
    UNION ALL SELECT 'type', schema_name || '.' || type_name, '' FROM duckdb_types()
      WHERE database_name = $name AND NOT internal
    UNION ALL SELECT 'index', schema_name || '.' || index_name, sql FROM duckdb_indexes()
      WHERE database_name = $name
    UNION ALL SELECT 'schema', schema_name, '' FROM duckdb_schemas()
      WHERE database_name = $name AND NOT internal
"""
# What dbt writes into its database: its models, as tables (marts) and views (staging), in
# the schema of the profile. A macro there would shadow a function of every query.
_DBT_KINDS = frozenset({"table", "view"})
_DBT_SCHEMA = "main"


def catalog_path(data_dir: Path) -> Path:
    return Path(data_dir).absolute() / CATALOG_FILE


def quality_path(data_dir: Path) -> Path:
    return Path(data_dir).absolute() / QUALITY_FILE


def ensure_catalog(data_dir: Path) -> Path:
    """Create the catalog, or build it again if it holds anything but adp's views; return its path.

    The dbt quality models are not looked at (:func:`open_catalog` checks them)."""
    with _open(data_dir, None, None):
        pass
    return catalog_path(data_dir)


def open_catalog(
    data_dir: Path, limits: QueryLimits | None = None, *, quality: bool = True
) -> duckdb.DuckDBPyConnection:
    """A connection to the catalog, attached read-only and confined to the lake; the catalog is
    (re)built first when it is missing or differs from the views adp builds.

    The dbt quality models (``quality.duckdb``, written by the nightly job's ``dbt build``) are
    attached read-only when they exist, and found by name like the catalog's views: a query
    can join ``success_by_day`` with ``trajectories``. While dbt is writing them they are left
    out for that connection rather than waited for. dbt writes tables and views in one schema
    there; a file holding anything else (a macro that shadows a function, a sequence, another
    schema) is refused rather than attached.

    Args:
        limits: the memory, spill space and threads of the connection (DuckDB's defaults
            otherwise); its time is :func:`within_limits`'s to keep.
        quality: attach ``quality.duckdb``; False for a reader that keeps its connection (`adp
            view`), which would otherwise hold dbt's file and make the nightly ``dbt build`` fail.

    Raises:
        CatalogError: another program holds the catalog open for writing, it still differs
            from adp's views after being rebuilt, or ``quality.duckdb`` holds more than dbt's
            tables and views.
    """
    return _open(data_dir, quality_path(data_dir) if quality else None, limits)


def _open(data_dir: Path, quality: Path | None, limits: QueryLimits | None) -> duckdb.DuckDBPyConnection:
    lake = Lake(data_dir)
    lake.ensure_layout()
    path = catalog_path(data_dir)
    expected = _expected_objects(lake)
    for _ in range(2):
        if path.exists():
            connection = _reader(lake, path, quality, limits)
            if _objects(connection, CATALOG_NAME) == expected:
                return connection
            connection.close()
        _build(lake, path)
    raise CatalogError(f"the DuckDB catalog {path} still differs from adp's views after it was rebuilt")


def _reader(lake: Lake, path: Path, quality: Path | None, limits: QueryLimits | None) -> duckdb.DuckDBPyConnection:
    def attach(connection: duckdb.DuckDBPyConnection) -> None:
        _attach_waiting(connection, path)
        connection.execute(f"USE {CATALOG_NAME}")
        if quality is not None and quality.is_file():
            try:
                connection.execute(f"ATTACH {_text(quality)} AS {_QUALITY_NAME} (READ_ONLY)")
            except duckdb.Error:
                return  # dbt holds it for writing this moment: the catalog's views are still there
            _refuse_foreign_quality_objects(connection, quality)
            connection.execute(f"SET search_path = '{CATALOG_NAME}.main,{_QUALITY_NAME}.{_DBT_SCHEMA}'")

    settings = limits.duckdb_settings() if limits is not None else None
    return confined_connection([lake.root], prepare=attach, settings=settings)


def _refuse_foreign_quality_objects(connection: duckdb.DuckDBPyConnection, quality: Path) -> None:
    """dbt writes tables and views in its schema: anything else in its database was put there
    by another program, and a query could meet it (a macro named like a function replaces
    that function in every query)."""
    foreign = sorted(
        f"{kind} {name}"
        for kind, name, _ in _objects(connection, _QUALITY_NAME)
        if kind not in _DBT_KINDS or not name.startswith(f"{_DBT_SCHEMA}.")
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise CatalogError(
            f"{quality} holds what dbt does not write ({shown}); another program changed it. "
            "Delete it and run `adp nightly` to build the quality models again."
        )


def _attach_waiting(connection: duckdb.DuckDBPyConnection, path: Path) -> None:
    # Another program may hold the file read-write (a DuckDB shell, a notebook); wait for it
    # with a deadline instead of failing at once.
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    while True:
        try:
            connection.execute(f"ATTACH {_text(path)} AS {CATALOG_NAME} (READ_ONLY)")
            return
        except duckdb.IOException as exc:
            if time.monotonic() > deadline:
                raise CatalogError(
                    f"cannot open the DuckDB catalog {path}: {exc}. Another program (a DuckDB "
                    "shell or notebook?) holds it open for writing; close it and try again."
                ) from exc
            time.sleep(0.1)


def _build(lake: Lake, path: Path) -> None:
    """Write the catalog beside ``path`` and rename it into place: readers holding the old file
    keep it, new readers open the new one, and nothing of the old one survives."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with confine(duckdb.connect(str(temporary)), [lake.root]) as connection:
            for sql in lake.views_sql():
                connection.execute(sql)
        # A write-ahead log left beside the old file would be replayed into the new one.
        path.with_name(f"{path.name}.wal").unlink(missing_ok=True)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
        temporary.with_name(f"{temporary.name}.wal").unlink(missing_ok=True)


def _objects(connection: duckdb.DuckDBPyConnection, database: str) -> set[tuple[str, str, str]]:
    rows = connection.execute(_OBJECTS_SQL, {"name": database}).fetchall()
    return {(str(kind), str(name), str(sql)) for kind, name, sql in rows}


def _expected_objects(lake: Lake) -> set[tuple[str, str, str]]:
    """The catalog's objects as DuckDB lists them, computed without binding the views (which
    would read every partition's footer): DuckDB stores a view as its parsed query printed back,
    which is what a parse and print of the query gives."""
    queries = lake.view_queries()
    with confined_connection([]) as connection:
        printed = connection.execute(
            "SELECT name, json_deserialize_sql(json_serialize_sql(query)) FROM (SELECT unnest(?) AS name, "
            "unnest(?) AS query)",
            [list(queries), list(queries.values())],
        ).fetchall()
    return {("view", f"main.{name}", f"CREATE VIEW {name} AS {query};") for name, query in printed}


def _text(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"

"""The Parquet lake: one file per table per partition, replaced atomically (DESIGN.md §4).

Layout: ``<data_dir>/lake/<table>/batch=<key>/data.parquet``. A writer writes a temporary
file beside the table and renames it into place, so a reader sees the old partition or the
new one, never half of one, and never waits for a writer. Each table also holds an empty
``batch=__schema__`` file so that its view has columns before the first batch lands.

Screenshots of web steps are files of their own, ``screenshots/<batch>/<task>/<step>-<sha256[:12]>.jpg``,
named by the ``screenshot`` column of their step's row. A name holds one content forever, and
each file is in place before any row naming it can be read; files no row of a batch's current
or previous commit names are removed once past the steps' grace period.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from adp_pipeline.faults import fault_point
from adp_pipeline.storage.confine import confined_connection
from adp_pipeline.storage.names import task_file_stem
from adp_pipeline.storage.tables import COMPUTED_COLUMNS, DERIVED_VIEWS, TABLES
from runtimes.core import fsync_file, write_bytes_atomically

SCHEMA_PARTITION = "__schema__"
_BATCH_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
SCREENSHOTS = "screenshots"  # the lake's folder of screenshot files (not a table)
_DATA_FILE = "data.parquet"
_MERGE_ROWS = 1000
_STEPS_GRACE_SECONDS = 600  # a superseded commit's steps file outlives the queries that listed it
_LAID_OUT: set[Path] = set()  # lake roots whose layout this process has checked


class Lake:
    """Reads and writes the lake under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).absolute() / "lake"

    def partition_file(self, table: str, batch: str) -> Path:
        _schema(table)
        if not _BATCH_KEY.fullmatch(batch):
            # A key with "=", "?", "%" or "/" reads back as another partition or breaks every
            # query of the hive scan; partition keys (task_files.partition_key_for) never have them.
            raise ValueError(f"invalid batch key {batch!r}: letters, digits, '_', '-' and '.' only, not first")
        return self.root / table / f"batch={batch}" / _DATA_FILE

    def write_partition(self, table: str, batch: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        """Replace partition ``batch`` of ``table`` with ``rows``, taken and written a thousand at a
        time (a generator's rows never all sit in memory); readers never see a partial file."""
        with self.partition_writers(batch, (table,)) as (append,):
            for row in rows:
                append(row)
        return self.partition_file(table, batch)

    @contextlib.contextmanager
    def partition_writers(
        self, batch: str, tables: Sequence[str]
    ) -> Iterator[list[Callable[[Mapping[str, Any]], None]]]:
        """Replace partition ``batch`` of each of ``tables`` with the rows given to its append
        function (yielded in the order of ``tables``), written a thousand at a time.

        Each table's rows go to a temporary file beside the table. Only when the block ends
        without an exception are the files completed and renamed into place, one table after
        another in the order of ``tables`` (put last the table readers take as "the batch is
        in"); on an exception no partition changes and the temporary files are removed.
        """
        self.ensure_layout()
        targets = [self.partition_file(table, batch) for table in tables]
        temporaries = [_partial(target) for target in targets]
        files: list[_RowFile] = []
        try:
            for table, temporary, target in zip(tables, temporaries, targets, strict=True):
                target.parent.mkdir(parents=True, exist_ok=True)
                files.append(_RowFile(temporary, _schema(table)))
            yield [file.append for file in files]
            for file in files:
                file.finish()
            for temporary, target in zip(temporaries, targets, strict=True):
                os.replace(temporary, target)
        finally:
            for file in files:
                file.close()
            for temporary in temporaries:
                temporary.unlink(missing_ok=True)

    def commit_batch(self, batch: str, chunks: Sequence[tuple[Path, Path]], commit_id: str) -> None:
        """Replace ``batch``'s steps and trajectories with the rows of ``chunks`` (pairs of a steps
        file and a trajectories file, in the tables' schemas), as commit ``commit_id``.

        Streams (memory stays flat however large the batch) and is atomic for readers: the steps
        are written first, as a file of their own that the ``steps`` view shows only once the
        batch's trajectories are at ``commit_id``; the trajectories file is then replaced in one
        rename, and readers see the whole new batch or the whole previous one. Steps files of commits
        older than the previous one are removed once ten minutes old (the previous one always stays, for a
        reader that listed the files just before the switch).
        """
        self.ensure_layout()
        trajectories = self.partition_file("trajectories", batch)
        previous = _commit_of(trajectories)
        steps_folder = self.partition_file("steps", batch).parent
        self._merge([steps for steps, _ in chunks], steps_folder / _steps_file(commit_id), "steps", commit_id)
        fault_point("commit:steps_written")
        self._merge([rows for _, rows in chunks], trajectories, "trajectories", commit_id)
        fault_point("commit:trajectories_written")
        keep = {_steps_file(commit_id), _steps_file(previous)}
        stale_before = time.time() - _STEPS_GRACE_SECONDS  # a query that listed it may still be reading
        for path in steps_folder.glob("*.parquet"):
            if path.name not in keep and path.stat().st_mtime < stale_before:
                path.unlink(missing_ok=True)
        self._remove_unnamed_screenshots(batch, [steps_folder / name for name in keep], stale_before)

    def write_screenshot(self, batch: str, task_id: str, step_id: int, jpeg: bytes) -> str:
        """Store the screenshot of step ``step_id`` of ``task_id`` in ``batch``, whole or not at
        all, and return its path relative to the lake's root (the step row's ``screenshot``).

        The name carries the bytes' hash, so a file never changes once written: one already
        there holds these bytes and is kept. Called before the rows naming it are committed.
        """
        self.partition_file("steps", batch)  # the batch key's checks
        name = f"{int(step_id)}-{hashlib.sha256(jpeg).hexdigest()[:12]}.jpg"
        relative = f"{SCREENSHOTS}/{batch}/{task_file_stem(task_id)}/{name}"
        target = self.root / relative
        if target.is_file():
            return relative
        write_bytes_atomically(target, jpeg, durable=True)
        return relative

    def screenshot_file(self, relative: str) -> Path | None:
        """The file a step row's ``screenshot`` names, or None when the value is not a screenshot
        path of this lake (anything else it could name: a traversal, a link out, another table)."""
        parts = relative.split("/")
        if len(parts) != 4 or parts[0] != SCREENSHOTS or not parts[3].endswith(".jpg"):
            return None
        if any(part in {"", ".", ".."} or part.startswith(".") or "\\" in part or "\0" in part for part in parts):
            return None
        try:
            folder = (self.root / SCREENSHOTS).resolve()
            path = (self.root / relative).resolve()
            return path if folder in path.parents and path.is_file() else None
        except OSError:  # a name the filesystem refuses (too long, ...) names no screenshot of ours
            return None

    def _remove_unnamed_screenshots(self, batch: str, steps_files: Sequence[Path], stale_before: float) -> None:
        """Remove the batch's screenshot files (and temporaries of killed writers) that no row of
        ``steps_files`` names and that are older than ``stale_before``: a reader of an older commit
        may still be showing them, and a run of the batch writes only under its lock."""
        folder = self.root / SCREENSHOTS / batch
        if not folder.is_dir():
            return
        named: set[str] = set()
        for steps in steps_files:
            with contextlib.suppress(FileNotFoundError, KeyError, pa.ArrowInvalid):
                column = pq.read_table(steps, columns=["screenshot"]).column("screenshot")
                named.update(value for value in column.to_pylist() if value)
        for path in folder.rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                unnamed = path.is_file() and path.relative_to(self.root).as_posix() not in named
                if unnamed and path.stat().st_mtime < stale_before:
                    path.unlink()
        for task_folder in folder.iterdir():
            with contextlib.suppress(OSError):
                task_folder.rmdir()  # only when empty

    def committed_batch(self, batch: str, commit_id: str | None) -> tuple[Path, Path] | None:
        """The (steps, trajectories) files of ``batch`` if its trajectories are at ``commit_id``."""
        trajectories = self.partition_file("trajectories", batch)
        if not commit_id or _commit_of(trajectories) != commit_id:
            return None
        steps = trajectories.parent.parent.parent / "steps" / trajectories.parent.name / _steps_file(commit_id)
        return (steps, trajectories) if steps.exists() else None

    def _merge(self, sources: Sequence[Path], target: Path, table: str, commit_id: str) -> None:
        schema = _schema(table)
        position = schema.get_field_index("commit_id")
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent.parent / f".{target.parent.name}.{uuid.uuid4().hex}.partial"
        try:
            with pq.ParquetWriter(temporary, schema) as writer:
                for source in sources:
                    for rows in pq.ParquetFile(source).iter_batches(batch_size=_MERGE_ROWS):
                        part = _conform(pa.Table.from_batches([rows]), schema)
                        commit = pa.array([commit_id] * part.num_rows, pa.string())
                        writer.write_table(part.set_column(position, schema.field(position), commit))
            fsync_file(temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def ensure_layout(self) -> None:
        """Create every table's folder and its schema placeholder (rewritten when a schema changes).

        Checked once per process and lake: every write and every check's connection asks.
        """
        if self.root in _LAID_OUT and self.root.is_dir():
            return
        for table, schema in TABLES.items():
            placeholder = self.root / table / f"batch={SCHEMA_PARTITION}" / _DATA_FILE
            if placeholder.exists() and pq.read_schema(placeholder).equals(schema, check_metadata=False):
                continue
            self._replace(placeholder, schema.empty_table())
        _LAID_OUT.add(self.root)

    def view_query(self, table: str) -> str:
        """The query of the view of ``table``: every partition in the lake, with the columns
        computed from the stored ones (``COMPUTED_COLUMNS``: ``trajectories.verified_success``);
        a batch's ``steps`` only of the commit its ``trajectories`` are at."""
        _schema(table)
        computed = "".join(f", {sql} AS {name}" for name, sql in COMPUTED_COLUMNS.get(table, {}).items())
        if table == "steps":
            return (
                f"SELECT s.* FROM {self._scan('steps')} s SEMI JOIN (SELECT DISTINCT batch, commit_id FROM "
                f"{self._scan('trajectories')}) t ON s.batch = t.batch AND s.commit_id IS NOT DISTINCT FROM t.commit_id"
            )
        return f"SELECT *{computed} FROM {self._scan(table)}"

    def _scan(self, table: str) -> str:
        pattern = str(self.root / table / "*" / "*.parquet").replace("'", "''")
        return (
            f"read_parquet('{pattern}', hive_partitioning = true, union_by_name = true, "
            "hive_types = {'batch': VARCHAR})"
        )

    def connect(self, settings: Mapping[str, str | int | bool] | None = None) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with a view per table, confined to the lake (no other
        file, locked configuration: :func:`confine`); takes no lock on any file.

        Args:
            settings: DuckDB settings to apply before the configuration is locked.
        """
        self.ensure_layout()
        connection = confined_connection([self.root], settings=settings)
        try:
            for sql in self.views_sql():
                connection.execute(sql)
        except BaseException:
            connection.close()
            raise
        return connection

    def view_queries(self) -> dict[str, str]:
        """Every view's query by name, tables first, then the views computed from them."""
        return {table: self.view_query(table) for table in TABLES} | {
            name: sql.strip() for name, sql in DERIVED_VIEWS.items()
        }

    def views_sql(self) -> list[str]:
        """Every view's definition, in the order of :meth:`view_queries`."""
        return [f"CREATE OR REPLACE VIEW {name} AS {query}" for name, query in self.view_queries().items()]

    def _replace(self, target: Path, arrow_table: pa.Table) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = _partial(target)
        try:
            pq.write_table(arrow_table, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return target


class _RowFile:
    """A Parquet file of ``schema`` taking rows one at a time, written a thousand at a time."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._schema = schema
        self._writer = pq.ParquetWriter(path, schema)
        self._pending: list[Mapping[str, Any]] = []

    def append(self, row: Mapping[str, Any]) -> None:
        self._pending.append(row)
        if len(self._pending) >= _MERGE_ROWS:
            self._flush()

    def finish(self) -> None:
        """Write the rows still pending and complete the file."""
        self._flush()
        self._writer.close()

    def close(self) -> None:
        """Close the file, complete or not (a no-op after :meth:`finish`)."""
        self._writer.close()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self._schema))
            self._pending.clear()


def _conform(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """``part`` in ``schema``: a column added to the schema since ``part`` was written (a batch
    committed by an older adp, kept by the next commit) is null in it."""
    columns = [
        part.column(field.name) if field.name in part.column_names else pa.nulls(part.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, names=schema.names).cast(schema)


def _partial(target: Path) -> Path:
    """A temporary file for ``target`` beside its table's folder (outside every partition, so no
    reader's glob takes it), to be renamed onto ``target`` when complete."""
    return target.parent.parent / f".{target.parent.name}.{uuid.uuid4().hex}.partial"


def _steps_file(commit_id: str | None) -> str:
    """A batch's steps file of a commit (``data.parquet``: a partition written whole)."""
    return f"data-{commit_id}.parquet" if commit_id else _DATA_FILE


def _commit_of(trajectories: Path) -> str | None:
    """The commit a trajectories partition file is at (None: none, or written whole)."""
    try:
        column = pq.read_table(trajectories, columns=["commit_id"]).column("commit_id")
    except (FileNotFoundError, KeyError, pa.ArrowInvalid):
        return None
    return next((value for value in column.to_pylist() if value), None)


def unwritable_reason(folder: Path) -> str | None:
    """Why ``folder`` (created if missing) cannot take a new file, or None when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".adp-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _schema(table: str) -> pa.Schema:
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown lake table {table!r}; known: {', '.join(TABLES)}") from None

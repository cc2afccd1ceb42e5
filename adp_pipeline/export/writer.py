"""Stream trajectories from the lake into a training-set file: `adp export` and the
``training_dataset`` asset.

One record per task (its latest trajectory), verified successful ones only unless asked
otherwise; a record whose messages are inconsistent is left out and reported with its reason.
Rows are read and written in batches, so memory stays flat however large the lake is, and the
file appears whole or not at all (written aside, then renamed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from adp_pipeline.export.formats import (
    FORMATS,
    METADATA_SCHEMA,
    REGISTRY,
    ExportFormat,
    Source,
    check_messages,
    json_text,
    metadata_row,
    parquet_table,
)
from adp_pipeline.storage import (
    Lake,
    QueryLimits,
    RefusedError,
    catalog_path,
    outside_the_lake_refused,
    quality_path,
    read_condition,
    within_limits,
)
from adp_pipeline.storage.rows import conversation_from_row
from runtimes.core import BrokenMessagesError, ExportError

_ROWS_PER_BATCH = 500
_SUFFIXES = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}
# DuckDB's own memory (it spills beyond this): the export's peak stays bounded on any lake.
_DUCKDB_MEMORY_MB = 256


@dataclass
class ExportSummary:
    path: Path
    export_format: ExportFormat
    sidecar: Path | None = None  # adp's metadata, one row per record, for a format without room for it
    rows: int = 0
    by_split: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (task_id, reason)
    sample: dict[str, Any] | None = None


def sidecar_path(out: Path) -> Path:
    """Where a format that keeps adp's metadata out of its records (``openai``) writes it:
    ``train.jsonl`` → ``train.meta.jsonl``, one row per record, in the same order."""
    return out.with_name(f"{out.stem}.meta{out.suffix}")


def split_of(task_id: str, val_fraction: float) -> str:
    """``validation`` for a fixed ``val_fraction`` of task ids (by their hash), else ``train``:
    the same task lands in the same split in every export."""
    position = int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big") / 2**64
    return "validation" if position < val_fraction else "train"


def export_training_set(
    lake: Lake,
    out: Path,
    *,
    export_format: ExportFormat = "openai",
    where: str | None = None,
    include_failed: bool = False,
    val_fraction: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
    limits: QueryLimits | None = None,
) -> ExportSummary:
    """Write the training set to ``out`` (Parquet for ``.parquet``, JSON lines for ``.jsonl``
    or ``.json``).

    Args:
        where: one SQL expression on the ``trajectories`` view's columns, ANDed to the
            selection; parsed as an expression (it cannot close the query it filters) and
            read through a connection confined to the lake.
        include_failed: export every trajectory, not only verified successful ones.
        val_fraction: the share of task ids (by hash) whose records get ``split = validation``.
        on_progress: called with the number of trajectories read so far, after each batch.
        overwrite: replace ``out`` if it exists (otherwise an existing file is refused).
        limits: DuckDB's spill space and threads, and its memory up to 256 MB (a person's
            export: ``where`` may ask for much); no time limit, since an export's time grows
            with the lake. None: 256 MB, DuckDB's defaults otherwise (adp's own export).

    Raises:
        RefusedError: before anything is read or written: ``where`` is not one read-only
            expression, or ``out`` exists (without ``overwrite``) or lies in the lake or is a
            catalog file (symlinks resolved); or, while reading, ``where`` reaches outside the lake.
        ExportError: an unknown format or file extension, a fraction outside [0, 1), or a
            ``where`` condition DuckDB cannot run.
        QueryLimitError: the selection needs more memory and spill space than ``limits`` give.
    """
    kind, condition = _checked(lake, out, export_format, where, val_fraction, overwrite)
    format_ = REGISTRY[export_format]
    summary = ExportSummary(out, export_format, sidecar_path(out) if format_.sidecar else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    targets = ([summary.sidecar] if summary.sidecar else []) + [out]  # the sidecar first: it is there when the file is
    temporaries = {target: target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial") for target in targets}
    try:
        with contextlib.ExitStack() as files:
            write = files.enter_context(_sink(temporaries[out], kind, format_.parquet_schema, export_format))
            write_metadata = (
                files.enter_context(_sink(temporaries[summary.sidecar], kind, METADATA_SCHEMA, "metadata"))
                if summary.sidecar
                else None
            )
            read = 0
            previous: str | None = None
            for batch in _sources(lake, condition, include_failed, val_fraction, limits):
                records: list[Any] = []
                metadata: list[dict[str, Any]] = []
                for source in batch:
                    if source.task_id == previous:
                        continue  # a second row of one task in one batch: the first (latest) is the record
                    previous = source.task_id
                    try:
                        check_messages(source.messages)
                        record = format_.record(source)
                        line = json_text(record)  # a value JSON cannot hold leaves this record out, not the file
                    except BrokenMessagesError as exc:
                        summary.excluded.append((source.task_id, str(exc)))
                        continue
                    records.append(line if kind == "jsonl" else record)
                    if write_metadata is not None:
                        metadata.append(metadata_row(source))
                    summary.by_split[source.split] += 1
                    summary.by_type[source.task_type] += 1
                    if summary.sample is None:
                        summary.sample = record
                write(records)
                if write_metadata is not None:
                    write_metadata(metadata)
                summary.rows += len(records)
                read += len(batch)
                if on_progress is not None:
                    on_progress(read)
        _move_into_place(temporaries, overwrite)
        if overwrite and summary.sidecar is None:
            # The metadata file of an openai export this one replaced describes records that are gone.
            sidecar_path(out).unlink(missing_ok=True)
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)
    return summary


def check_export(
    lake: Lake,
    out: Path,
    *,
    export_format: ExportFormat = "openai",
    where: str | None = None,
    val_fraction: float = 0.0,
    overwrite: bool = False,
) -> None:
    """The checks :func:`export_training_set` makes before it reads or writes anything, on
    their own: a caller that shows progress runs them first, to fail before it starts.

    Raises:
        RefusedError, ExportError: as :func:`export_training_set` does before it starts.
    """
    _checked(lake, out, export_format, where, val_fraction, overwrite)


def _checked(
    lake: Lake, out: Path, export_format: ExportFormat, where: str | None, val_fraction: float, overwrite: bool
) -> tuple[str, duckdb.Expression | None]:
    """The file kind of ``out`` and the parsed ``where``, once every argument is accepted."""
    if export_format not in FORMATS:
        raise ExportError(f"unknown export format {export_format!r}; choose one of {', '.join(FORMATS)}")
    _refuse_target(lake, out, overwrite)
    if REGISTRY[export_format].sidecar:
        _refuse_target(lake, sidecar_path(out), overwrite)
    kind = _SUFFIXES.get(out.suffix.lower())
    if kind is None:
        raise ExportError(f"{out}: the file name must end in {', '.join(_SUFFIXES)} (it picks the file format)")
    if not 0 <= val_fraction < 1:
        raise ExportError(f"the validation fraction must be in [0, 1), got {val_fraction}")
    condition = read_condition(where) if where else None
    return kind, condition


def _refuse_target(lake: Lake, out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` in the lake or on a catalog file, wherever its symlinks lead, and an
    existing ``out`` unless ``overwrite``: an export never replaces what adp reads."""
    target = out.resolve()
    data_dir = lake.root.parent
    lake_root = lake.root.resolve()
    catalogs = [path.resolve() for path in (catalog_path(data_dir), quality_path(data_dir))]
    protected = {path.with_name(path.name + suffix) for path in catalogs for suffix in ("", ".wal")}
    if target == lake_root or lake_root in target.parents:
        raise RefusedError(f"refused: {out} is in the lake ({lake_root}), which only adp's runs write")
    if target in protected:
        raise RefusedError(f"refused: {out} is the DuckDB catalog file {target}")
    if not overwrite and (out.exists() or out.is_symlink()):
        raise RefusedError(f"refused: {out} already exists; pass --force to replace it")


def _move_into_place(temporaries: dict[Path, Path], overwrite: bool) -> None:
    """Each finished temporary file to its target; without ``overwrite``, none replaces a file
    that appeared meanwhile (and the ones already placed are taken back)."""
    placed: list[Path] = []
    try:
        for out, temporary in temporaries.items():
            _move_one(temporary, out, overwrite)
            placed.append(out)
    except BaseException:
        if not overwrite:
            for out in placed:
                out.unlink(missing_ok=True)
        raise


def _move_one(temporary: Path, out: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, out)
        return
    try:  # a hard link fails if ``out`` appeared meanwhile, where a rename would replace it
        os.link(temporary, out)
    except FileExistsError:
        raise RefusedError(f"refused: {out} appeared while exporting; pass --force to replace it") from None
    except OSError:  # a file system without hard links
        if out.exists() or out.is_symlink():
            raise RefusedError(f"refused: {out} appeared while exporting; pass --force to replace it") from None
        os.replace(temporary, out)


@contextlib.contextmanager
def _sink(path: Path, kind: str, schema: pa.Schema, what: str) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
    """A function that appends records to ``path`` (in ``schema`` for Parquet), open for the
    ``with`` block."""
    if kind == "parquet":
        with pq.ParquetWriter(path, schema) as writer:

            def write_rows(records: list[Any]) -> None:
                if records:
                    writer.write_table(parquet_table(schema, records, what))

            yield write_rows
    else:
        with path.open("w", encoding="utf-8") as handle:

            def write_lines(records: list[Any]) -> None:
                handle.writelines(
                    (record if isinstance(record, str) else json_text(record)) + "\n" for record in records
                )

            yield write_lines


# The lake columns a training-set record is made from, named like Source's fields.
SOURCE_COLUMNS = (
    "task_id, task_type, batch, policy, model, verifier, n_steps, prompt_tokens, completion_tokens, "
    "total_tokens, coalesce(generation, 0) AS generation, lineage, messages, tools"
)


def _sources(
    lake: Lake,
    condition: duckdb.Expression | None,
    include_failed: bool,
    val_fraction: float,
    limits: QueryLimits | None,
) -> Iterator[list[Source]]:
    memory_mb = min(_DUCKDB_MEMORY_MB, limits.memory_mb) if limits is not None else _DUCKDB_MEMORY_MB
    bounded = dataclasses.replace(limits, memory_mb=memory_mb) if limits is not None else None
    settings: dict[str, str | int | bool] = {
        **(bounded.duckdb_settings() if bounded is not None else {"memory_limit": f"{memory_mb}MB"}),
        "preserve_insertion_order": False,
    }
    with (
        lake.connect(settings=settings) as connection,
        outside_the_lake_refused("--where"),
        within_limits(connection, bounded, "the export", timed=False) if bounded else contextlib.nullcontext(),
    ):
        try:
            # DuckDB pastes the condition's text into the SQL it runs, as WHERE (<text>):
            # read_condition made sure that text parses there to the one expression it checked.
            selected = connection.table("trajectories")
            if not include_failed:
                selected = selected.filter(duckdb.SQLExpression("verified_success"))
            if condition is not None:
                selected = selected.filter(condition)
            # The latest trajectory of each task, chosen on the keys alone; the wide rows then stream,
            # in task id order (one row per task id): two exports of one lake are the same bytes.
            chosen = selected.query(
                "selected",
                f"""
                WITH chosen AS (
                    SELECT task_id, batch FROM selected
                    QUALIFY row_number() OVER (PARTITION BY task_id ORDER BY created_at DESC, batch DESC) = 1
                )
                SELECT {SOURCE_COLUMNS} FROM selected JOIN chosen USING (task_id, batch)
                ORDER BY task_id, created_at DESC
                """,
            )
            assert chosen is not None  # a SELECT always makes a relation
            reader = chosen.to_arrow_reader(_ROWS_PER_BATCH)
        except (duckdb.PermissionException, duckdb.OutOfMemoryException):
            raise  # said as such by the context managers above
        except duckdb.Error as exc:
            check = " (check --where)" if condition is not None else ""
            raise ExportError(f"the selection failed{check}: {exc}") from None
        for batch in reader:
            yield [source_from_row(row, val_fraction) for row in batch.to_pylist()]


def source_from_row(row: dict[str, Any], val_fraction: float) -> Source:
    """A row of ``SOURCE_COLUMNS`` (named like ``Source``'s fields) as a Source."""
    messages, tools = conversation_from_row(row)
    return Source(**{**row, "messages": messages, "tools": tools, "split": split_of(row["task_id"], val_fraction)})

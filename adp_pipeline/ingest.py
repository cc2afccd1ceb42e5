"""Ingest one registered task file into the lake: the work behind the ``task_batch`` asset."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from adp_pipeline.storage import Lake
from adp_pipeline.storage.locks import file_lock
from adp_pipeline.storage.rows import task_row
from adp_pipeline.task_files import RegisteredTaskFile
from runtimes.core import (
    DEFAULT_MAX_TASK_LINES,
    LineWarning,
    RejectedLine,
    TaskType,
    iter_task_file,
    without_known_task_ids,
)

INGEST_LOCK = ".ingest.lock"
SHOWN = 20
"""Rejects and warnings an :class:`IngestSummary` keeps by default: the first ones, to show; the
lake's ``task_rejects`` holds every reject."""
_ID_CHECK_CHUNK = 1000  # lines whose accepted ids are looked up in other batches at once


@dataclass(frozen=True)
class IngestSummary:
    """What ingesting a file did: counts of everything, and the first rejects and warnings (in
    line order) to show; every reject is in the lake's ``task_rejects``."""

    batch: str
    source_file: str
    non_blank_lines: int
    accepted: int
    rejected: int
    by_type: dict[str, int]
    rejects: list[RejectedLine] = field(default_factory=list)
    """The first rejects, at most the ``shown`` of :func:`ingest_task_file`."""
    warnings: list[LineWarning] = field(default_factory=list)
    """The first warnings of accepted tasks, at most the ``shown`` of :func:`ingest_task_file`."""
    warning_count: int = 0
    """Warnings of accepted tasks in all."""


def ingest_task_file(
    lake: Lake,
    registered: RegisteredTaskFile,
    *,
    max_line_bytes: int,
    default_timeout: int,
    max_memory_mb: int,
    max_lines: int = DEFAULT_MAX_TASK_LINES,
    shown: int = SHOWN,
) -> IngestSummary:
    """Parse ``registered``, drop ids accepted by other batches, and replace its lake partitions.

    A line asking more sandbox memory than ``max_memory_mb`` (ADP_SANDBOX_MAX_MEMORY_MB) is a
    reject, with the ceiling in its reason: the host could not afford it. Past ``max_lines``
    non-blank lines (ADP_MAX_TASK_LINES) the file is not parsed: one reject names the rest.

    One pass, memory flat in the file's size: each line is parsed, checked and written to the
    new ``task_rejects`` or ``tasks`` file as it comes (ids are looked up in other batches a
    thousand lines at a time); only counts and the first ``shown`` rejects and warnings are kept.
    The new files replace the partitions when the file is through: ``task_rejects`` first, then
    ``tasks``; on an error neither changes.

    The whole pass holds one lock of the data dir, so two batches ingested at the same moment
    (two `adp run`, or a run and the sensor's) cannot both accept one id.
    """
    tally = _Tally(shown)
    outcomes = iter_task_file(
        registered.path,
        source_name=registered.source_path,
        max_line_bytes=max_line_bytes,
        max_lines=max_lines,
        default_timeout=default_timeout,
        max_memory_mb=max_memory_mb,
        copy_of_sha256=registered.sha256,  # the copy's placeholders stand for lines not kept
    )
    with (
        contextlib.closing(outcomes),  # the file closes now, even when writing fails
        file_lock(lake.root.parent / INGEST_LOCK),
        lake.connect() as connection,
        lake.partition_writers(registered.key, ("task_rejects", "tasks")) as (add_reject, add_task),
    ):
        ingested_at = datetime.now(UTC)

        def known_of(ids: Sequence[str]) -> Mapping[str, str]:
            return _ids_in_other_batches(connection, registered.key, ids)

        checked = without_known_task_ids(outcomes, known_of, source_file=registered.source_path, chunk=_ID_CHECK_CHUNK)
        for outcome in checked:
            if isinstance(outcome, RejectedLine):
                tally.rejected(outcome)
                add_reject({**outcome.model_dump(), "ingested_at": ingested_at})
                continue
            tally.accepted(outcome.task.task_type.value, outcome.warnings)
            add_task(
                task_row(
                    outcome.task,
                    source_file=registered.source_path,
                    line_number=outcome.line_number,
                    ingested_at=ingested_at,
                )
            )
    return IngestSummary(
        batch=registered.key,
        source_file=registered.source_path,
        non_blank_lines=tally.accepted_count + tally.rejected_count,  # one outcome per non-blank line
        accepted=tally.accepted_count,
        rejected=tally.rejected_count,
        by_type={task_type.value: tally.by_type.get(task_type.value, 0) for task_type in TaskType},
        rejects=tally.first_rejects,
        warnings=tally.first_warnings,
        warning_count=tally.warning_count,
    )


@dataclass
class _Tally:
    """Counts of a file's outcomes, and the first ``shown`` rejects and warnings."""

    shown: int
    accepted_count: int = 0
    rejected_count: int = 0
    warning_count: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    first_rejects: list[RejectedLine] = field(default_factory=list)
    first_warnings: list[LineWarning] = field(default_factory=list)

    def rejected(self, reject: RejectedLine) -> None:
        self.rejected_count += 1
        if len(self.first_rejects) < self.shown:
            self.first_rejects.append(reject)

    def accepted(self, task_type: str, warnings: Sequence[LineWarning]) -> None:
        self.accepted_count += 1
        self.by_type[task_type] += 1
        self.warning_count += len(warnings)
        self.first_warnings.extend(warnings[: max(self.shown - len(self.first_warnings), 0)])


def _ids_in_other_batches(connection: duckdb.DuckDBPyConnection, batch: str, ids: Sequence[str]) -> dict[str, str]:
    """Of ``ids``, those accepted in a batch other than ``batch``, each with the first such batch."""
    rows = connection.execute(
        "SELECT task_id, min(batch) FROM tasks WHERE batch <> ? AND task_id IN (SELECT unnest(?)) GROUP BY 1",
        [batch, list(ids)],
    ).fetchall()
    return {str(task_id): str(earlier) for task_id, earlier in rows}

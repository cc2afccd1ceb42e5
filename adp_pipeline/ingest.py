"""Ingest one registered task file into the lake: the work behind the ``task_batch`` asset."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adp_pipeline.storage import Lake
from adp_pipeline.storage.locks import file_lock
from adp_pipeline.storage.rows import task_row
from adp_pipeline.task_files import RegisteredTaskFile
from runtimes.core import (
    DEFAULT_MAX_TASK_LINES,
    LineWarning,
    ParsedTaskFile,
    RejectedLine,
    TaskType,
    parse_task_file,
    reject_known_task_ids,
)

INGEST_LOCK = ".ingest.lock"


@dataclass(frozen=True)
class IngestSummary:
    batch: str
    source_file: str
    non_blank_lines: int
    accepted: int
    rejected: int
    by_type: dict[str, int]
    rejects: list[RejectedLine] = field(default_factory=list)
    warnings: list[LineWarning] = field(default_factory=list)


def ingest_task_file(
    lake: Lake,
    registered: RegisteredTaskFile,
    *,
    max_line_bytes: int,
    default_timeout: int,
    max_memory_mb: int,
    max_lines: int = DEFAULT_MAX_TASK_LINES,
) -> IngestSummary:
    """Parse ``registered``, drop ids accepted by other batches, and replace its lake partitions.

    A line asking more sandbox memory than ``max_memory_mb`` (ADP_SANDBOX_MAX_MEMORY_MB) is a
    reject, with the ceiling in its reason: the host could not afford it. Past ``max_lines``
    non-blank lines (ADP_MAX_TASK_LINES) the file is not parsed: one reject names the rest.

    Reading the ids of other batches and writing this one's happen under one lock of the data
    dir, so two batches ingested at the same moment (two `adp run`, or a run and the sensor's)
    cannot both accept one id.
    """
    parsed = parse_task_file(
        registered.path,
        source_name=registered.source_path,
        max_line_bytes=max_line_bytes,
        max_lines=max_lines,
        default_timeout=default_timeout,
        max_memory_mb=max_memory_mb,
        copy_of_sha256=registered.sha256,  # the copy's placeholders stand for lines not kept
    )
    with file_lock(lake.root.parent / INGEST_LOCK):
        parsed = reject_known_task_ids(parsed, _ids_in_other_batches(lake, registered.key, parsed))
        ingested_at = datetime.now(UTC)
        lake.write_partition(
            "task_rejects",
            registered.key,
            ({**rejected.model_dump(), "ingested_at": ingested_at} for rejected in parsed.rejected),
        )
        lake.write_partition("tasks", registered.key, _task_rows(parsed, ingested_at))
    by_type = Counter(item.task.task_type.value for item in parsed.accepted)
    return IngestSummary(
        batch=registered.key,
        source_file=registered.source_path,
        non_blank_lines=parsed.non_blank_lines,
        accepted=len(parsed.accepted),
        rejected=len(parsed.rejected),
        by_type={task_type.value: by_type.get(task_type.value, 0) for task_type in TaskType},
        rejects=parsed.rejected,
        warnings=parsed.warnings,
    )


def _ids_in_other_batches(lake: Lake, batch: str, parsed: ParsedTaskFile) -> dict[str, str]:
    ids = [item.task.task_id for item in parsed.accepted]
    if not ids:
        return {}
    with lake.connect() as connection:
        rows = connection.execute(
            "SELECT task_id, min(batch) FROM tasks WHERE batch <> ? AND task_id IN (SELECT unnest(?)) GROUP BY 1",
            [batch, ids],
        ).fetchall()
    return {str(task_id): str(earlier) for task_id, earlier in rows}


def _task_rows(parsed: ParsedTaskFile, ingested_at: datetime) -> list[dict[str, Any]]:
    return [
        task_row(item.task, source_file=parsed.source_file, line_number=item.line_number, ingested_at=ingested_at)
        for item in parsed.accepted
    ]

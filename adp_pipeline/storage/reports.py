"""What the lake says about batches that ran: the questions `adp run`'s summary asks, answered
as dataclasses (the CLI only formats them).

Each function takes a connection from :meth:`Lake.connect` (the views by name) and the batch
keys asked about; :func:`run_report` asks all four over one connection. Values are bound as
parameters, never pasted into the SQL; a batch filter is ``list_contains($batches, batch)``,
which DuckDB prunes to those batches' partition files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from adp_pipeline.storage.lake import Lake
from runtimes.core import ErrorType, TaskType
from synthesis.stages import Stage

_CountedView = Literal["tasks", "task_rejects", "synthesized_tasks"]  # a name, never a value, in the SQL


@dataclass(frozen=True)
class TypeTally:
    """One task type's trajectories in a batch, and how many of them are verified successes."""

    verified: int
    trajectories: int


@dataclass(frozen=True)
class BatchReport:
    """A batch's ingest and outcome: its accepted and rejected lines, and per task type the
    verified successes among its trajectories (every :class:`TaskType`, zero when absent)."""

    batch: str
    accepted: int
    rejected: int
    by_type: dict[TaskType, TypeTally]


@dataclass(frozen=True)
class RejectedLine:
    """A line of a task file that did not become a task, with the field and reason."""

    source_file: str
    line_number: int
    field: str | None
    reason: str


@dataclass(frozen=True)
class FailureGroup:
    """The failed trajectories of one error type (None: failed without one), with the message of
    the first such task of its file as the example."""

    error_type: ErrorType | None
    tasks: int
    example: str | None


@dataclass(frozen=True)
class SynthesisReport:
    """What synthesis made from a batch's essences: the accepted tasks, the rejected candidates
    by the stage that stopped them (ordered by the stage's stored name, as the CLI has always
    listed them), and the task files written (sorted)."""

    batch: str
    accepted: int
    rejected_by_stage: dict[Stage, int]
    task_files: tuple[str, ...]


@dataclass(frozen=True)
class RunReport:
    """Everything `adp run` prints about its batches."""

    batches: list[BatchReport]
    synthesis: list[SynthesisReport]
    failures: list[FailureGroup]
    rejected_lines: list[RejectedLine]


def lake_exists(data_dir: Path) -> bool:
    """Whether adp has laid out a lake under ``data_dir`` (a run, or the sensor's first file, did).

    A reader that would otherwise create the lake and its catalog asks first: a mistyped
    ``--data-dir`` is an error, not an empty lake."""
    return Lake(data_dir).root.is_dir()


def run_report(lake: Lake, batches: Sequence[str], *, rejected_lines_shown: int = 10) -> RunReport:
    """The four answers below for ``batches``, over one connection to ``lake``."""
    with lake.connect() as connection:
        return RunReport(
            batches=batch_reports(connection, batches),
            synthesis=synthesis_reports(connection, batches),
            failures=failures_by_error_type(connection, batches),
            rejected_lines=rejected_lines(connection, batches, limit=rejected_lines_shown),
        )


def batch_reports(connection: duckdb.DuckDBPyConnection, batches: Sequence[str]) -> list[BatchReport]:
    """One report per batch key, in the order given (a key with nothing in the lake: zeros)."""
    keys = list(batches)
    accepted = _counts_by_batch(connection, "tasks", keys)
    rejected = _counts_by_batch(connection, "task_rejects", keys)
    tallies: dict[tuple[str, TaskType], TypeTally] = {}
    rows = connection.execute(
        "SELECT batch, task_type, count(*) FILTER (WHERE verified_success), count(*) FROM trajectories "
        "WHERE list_contains($batches, batch) AND list_contains($types, task_type) GROUP BY ALL",
        {"batches": keys, "types": [task_type.value for task_type in TaskType]},
    ).fetchall()
    for batch, task_type, verified, total in rows:
        tallies[(batch, TaskType(task_type))] = TypeTally(verified=verified, trajectories=total)
    return [
        BatchReport(
            batch=batch,
            accepted=accepted.get(batch, 0),
            rejected=rejected.get(batch, 0),
            by_type={task_type: tallies.get((batch, task_type), TypeTally(0, 0)) for task_type in TaskType},
        )
        for batch in keys
    ]


def rejected_lines(connection: duckdb.DuckDBPyConnection, batches: Sequence[str], *, limit: int) -> list[RejectedLine]:
    """The first ``limit`` rejected lines of ``batches``, by file and line."""
    rows = connection.execute(
        "SELECT source_file, line_number, field, reason FROM task_rejects WHERE list_contains($batches, batch) "
        "ORDER BY source_file, line_number LIMIT $limit",
        {"batches": list(batches), "limit": limit},
    ).fetchall()
    return [RejectedLine(source, line, field, reason) for source, line, field, reason in rows]


def failures_by_error_type(connection: duckdb.DuckDBPyConnection, batches: Sequence[str]) -> list[FailureGroup]:
    """The failed trajectories of ``batches`` by error type, most frequent first.

    The example is the first such task of its file (by batch, line, id): the same whatever
    order the tasks ended in."""
    rows = connection.execute(
        "SELECT r.error_type, count(*), arg_min(r.error_message, (r.batch, t.line_number, r.task_id)) "
        "FROM trajectories r LEFT JOIN tasks t USING (batch, task_id) "
        "WHERE list_contains($batches, r.batch) AND NOT r.success GROUP BY 1 ORDER BY 2 DESC, 1",
        {"batches": list(batches)},
    ).fetchall()
    return [
        FailureGroup(error_type=ErrorType(kind) if kind is not None else None, tasks=n, example=example)
        for kind, n, example in rows
    ]


def synthesis_reports(connection: duckdb.DuckDBPyConnection, batches: Sequence[str]) -> list[SynthesisReport]:
    """One report per batch key, in the order given: what synthesis made from its essences."""
    keys = list(batches)
    accepted = _counts_by_batch(connection, "synthesized_tasks", keys)
    by_stage: dict[str, dict[Stage, int]] = {}
    stages = connection.execute(
        "SELECT batch, stage, count(*) FROM synthesis_rejects WHERE list_contains($batches, batch) "
        "GROUP BY ALL ORDER BY stage",
        {"batches": keys},
    ).fetchall()
    for batch, stage, n in stages:
        by_stage.setdefault(batch, {})[Stage(stage)] = n
    files: dict[str, list[str]] = {}
    written = connection.execute(
        "SELECT DISTINCT batch, task_file FROM synthesized_tasks WHERE list_contains($batches, batch) "
        "ORDER BY task_file",
        {"batches": keys},
    ).fetchall()
    for batch, task_file in written:
        files.setdefault(batch, []).append(task_file)
    return [
        SynthesisReport(
            batch=batch,
            accepted=accepted.get(batch, 0),
            rejected_by_stage=by_stage.get(batch, {}),
            task_files=tuple(files.get(batch, ())),
        )
        for batch in keys
    ]


def _counts_by_batch(connection: duckdb.DuckDBPyConnection, view: _CountedView, batches: list[str]) -> dict[str, int]:
    """The rows of ``view`` per batch of ``batches`` (a batch without any: absent)."""
    rows = connection.execute(
        f"SELECT batch, count(*) FROM {view} WHERE list_contains($batches, batch) GROUP BY 1", {"batches": batches}
    )
    return {batch: n for batch, n in rows.fetchall()}

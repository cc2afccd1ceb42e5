"""The lake side of synthesis: what ``synthesized_tasks`` reads (a batch's essences and their
tasks, the day's spending, how earlier children fared, every known task) and what it writes (the
accepted tasks' files in TASKS_DIR, the rows of ``synthesized_tasks`` and ``synthesis_rejects``,
the dedupe index's place). ``adp_pipeline/synthesize.py`` decides; this module reads and writes.

Rows cross this boundary as dataclasses (:class:`AcceptedTask`, :class:`RejectedCandidate`), never
as loose dicts, so a column is named once, here and in ``tables.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any

from adp_pipeline.storage.lake import Lake
from adp_pipeline.storage.rows import TASK_COLUMNS, named, select, task_from_row
from runtimes.core import RAW_PREVIEW_CHARS, MutationName, TaskSpec, TaskType, write_text_atomically
from synthesis.essence import Essence, SuccessPattern
from synthesis.sampler import Feedback
from synthesis.stages import Stage

ESSENCE_POOL = 5000
"""Essences of one batch the sampler draws from: a draw of a few dozen candidates needs no more."""
_INDEX_FILE = "dedupe-index.npz"


@dataclass(frozen=True)
class EssencePool:
    """A batch's essences: how many it has, and those the sampler may draw from."""

    total: int
    essences: list[Essence]


@dataclass(frozen=True)
class Spent:
    """What synthesis used of the day's budgets (UTC): tasks accepted, tokens spent (rejects included)."""

    tasks: int
    tokens: int


@dataclass(frozen=True)
class BatchRuns:
    """A batch's trajectories and how many of them are verified successes (the essences' source)."""

    trajectories: int
    verified: int


@dataclass(frozen=True)
class AcceptedTask:
    """A row of ``synthesized_tasks``: a task that passed every filter, and the file it is in."""

    task: TaskSpec
    line: str  # its task-file line, as written to ``task_file``
    task_file: Path
    mutation: MutationName
    parent_task_ids: tuple[str, ...]
    essence_ids: tuple[str, ...]
    tokens: int
    created_at: datetime

    def row(self) -> dict[str, Any]:
        return {
            "task_id": self.task.task_id,
            "task_type": self.task.task_type.value,
            "generation": self.task.generation,
            "mutation": self.mutation,
            "parent_task_ids": list(self.parent_task_ids),
            "essence_ids": list(self.essence_ids),
            "description": self.task.description,
            "task": self.line,
            "task_file": str(self.task_file),
            "tokens": self.tokens,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class RejectedCandidate:
    """A row of ``synthesis_rejects``: a candidate, the filter that stopped it and why."""

    candidate_id: str | None  # None when the model gave no task at all
    task_type: TaskType
    mutation: MutationName
    stage: Stage
    reason: str
    parent_task_ids: tuple[str, ...]
    essence_ids: tuple[str, ...]
    description: str | None
    line: str | None  # its task-file line, when ingest's parser accepted it
    tokens: int
    created_at: datetime

    def row(self) -> dict[str, Any]:
        return {
            "candidate_id": self.candidate_id,
            "task_type": self.task_type.value,
            "mutation": self.mutation,
            "stage": self.stage.value,
            "reason": self.reason,
            "parent_task_ids": list(self.parent_task_ids),
            "essence_ids": list(self.essence_ids),
            # A candidate with a valid line has a bounded text; any other, the model's text: a preview.
            "description": self.description if self.line is not None else _preview(self.description),
            "task": self.line,
            "tokens": self.tokens,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class EarlierRows:
    """A batch's synthesis rows from earlier materialisations, as stored (without ``batch``): the
    lake replaces a partition whole, so they are written back with the new ones."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def task_files(self) -> set[str]:
        """The task files they name: never written again, even if someone deleted one."""
        return {str(row["task_file"]) for row in self.accepted}


def index_path(data_dir: Path) -> Path:
    """Where the dedupe index of every known task is saved (and, beside it, its lock)."""
    return Path(data_dir).absolute() / "synthesis" / _INDEX_FILE


def load_essences(lake: Lake, batch: str, pool: int = ESSENCE_POOL) -> EssencePool:
    """How many essences ``batch`` has, and those the sampler draws from: all of them, or for a
    batch of more than ``pool``, a reproducible pseudo-random sample of that many (memory stays flat)."""
    with lake.connect() as connection:
        ((total,),) = connection.execute("SELECT count(*) FROM essences WHERE batch = ?", [batch]).fetchall()
        rows = named(
            connection.execute(
                "SELECT * FROM essences WHERE batch = ? AND essence_id IN (SELECT essence_id FROM essences "
                "WHERE batch = ? ORDER BY hash(essence_id), essence_id LIMIT ?) ORDER BY essence_id",
                [batch, batch, pool],
            )
        )
    essences = [
        Essence.model_validate(
            {**row, "success_pattern": SuccessPattern.model_validate_json(row["success_pattern"])}, strict=False
        )
        for row in rows
    ]
    return EssencePool(int(total), essences)


def batch_runs(lake: Lake, batch: str) -> BatchRuns:
    """How many trajectories ``batch`` has, and how many are verified successes."""
    with lake.connect() as connection:
        ((trajectories, verified),) = connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE verified_success) FROM trajectories WHERE batch = ?", [batch]
        ).fetchall()
    return BatchRuns(int(trajectories), int(verified))


def tasks_of(lake: Lake, batch: str, task_ids: Sequence[str]) -> list[TaskSpec]:
    """The tasks of ``batch`` with these ids (those it has)."""
    with lake.connect() as connection:
        rows = named(
            connection.execute(
                f"SELECT {select(TASK_COLUMNS)} FROM tasks WHERE batch = ? AND task_id IN (SELECT unnest(?))",
                [batch, list(task_ids)],
            )
        )
    return [task_from_row(row) for row in rows]


def spent_today(lake: Lake, now: datetime) -> Spent:
    """What the UTC day of ``now`` has used: every row of the day counts, whatever its batch, a
    batch's earlier materialisations included (their rows are kept), so a re-run resets nothing."""
    midnight = datetime.combine(now.astimezone(UTC).date(), clock_time(), tzinfo=UTC)
    with lake.connect() as connection:
        accepted, accepted_tokens = connection.execute(
            "SELECT count(*), coalesce(sum(tokens), 0) FROM synthesized_tasks WHERE created_at >= ?", [midnight]
        ).fetchone() or (0, 0)
        (rejected_tokens,) = connection.execute(
            "SELECT coalesce(sum(tokens), 0) FROM synthesis_rejects WHERE created_at >= ?", [midnight]
        ).fetchone() or (0,)
    return Spent(int(accepted), int(accepted_tokens) + int(rejected_tokens))


def as_synthesized(lake: Lake, tasks: Sequence[TaskSpec]) -> dict[str, TaskSpec]:
    """``tasks`` by id, each with its lineage only if adp's synthesis wrote it (its id and text
    are in ``synthesized_tasks``): a lineage a person wrote is a claim, and the generation of
    their task is 0 here, so children and the generation limit count only what adp made."""
    claimed = [task.task_id for task in tasks if task.lineage is not None]
    written: set[tuple[str, str]] = set()
    if claimed:
        with lake.connect() as connection:
            rows = connection.execute(
                "SELECT DISTINCT task_id, description FROM synthesized_tasks WHERE task_id IN (SELECT unnest(?))",
                [claimed],
            ).fetchall()
        written = {(str(task_id), str(description)) for task_id, description in rows}
    return {
        task.task_id: task
        if task.lineage is None or (task.task_id, task.description) in written
        else task.model_copy(update={"lineage": None})
        for task in tasks
    }


def feedback(lake: Lake) -> dict[str, Feedback]:
    """By essence id: its accepted children, those that ran, and those verified (all batches)."""
    with lake.connect() as connection:
        rows = connection.execute(
            """
            WITH children AS (SELECT DISTINCT task_id, unnest(essence_ids) AS essence_id FROM synthesized_tasks)
            SELECT c.essence_id, count(DISTINCT c.task_id), count(DISTINCT r.task_id),
                   count(DISTINCT r.task_id) FILTER (WHERE r.verified_success)
            FROM children c LEFT JOIN trajectories r ON r.task_id = c.task_id
            GROUP BY 1
            """
        ).fetchall()
    return {str(essence_id): Feedback(children, ran, verified) for essence_id, children, ran, verified in rows}


def known_tasks(lake: Lake, *, except_batch: str | None = None) -> dict[str, str]:
    """Every known task's text by id: all batches' tasks and every accepted synthesized task
    (written, perhaps not run yet), but those synthesized from ``except_batch``."""
    with lake.connect() as connection:
        rows = connection.execute(
            "SELECT task_id, any_value(description) FROM tasks GROUP BY task_id UNION ALL "
            "SELECT task_id, any_value(description) FROM synthesized_tasks WHERE batch IS DISTINCT FROM ? "
            "GROUP BY task_id",
            [except_batch],
        ).fetchall()
    return {str(task_id): str(description) for task_id, description in rows}


def earlier_rows(lake: Lake, batch: str) -> EarlierRows:
    """``batch``'s rows in both synthesis tables, as stored."""
    with lake.connect() as connection:
        accepted, rejected = (
            named(connection.execute(f"SELECT * EXCLUDE (batch) FROM {table} WHERE batch = ?", [batch]))
            for table in ("synthesized_tasks", "synthesis_rejects")
        )
    return EarlierRows(accepted, rejected)


def write_task_files(tasks_dir: Path, batch: str, lines: dict[int, list[str]], taken: set[str]) -> dict[int, Path]:
    """One task file per generation of ``lines`` (task-file lines by generation), written aside and
    renamed into place (the sensor never reads half a file); the path of each, by generation.

    The name is ``synth-<batch>-g<N>.jsonl`` or, when that file exists or is in ``taken`` (an
    earlier materialisation of the batch wrote it), ``synth-<batch>-g<N>-r<M>.jsonl`` with the
    first free ``M`` from 2: a task file adp wrote is never replaced.
    """
    folder = Path(tasks_dir).absolute()
    written: dict[int, Path] = {}
    for generation, generation_lines in sorted(lines.items()):
        if not generation_lines:
            continue
        stem = f"synth-{batch}-g{generation}"
        target = folder / f"{stem}.jsonl"
        rerun = 1
        while target.exists() or str(target) in taken:
            rerun += 1
            target = folder / f"{stem}-r{rerun}.jsonl"
        write_text_atomically(target, "".join(f"{line}\n" for line in generation_lines))
        written[generation] = target
    return written


def store_candidates(
    lake: Lake,
    batch: str,
    earlier: EarlierRows,
    accepted: Sequence[AcceptedTask],
    rejected: Sequence[RejectedCandidate],
) -> None:
    """``batch``'s partitions of both tables become their ``earlier`` rows plus these: what an
    earlier materialisation accepted (and spent) is kept."""
    lake.write_partition("synthesized_tasks", batch, [*earlier.accepted, *(task.row() for task in accepted)])
    lake.write_partition("synthesis_rejects", batch, [*earlier.rejected, *(reject.row() for reject in rejected)])


def _preview(text: str | None) -> str | None:
    """At most RAW_PREVIEW_CHARS of a text that was not accepted as a task (as ingest keeps of a
    rejected line), with anything that is not UTF-8 escaped: a model's text may be neither short
    nor valid."""
    if text is None:
        return None
    return text[:RAW_PREVIEW_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")

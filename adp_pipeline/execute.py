"""Run one batch's tasks and store their trajectories: the work behind the ``trajectories`` asset."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adp_pipeline.storage import Lake
from adp_pipeline.storage.names import task_file_stem
from adp_pipeline.storage.rows import TASK_COLUMNS, named, select, step_rows, task_from_row, trajectory_row
from runtimes import scale
from runtimes.agent import AgentLimits, run_tasks
from runtimes.core import TaskSpec, TaskType, Trajectory
from runtimes.settings import Settings


@dataclass(frozen=True)
class TypeOutcome:
    tasks: int
    succeeded: int  # verified successes: the ``trajectories`` view's ``verified_success``

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.tasks if self.tasks else 0.0


@dataclass(frozen=True)
class ExecuteSummary:
    batch: str
    policy: str
    by_type: dict[str, TypeOutcome]
    error_types: dict[str, int]
    llm_calls: int
    llm_retries: int


def load_tasks(lake: Lake, batch: str) -> list[TaskSpec]:
    """The accepted tasks of ``batch``, in file order."""
    with lake.connect() as connection:
        cursor = connection.execute(
            f"SELECT {select(TASK_COLUMNS)} FROM tasks WHERE batch = ? ORDER BY line_number", [batch]
        )
        return [task_from_row(row) for row in named(cursor)]


def execute_batch(
    lake: Lake, batch: str, settings: Settings, on_done: Callable[[Trajectory], None] | None = None
) -> ExecuteSummary:
    """Run every task of ``batch`` with ``settings.policy``; replace its trajectories and steps."""
    tasks = load_tasks(lake, batch)
    trajectories = run_task_specs(batch, tasks, settings, on_done)
    created_at = datetime.now(UTC)
    rows = [trajectory_row(t, created_at) for t in trajectories]
    _store(lake, batch, trajectories, rows, settings.output_dir / "trajectories")
    # Counted by the lake's view, as every other count is: one definition of a verified success.
    with lake.connect() as connection:
        counted = connection.execute(
            "SELECT task_type, count(*), count(*) FILTER (WHERE verified_success) FROM trajectories "
            "WHERE batch = ? GROUP BY 1",
            [batch],
        ).fetchall()
    outcomes = {task_type: TypeOutcome(n, verified) for task_type, n, verified in counted}
    by_type = {task_type.value: outcomes.get(task_type.value, TypeOutcome(0, 0)) for task_type in TaskType}
    return ExecuteSummary(
        batch=batch,
        policy=settings.policy,
        by_type=by_type,
        error_types=dict(Counter(t.error_type.value for t in trajectories if t.error_type)),
        llm_calls=sum(row["llm_calls"] for row in rows),
        llm_retries=sum(row["llm_retries"] for row in rows),
    )


def run_task_specs(
    batch: str, tasks: list[TaskSpec], settings: Settings, on_done: Callable[[Trajectory], None] | None = None
) -> list[Trajectory]:
    """One trajectory per task, in order, with ``settings.policy``: in this process (local mode)
    or on `adp worker`s (redis mode, under ``batch``'s result stream). Nothing is stored."""
    if settings.mode == "redis":
        return _run_on_workers(batch, tasks, settings, on_done)
    return asyncio.run(_run(tasks, settings, on_done))


async def _run(
    tasks: list[TaskSpec], settings: Settings, on_done: Callable[[Trajectory], None] | None
) -> list[Trajectory]:
    sandbox = settings.sandbox_config.build(settings.max_concurrent_tasks)
    limits = AgentLimits(token_budget=settings.token_budget)
    browser = settings.browser_config.build()
    try:
        async with settings.policy_config.open(settings.policy, tasks) as policy:
            return await run_tasks(
                tasks,
                policy,
                sandbox,
                max_concurrent=settings.max_concurrent_tasks,
                limits=limits,
                on_done=on_done,
                browser=browser,
            )
    finally:
        await sandbox.aclose()
        await browser.aclose()


def _run_on_workers(
    batch: str, tasks: list[TaskSpec], settings: Settings, on_done: Callable[[Trajectory], None] | None
) -> list[Trajectory]:
    """Enqueue the batch for `adp worker`s and collect one trajectory per task.

    Raises:
        DeadlineError: not every task had a result within ADP_REDIS_DEADLINE.
    """
    config = scale.BrokerConfig.from_settings(settings)
    client = config.connect()
    client.delete(scale.result_stream(batch))  # a rerun of the batch collects its own results
    scale.enqueue(client, batch, tasks, settings.policy)
    results = scale.collect(
        client, batch, [task.task_id for task in tasks], deadline_s=config.deadline, on_result=on_done
    )
    return [results[task.task_id] for task in tasks]


def _store(lake: Lake, batch: str, trajectories: list[Trajectory], rows: list[dict[str, Any]], output: Path) -> None:
    """Write the batch's per-task JSON files and its lake partitions, all or nothing visible.

    The JSON files are written to a staging folder first, so a failure (a full disk, say) stops
    before the lake changes; ``trajectories`` is written last, after ``steps``, since it is
    what the checks and readers count; then the files are renamed into place.
    """
    staging = output / f".staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        for trajectory in trajectories:
            (staging / f"{task_file_stem(trajectory.task_id)}.json").write_text(trajectory.model_dump_json(indent=2))
        lake.write_partition("steps", batch, [row for t in trajectories for row in step_rows(t)])
        lake.write_partition("trajectories", batch, rows)
        for path in staging.iterdir():
            os.replace(path, output / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""Distil a batch's verified trajectories into essences: the work behind the ``task_essences`` asset."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adp_pipeline.execute import load_tasks
from adp_pipeline.storage import Lake
from adp_pipeline.storage.rows import STEP_COLUMNS, named, select, step_from_row
from runtimes.core import (
    ConfigError,
    EssenceExtractionError,
    LLMError,
    Step,
    TaskSpec,
    VerifierResult,
)
from runtimes.llm import HOW_TO_CONFIGURE
from runtimes.settings import Settings
from synthesis.essence import Essence, extract_structural, extract_with_model


@dataclass(frozen=True)
class EssenceSummary:
    batch: str
    trajectories: int
    essences: list[Essence]  # one per verified trajectory
    model_failures: list[str]  # tasks whose model extraction failed: they kept the structural essence

    @property
    def by_type(self) -> dict[str, int]:
        return dict(Counter(essence.task_type.value for essence in self.essences))


def extract_batch_essences(lake: Lake, batch: str, settings: Settings) -> EssenceSummary:
    """One essence per verified trajectory of ``batch`` (ADP_ESSENCE_EXTRACTOR); replaces its partition.

    Raises:
        ConfigError: the llm extractor is chosen and no model is configured.
    """
    tasks = {task.task_id: task for task in load_tasks(lake, batch)}
    with lake.connect() as connection:
        trajectories = connection.execute(
            "SELECT task_id, verifier, verified_success FROM trajectories WHERE batch = ?",
            [batch],
        ).fetchall()
        step_rows = named(
            connection.execute(
                f"SELECT {select(STEP_COLUMNS)} FROM steps WHERE batch = ? ORDER BY task_id, step_id", [batch]
            )
        )
    steps: dict[str, list[Step]] = defaultdict(list)
    for row in step_rows:
        steps[row["task_id"]].append(step_from_row(row))
    inputs = [
        (tasks[task_id], steps[task_id], VerifierResult.model_validate_json(verifier))
        for task_id, verifier, verified in trajectories
        if verified and task_id in tasks
    ]
    failures: list[str] = []
    if settings.essence_extractor == "llm":
        essences = asyncio.run(_with_model(inputs, batch, settings, failures))
    else:
        essences = [extract_structural(task, batch, task_steps, verifier) for task, task_steps, verifier in inputs]
    created_at = datetime.now(UTC)
    lake.write_partition("essences", batch, [_row(essence, created_at) for essence in essences])
    return EssenceSummary(batch, len(trajectories), essences, failures)


async def _with_model(
    inputs: list[tuple[TaskSpec, list[Step], VerifierResult]], batch: str, settings: Settings, failures: list[str]
) -> list[Essence]:
    endpoint = settings.llm_config.endpoint()
    if endpoint is None:
        raise ConfigError(f"ADP_ESSENCE_EXTRACTOR=llm needs a model: {HOW_TO_CONFIGURE}")
    client = settings.llm_config.client(endpoint, settings.llm_cache)

    async def one(task: TaskSpec, task_steps: list[Step], verifier: VerifierResult) -> Essence:
        try:
            return await extract_with_model(client, task, batch, task_steps, verifier)
        except (EssenceExtractionError, LLMError):
            failures.append(task.task_id)
            return extract_structural(task, batch, task_steps, verifier)

    try:
        return list(await asyncio.gather(*(one(*item) for item in inputs)))
    finally:
        await client.aclose()


def _row(essence: Essence, created_at: datetime) -> dict[str, Any]:
    return {
        **essence.model_dump(exclude={"success_pattern", "task_type"}),
        "task_type": essence.task_type.value,
        "success_pattern": essence.success_pattern.model_dump_json(),
        "created_at": created_at,
    }

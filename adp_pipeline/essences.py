"""Distil a batch's verified trajectories into essences: the work behind the ``task_essences`` asset."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from adp_pipeline.storage import Lake
from adp_pipeline.storage.rows import STEP_COLUMNS, TASK_COLUMNS, named, select, step_from_row, task_from_row
from runtimes.core import (
    ConfigError,
    EssenceExtractionError,
    LLMError,
    Step,
    TaskSpec,
    VerifierResult,
)
from runtimes.llm import HOW_TO_CONFIGURE, LLMEndpoint
from runtimes.settings import Settings
from synthesis.essence import Essence, extract_structural, extract_with_model

_CHUNK_TASKS = 1000


@dataclass
class EssenceSummary:
    batch: str
    trajectories: int = 0
    essences: int = 0  # one per verified trajectory
    by_type: Counter[str] = field(default_factory=Counter)
    sample: Essence | None = None
    model_failures: list[str] = field(default_factory=list)  # tasks whose model extraction failed: structural


def extract_batch_essences(lake: Lake, batch: str, settings: Settings) -> EssenceSummary:
    """One essence per verified trajectory of ``batch`` (ADP_ESSENCE_EXTRACTOR); replaces its partition.

    Works through the batch a thousand verified trajectories at a time (their tasks and steps
    read for them alone), so memory stays flat however large the batch.

    Raises:
        ConfigError: the llm extractor is chosen and no model is configured, or the LLM settings
            contradict each other; raised before anything is read or written.
    """
    summary = EssenceSummary(batch)
    endpoint = extractor_endpoint(settings)
    created_at = datetime.now(UTC)

    def rows() -> Iterator[dict[str, Any]]:
        with lake.connect() as listing, lake.connect() as lookup:
            ((summary.trajectories,),) = listing.execute(
                "SELECT count(*) FROM trajectories WHERE batch = ?", [batch]
            ).fetchall()
            verified = listing.sql(
                "SELECT task_id, verifier FROM trajectories WHERE batch = ? AND verified_success ORDER BY task_id",
                params=[batch],
            ).to_arrow_reader(_CHUNK_TASKS)
            for chunk in verified:
                verifiers = {row["task_id"]: row["verifier"] for row in chunk.to_pylist()}
                for essence in _essences(lookup, batch, verifiers, settings, endpoint, summary.model_failures):
                    summary.essences += 1
                    summary.by_type[essence.task_type.value] += 1
                    if summary.sample is None:
                        summary.sample = essence
                    yield _row(essence, created_at)

    lake.write_partition("essences", batch, rows())
    return summary


def extractor_endpoint(settings: Settings) -> LLMEndpoint | None:
    """The model the llm extractor uses (None for the structural one); a ConfigError naming
    ADP_ESSENCE_EXTRACTOR when it needs one and there is none. A run checks it at its first step.

    The one place essences read the endpoint: the llm extractor needs a model whatever the run's
    policy, so contradictory LLM settings fail this step with the setting that asked for a model
    and the one that is wrong, rather than with a bare error from the LLM settings.
    """
    if settings.essence_extractor != "llm":
        return None
    try:
        endpoint = settings.llm_config.endpoint()
    except ConfigError as exc:
        raise ConfigError(f"ADP_ESSENCE_EXTRACTOR=llm needs a model: {exc}") from exc
    if endpoint is None:
        raise ConfigError(f"ADP_ESSENCE_EXTRACTOR=llm needs a model: {HOW_TO_CONFIGURE}")
    return endpoint


def _essences(
    connection: duckdb.DuckDBPyConnection,
    batch: str,
    verifiers: dict[str, str],
    settings: Settings,
    endpoint: LLMEndpoint | None,
    failures: list[str],
) -> list[Essence]:
    """The essences of one chunk of verified trajectories (task id → verifier JSON), by the model
    at ``endpoint`` (the llm extractor) or structurally (None)."""
    ids = list(verifiers)
    tasks = {
        row["task_id"]: task_from_row(row)
        for row in named(
            connection.execute(
                f"SELECT {select(TASK_COLUMNS)} FROM tasks WHERE batch = ? AND task_id IN (SELECT unnest(?))",
                [batch, ids],
            )
        )
    }
    steps: dict[str, list[Step]] = defaultdict(list)
    for row in named(
        connection.execute(
            f"SELECT {select(STEP_COLUMNS)} FROM steps WHERE batch = ? AND task_id IN (SELECT unnest(?)) "
            "ORDER BY task_id, step_id",
            [batch, ids],
        )
    ):
        steps[row["task_id"]].append(step_from_row(row))
    inputs = [
        (tasks[task_id], steps[task_id], VerifierResult.model_validate_json(verifier))
        for task_id, verifier in verifiers.items()
        if task_id in tasks
    ]
    if endpoint is not None:
        return asyncio.run(_with_model(inputs, batch, settings, endpoint, failures))
    return [extract_structural(task, batch, task_steps, verifier) for task, task_steps, verifier in inputs]


async def _with_model(
    inputs: list[tuple[TaskSpec, list[Step], VerifierResult]],
    batch: str,
    settings: Settings,
    endpoint: LLMEndpoint,
    failures: list[str],
) -> list[Essence]:
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

"""Task essences (seed 004): what a verified trajectory shows about its task, stated so that new
tasks can be made from it.

The ``structural`` extractor needs no model: it reads the task and the recorded tool calls
(type, tools, step count, verifier kind, key steps), so the essence table is never empty for
lack of a model. A model-based extractor fills ``domain``, a general ``query`` and the pattern
on top of the same record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field

from runtimes.core import EssenceExtractionError, Step, StructuredAnswerError, TaskSpec, TaskType, VerifierResult
from runtimes.llm import LLMClient
from synthesis.structured import DEFAULT_ATTEMPTS, ask, system_prompt

STRUCTURAL = "structural"
_KEY_STEP_CHARS = 160


class SuccessPattern(BaseModel):
    """How the task was solved: the steps that mattered, their shape, and what proved success."""

    key_steps: list[str]
    execution_pattern: str
    success_indicators: list[str]


class Essence(BaseModel):
    """One verified trajectory's task, distilled (a row of the ``essences`` table)."""

    essence_id: str
    task_id: str
    task_type: TaskType
    generation: int
    domain: str | None = None
    query: str
    complexity: Annotated[int, Field(ge=1, le=5)]
    tools: list[str]
    n_steps: int
    success_pattern: SuccessPattern
    verifier_kind: str
    extractor: str
    prompt_hash: str | None = None


def essence_id(task_id: str, batch: str, extractor: str) -> str:
    """Stable per (task, batch, extractor): re-extracting a batch replaces, never duplicates."""
    return hashlib.sha256(f"{batch}\0{task_id}\0{extractor}".encode()).hexdigest()[:16]


def extract_structural(task: TaskSpec, batch: str, steps: Sequence[Step], verifier: VerifierResult) -> Essence:
    """The essence of ``task`` from its verified trajectory's ``steps``, without a model.

    Args:
        task: the task as it was run.
        batch: the partition it ran in (part of the essence's id).
        steps: the trajectory's recorded steps, in order.
        verifier: the verifier's result; it must have passed.

    Raises:
        ValueError: the trajectory was not verified (essences come from verified work only).
    """
    if not verifier.passed:
        raise ValueError(f"task {task.task_id!r}: essences come from verified trajectories only")
    good = [step for step in steps if step.success]
    tools = list(dict.fromkeys(step.tool for step in good))
    checks = sorted(name for name, passed in verifier.checks.items() if passed)
    return Essence(
        essence_id=essence_id(task.task_id, batch, STRUCTURAL),
        task_id=task.task_id,
        task_type=task.task_type,
        generation=task.generation,
        query=task.description,
        complexity=_complexity(len(good)),
        tools=tools,
        n_steps=len(steps),
        success_pattern=SuccessPattern(
            key_steps=[_key_step(step) for step in good],
            execution_pattern=_pattern([step.tool for step in good]),
            success_indicators=checks,
        ),
        verifier_kind="+".join(checks),
        extractor=STRUCTURAL,
    )


def _complexity(successful_steps: int) -> int:
    """1 for a single action, up to 5 for long solutions (11 steps or more)."""
    for level, most in enumerate((1, 3, 6, 10), start=1):
        if successful_steps <= most:
            return level
    return 5


def _key_step(step: Step) -> str:
    params: dict[str, Any] = dict(step.action_params)
    if step.tool == "python_executor":
        code = str(params.get("code", ""))
        return f"python_executor: {len(code.splitlines())} lines of Python"
    if step.tool == "browser":
        action = params.pop("action", "?")
        detail = json.dumps(params, ensure_ascii=False, sort_keys=True)
        return f"browser.{action} {detail}"[:_KEY_STEP_CHARS]
    return step.tool


def _pattern(tools: Sequence[str]) -> str:
    """``browser*3 → python_executor → complete_task``: the tools in order, repeats folded."""
    runs: list[tuple[str, int]] = []
    for tool in tools:
        if runs and runs[-1][0] == tool:
            runs[-1] = (tool, runs[-1][1] + 1)
        else:
            runs.append((tool, 1))
    return " → ".join(tool if count == 1 else f"{tool}*{count}" for tool, count in runs)


class ModelEssence(BaseModel):
    """What the model adds to the record: the JSON object it must answer with."""

    domain: str = Field(description="A short domain label, e.g. math_algorithms, data_processing, web_automation.")
    query: str = Field(description="The task stated generally, without this instance's particular values.")
    complexity: Annotated[int, Field(ge=1, le=5, description="1 (one simple step) to 5 (long, many constraints).")]
    success_pattern: SuccessPattern


EXTRACT_INSTRUCTIONS = (
    "You distil a solved agent task into its essence, so that new tasks of the same kind can be "
    "made from it. You get the task, the tools its solution used, the steps that succeeded and "
    "what verified it."
)


async def extract_with_model(
    client: LLMClient,
    task: TaskSpec,
    batch: str,
    steps: Sequence[Step],
    verifier: VerifierResult,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Essence:
    """The essence of ``task``, with domain, a general query, complexity and pattern from a model.

    The record's facts (type, tools, step count, verifier kind) stay those of the structural
    extractor; the model states the rest as a :class:`ModelEssence` (see
    :func:`synthesis.structured.ask`: validated, retried, and cached through ``client``).

    Raises:
        EssenceExtractionError: no valid answer within ``attempts``.
        LLMError: the model could not be asked.
    """
    base = extract_structural(task, batch, steps, verifier)
    system, prompt_hash = system_prompt(EXTRACT_INSTRUCTIONS, ModelEssence)
    user = (
        f"Task ({task.task_type.value}, id {task.task_id}): {task.description}\n"
        f"Tools used: {', '.join(base.tools)}\nSteps that succeeded:\n"
        + "".join(f"- {step}\n" for step in base.success_pattern.key_steps)
        + f"Verified by: {base.verifier_kind}"
    )
    try:
        found = await ask(client, system, user, ModelEssence, attempts=attempts)
    except StructuredAnswerError as exc:
        raise EssenceExtractionError(f"task {task.task_id!r}: no valid essence: {exc}") from exc
    return base.model_copy(
        update={
            "essence_id": essence_id(task.task_id, batch, client.endpoint.model),
            "domain": found.domain,
            "query": found.query,
            "complexity": found.complexity,
            "success_pattern": found.success_pattern,
            "extractor": client.endpoint.model,
            "prompt_hash": prompt_hash,
        }
    )

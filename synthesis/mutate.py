"""Mutation operators (seed 004; Evol-Instruct and TaskCraft show how): new candidate tasks from
essences, each with its own check and gold solution, so that it can be verified by execution
before it is accepted.

- ``parameter``: the same shape with new values;
- ``complexity``: in depth, one more constraint or step;
- ``breadth``: a new task in the same domain and pattern;
- ``composition``: two essences chained, the output of the first the input of the second.

The model answers a :class:`CandidateAnswer` (validated, retried, cached: see
:mod:`synthesis.structured`); :func:`mutate` turns it into a :class:`TaskSpec` with its
``lineage``, whose ``reference_tool_calls`` are the gold solution the oracle replays and whose
``verify`` is the candidate's own check. Web tasks are mutated on adp's own example site only
(``http://adp.local/``: the answer is a start page, the browser actions that solve the task and
a page, URL or answer check, a :class:`WebCandidateAnswer`); MiniWoB++ episodes are reseeded
without a model (:mod:`synthesis.reseed`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError

from runtimes.core import (
    BrowserArgs,
    CandidateError,
    MutationName,
    StructuredAnswerError,
    TaskSpec,
    TaskType,
    TokenUsage,
    parse_browser_action,
)
from runtimes.llm import LLMClient
from synthesis.essence import Essence
from synthesis.structured import DEFAULT_ATTEMPTS, ask, system_prompt

MODEL_OPERATORS: tuple[MutationName, ...] = ("parameter", "complexity", "breadth", "composition")
OPERATOR_INSTRUCTIONS: dict[str, str] = {
    "parameter": "Write a new task of exactly the same shape as the given one, with new values.",
    "complexity": "Write a harder version of the given task: one more constraint or one more step.",
    "breadth": "Write a different task in the same domain that is solved with the same pattern.",
    "composition": "Write one task that chains the given tasks: the output of the first is the input of the second.",
}
MUTATION_INSTRUCTIONS = (
    "You write new tasks for an agent that solves them with a sandboxed Python interpreter "
    "(standard library only, no network, no files but /tmp). The task must carry its own proof: "
    "a gold solution (Python code that solves it and prints the answer), and a check that the "
    "gold solution passes and a wrong solution fails: python_tests (assert statements run after "
    "the solution's code) and/or the expected_answer the agent must give."
)


WEB_MUTATION_INSTRUCTIONS = (
    "You write new tasks for an agent that drives a browser on adp's example shop (pages under "
    "http://adp.local/, offline; no other site can be reached). The task must carry its own proof: "
    "the start page, the browser actions that solve it (the browser tool's arguments, in order), and "
    "a check that those actions pass and doing nothing fails: page_contains (text the page shows "
    "only after the actions), url_contains, and/or the expected_answer the agent must give."
)

ADP_SITE = "adp.local"


def on_adp_site(task: TaskSpec) -> bool:
    """A web task that starts on adp's own example site (where web mutation may make tasks)."""
    start = task.constraints.start_url
    return start is not None and urlsplit(start).hostname == ADP_SITE


class CandidateAnswer(BaseModel):
    """The model's new task: what the agent is told, the gold solution, and its check."""

    description: Annotated[str, Field(min_length=1, description="The task as the agent will read it.")]
    solution_code: Annotated[str, Field(min_length=1, description="Python that solves it and prints the answer.")]
    answer: str = Field(description="The answer the gold solution gives (what complete_task is called with).")
    python_tests: str | None = Field(None, description="Asserts run after the solution's code; None if none.")
    expected_answer: str | None = Field(None, description="The answer the check requires; None if none.")
    max_steps: Annotated[int, Field(ge=2, le=30)] = 6

    def task_fields(self, task_type: TaskType) -> dict[str, Any]:
        """The task line's tools, constraints and text; CandidateError (validation) without a check."""
        if self.python_tests is None and self.expected_answer is None:
            raise CandidateError(
                "validation", "the task has no check (neither python_tests nor expected_answer)", self.description
            )
        verify = {key: value for key, value in self.model_dump(include={"python_tests", "expected_answer"}).items()}
        tools = ["python_executor"] if task_type is TaskType.CODE else ["browser", "python_executor"]
        calls = [
            {"name": "python_executor", "arguments": {"code": self.solution_code}},
            {"name": "complete_task", "arguments": {"answer": self.answer}},
        ]
        return _fields(self.description, tools, self.max_steps, calls, verify)


class WebCandidateAnswer(BaseModel):
    """The model's new web task on adp's example site: start page, gold actions, and check."""

    description: Annotated[str, Field(min_length=1, description="The task as the agent will read it.")]
    start_url: str = Field(description="The page the task starts on, under http://adp.local/.")
    actions: Annotated[list[BrowserArgs], Field(min_length=1, description="The browser calls that solve it.")]
    answer: str = Field(description="What complete_task is called with after the actions.")
    page_contains: str | None = Field(None, description="Text the page shows after the actions; None if none.")
    url_contains: str | None = Field(None, description="Text in the URL after the actions; None if none.")
    expected_answer: str | None = Field(None, description="The answer the check requires; None if none.")
    max_steps: Annotated[int, Field(ge=2, le=30)] = 8

    def task_fields(self, task_type: TaskType) -> dict[str, Any]:
        """The task line's tools, constraints and text; CandidateError (validation) when the task
        has no check, starts off adp's site, or an action lacks what it needs."""
        checks = self.model_dump(include={"page_contains", "url_contains", "expected_answer"})
        if not any(value is not None for value in checks.values()):
            raise CandidateError(
                "validation",
                "the task has no check (none of page_contains, url_contains, expected_answer)",
                self.description,
            )
        if urlsplit(self.start_url).hostname != ADP_SITE:
            raise CandidateError(
                "validation", f"start_url {self.start_url!r} is not a page of http://{ADP_SITE}/", self.description
            )
        calls: list[dict[str, Any]] = []
        for position, action in enumerate(self.actions):
            arguments = action.model_dump(exclude_none=True)
            try:
                parse_browser_action(arguments)
            except ValidationError as exc:
                problem = exc.errors(include_url=False)[0]["msg"]
                raise CandidateError("validation", f"actions.{position}: {problem}", self.description) from None
            calls.append({"name": "browser", "arguments": arguments})
        calls.append({"name": "complete_task", "arguments": {"answer": self.answer}})
        fields = _fields(self.description, ["browser"], self.max_steps, calls, checks)
        fields["constraints"]["start_url"] = self.start_url
        return fields


def _fields(
    description: str, tools: list[str], max_steps: int, calls: list[dict[str, Any]], verify: dict[str, Any]
) -> dict[str, Any]:
    return {
        "description": description,
        "expected_tools": tools,
        "max_steps": max_steps,
        "constraints": {
            "reference_tool_calls": calls,
            "verify": {key: value for key, value in verify.items() if value is not None},
        },
    }


async def mutate(
    client: LLMClient,
    operator: MutationName,
    essences: Sequence[Essence],
    parents: Sequence[TaskSpec],
    *,
    created_at: datetime,
    attempts: int = DEFAULT_ATTEMPTS,
    usage: TokenUsage | None = None,
) -> TaskSpec:
    """One candidate task from ``essences`` (two for ``composition``, else one) and their tasks;
    the tokens spent are added to ``usage`` when given.

    Raises:
        CandidateError: stage ``model`` (no valid answer) or ``validation`` (the answer is not
            a valid task: no check at all, or a field the task format refuses).
        LLMError: the model could not be asked.
    """
    if operator not in MODEL_OPERATORS:
        raise ValueError(f"{operator!r} is not a model operator; one of {', '.join(MODEL_OPERATORS)}")
    wanted = 2 if operator == "composition" else 1
    if len(essences) != wanted or len(parents) != wanted:
        raise ValueError(f"{operator} takes {wanted} essence(s) and their task(s)")
    task_type = parents[0].task_type
    if any(parent.task_type is not task_type for parent in parents):
        raise ValueError("the parents of one candidate are of one task type")
    web = task_type is TaskType.WEB
    if web and not all(on_adp_site(parent) for parent in parents):
        raise ValueError(f"web tasks are mutated only on http://{ADP_SITE}/; MiniWoB++ episodes are reseeded")
    shape: type[CandidateAnswer | WebCandidateAnswer] = WebCandidateAnswer if web else CandidateAnswer
    instructions = WEB_MUTATION_INSTRUCTIONS if web else MUTATION_INSTRUCTIONS
    system, prompt_hash = system_prompt(f"{instructions}\n{OPERATOR_INSTRUCTIONS[operator]}", shape)
    user = "\n\n".join(_describe(essence, parent) for essence, parent in zip(essences, parents, strict=True))
    try:
        answer = await ask(client, system, user, shape, attempts=attempts, usage=usage)
    except StructuredAnswerError as exc:
        raise CandidateError("model", str(exc)) from exc
    generation = max(parent.generation for parent in parents) + 1
    line = {
        **answer.task_fields(task_type),
        "task_id": candidate_id(parents, operator, generation, answer.description),
        "task_type": task_type.value,
        "timeout": max(parent.timeout for parent in parents),
        "lineage": {
            "parent_task_ids": [parent.task_id for parent in parents],
            "essence_ids": [essence.essence_id for essence in essences],
            "mutation": operator,
            "generation": generation,
            "model": client.endpoint.model,
            "prompt_hash": prompt_hash,
            "created_at": created_at.isoformat(),
        },
    }
    try:
        return TaskSpec.model_validate(line, strict=False)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CandidateError("validation", f"{where}: {first['msg']}", answer.description) from None


def candidate_id(parents: Sequence[TaskSpec], operator: str, generation: int, description: str) -> str:
    """``<first parent, shortened>-<operator>-g<N>-<hash>``: readable, unique per text, within the id limit."""
    digest = hashlib.sha256(description.encode()).hexdigest()[:8]
    return f"{parents[0].task_id[:120]}-{operator}-g{generation}-{digest}"


def _describe(essence: Essence, parent: TaskSpec) -> str:
    pattern = essence.success_pattern
    text = (
        f"Task ({parent.task_type.value}): {parent.description}\n"
        f"Essence: domain {essence.domain or 'unknown'}; {essence.query}; complexity {essence.complexity}/5; "
        f"solved as {pattern.execution_pattern}; verified by {essence.verifier_kind}"
    )
    if parent.task_type is TaskType.WEB:
        actions = [c.arguments for c in parent.constraints.reference_tool_calls or [] if c.name == "browser"]
        text += f"\nStart page: {parent.constraints.start_url}\nSolved with the browser calls: {json.dumps(actions)}"
    return text

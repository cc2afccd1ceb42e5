"""The wire format: tasks in, trajectories out.

Every record adp writes carries ``schema_version`` so that data outlives the code that made it.
TaskSpec validates one line of a task file exactly as the seed documents define it and
rejects anything else with the field at fault named; Step and Trajectory are the seeds'
trajectory record (DESIGN.md §7) plus the OpenAI-format ``messages`` and ``tools``.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runtimes.core._allowlist import parse_endpoint
from runtimes.core._errors import ErrorType, InvalidURLError

RUNTIME_ID = f"{socket.gethostname()}-{os.getpid()}"
"""Names the process that ran a task, in its trajectory."""
SCHEMA_VERSION = 1

ToolName = Literal["browser", "python_executor", "complete_task"]
# Names the seed documents use for adp's tools; a task line may say either.
TOOL_ALIASES: dict[str, ToolName] = {"web_search": "browser"}

_TASK_ID_MAX_CHARS = 200


class TaskType(StrEnum):
    CODE = "code"
    WEB = "web"
    REASONING = "reasoning"


class ActionType(StrEnum):
    CODE_EXECUTION = "code_execution"
    BROWSER_ACTION = "browser_action"
    TOOL_CALL = "tool_call"


class _TaskField(BaseModel):
    """Strict parsing: a task file is data a person wrote, so "5" is not 5 and typos are errors.
    A float is finite: an integer too large for a double (400 digits) would be read as infinity,
    from a task file, a model's answer or a Redis message alike."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class ReferenceToolCall(_TaskField):
    """One tool call of a gold demonstration, replayed in order by the ``oracle`` policy."""

    name: ToolName
    arguments: dict[str, Any] = Field(default_factory=dict)


class Verify(_TaskField):
    """How success is checked; each key present must hold."""

    expected_answer: str | None = None
    python_tests: str | None = None
    page_contains: str | None = None
    url_contains: str | None = None
    miniwob_reward: float | None = None


class MiniwobEpisode(_TaskField):
    task: Annotated[str, Field(min_length=1)]
    seed: int = 0


class SandboxOverrides(_TaskField):
    """A task's overrides of the sandbox's per-execution limits (``constraints.sandbox``).

    ``memory_mb`` is all the memory of an execution, its /tmp and /dev/shm included; below 64
    the interpreter cannot start. The upper bound here is the format's: the deployment's
    ceiling (ADP_SANDBOX_MAX_MEMORY_MB) is applied at ingest (``parse_task_file``).
    """

    timeout: Annotated[float, Field(gt=0, le=3600)] | None = None
    memory_mb: Annotated[int, Field(ge=64, le=65536)] | None = None


class Constraints(_TaskField):
    """The keys of a task's ``constraints`` (DESIGN.md §9); all optional and strictly validated.

    The seeds define ``constraints`` as a free dictionary, so other keys are kept as they are
    (``model_extra``) and reported as warnings by the task-file parser, not rejected.
    """

    model_config = ConfigDict(extra="allow")

    reference_tool_calls: list[ReferenceToolCall] | None = None
    verify: Verify | None = None
    start_url: str | None = None
    allowed_urls: list[str] | None = None
    miniwob: MiniwobEpisode | None = None
    sandbox: SandboxOverrides | None = None

    @field_validator("allowed_urls")
    @classmethod
    def _urls_are_rules(cls, value: list[str] | None) -> list[str] | None:
        for url in value or []:
            try:
                parse_endpoint(url)
            except InvalidURLError as exc:
                raise ValueError(f"{url!r} cannot be an allowed URL: {exc}") from None
        return value

    @field_validator("start_url")
    @classmethod
    def _start_url_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_endpoint(value)
            except InvalidURLError as exc:
                raise ValueError(f"{value!r} cannot be a start URL: {exc}") from None
        return value


MutationName = Literal["parameter", "complexity", "breadth", "composition", "miniwob_reseed"]

# Who acts in the agent loop (ADP_POLICY): replays reference calls, the scripted mock server, or a model.
PolicyName = Literal["oracle", "mock", "llm"]
# When the web runtime takes a JPEG of the page (ADP_SCREENSHOTS): after every browser action,
# after a task's last one only, or never.
ScreenshotMode = Literal["every", "final", "off"]


class Lineage(_TaskField):
    """Where a synthesized task came from: its parents, the mutation that made it, its generation."""

    parent_task_ids: Annotated[list[str], Field(min_length=1)]
    essence_ids: list[str] = Field(default_factory=list)
    mutation: MutationName
    generation: Annotated[int, Field(ge=1, le=1000)]
    model: str | None = None
    prompt_hash: str | None = None
    created_at: datetime


class TaskSpec(_TaskField):
    """One task: a line of a task file.

    Required: task_id, task_type, description, expected_tools, max_steps.
    Optional: timeout (seconds, default 300), priority (1-10, default 1), constraints, and
    ``lineage`` for a synthesized task (absent on the tasks people write: generation 0).
    """

    task_id: str
    task_type: TaskType
    description: str
    expected_tools: Annotated[list[ToolName], Field(min_length=1)]
    max_steps: Annotated[int, Field(ge=1, le=1000)]
    timeout: Annotated[int, Field(ge=1, le=86400)] = 300
    priority: Annotated[int, Field(ge=1, le=10)] = 1
    constraints: Constraints = Field(default_factory=Constraints)
    lineage: Lineage | None = None

    @property
    def generation(self) -> int:
        """0 for a task a person wrote; N for one synthesized from generation N-1."""
        return self.lineage.generation if self.lineage else 0

    @field_validator("task_id")
    @classmethod
    def _task_id_is_a_safe_name(cls, value: str) -> str:
        # The task id names files (output/trajectories/<task_id>.json), so it must be one
        # path component with no surprises; any script (Chinese ids are normal) is fine.
        if not value.strip():
            raise ValueError("must not be empty")
        if value != value.strip():
            raise ValueError("must not start or end with whitespace")
        if len(value) > _TASK_ID_MAX_CHARS:
            raise ValueError(f"must be at most {_TASK_ID_MAX_CHARS} characters")
        if value in {".", ".."} or any(c in value for c in "/\\") or not value.isprintable():
            raise ValueError("must not contain '/', '\\', control characters, or be '.' or '..'")
        return value

    @field_validator("description")
    @classmethod
    def _description_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("expected_tools", mode="before")
    @classmethod
    def _seed_tool_names(cls, value: object) -> object:
        if isinstance(value, list):
            return [TOOL_ALIASES.get(tool, tool) if isinstance(tool, str) else tool for tool in value]
        return value

    @field_validator("expected_tools")
    @classmethod
    def _tools_listed_once(cls, value: list[str]) -> list[str]:
        repeated = sorted({tool for tool in value if value.count(tool) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(repeated)} more than once")
        return value


class TokenUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class VerifierResult(BaseModel):
    passed: bool
    checks: dict[str, bool] = Field(default_factory=dict)
    details: str = ""


class LLMAttempt(BaseModel):
    """One HTTP call (or cache hit) made for a chat request."""

    attempt: int
    status: int | None = None
    error: str | None = None
    duration: float = 0.0
    cached: bool = False


class LLMCall(BaseModel):
    """One chat request a policy made during a task: what the trajectory row and the worker
    metrics count, so both count it the same way."""

    attempts: list[LLMAttempt] = Field(default_factory=list)
    cached: bool = False
    """The response cache answered: no HTTP request was made."""
    failed: bool = False
    """No usable answer came back after every attempt (the task then ends as llm_error)."""
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None

    @property
    def requests(self) -> int:
        """HTTP requests sent to the endpoint for this call, retries included."""
        return 0 if self.cached else len(self.attempts)

    @property
    def retries(self) -> int:
        """Requests that did not give the answer: every one but the last of a call that
        succeeded, every one of a call that failed."""
        return self.requests if self.failed else max(0, self.requests - 1)


class Step(BaseModel):
    """One recorded action of an agent and what it observed (the seeds' ExecutionStep)."""

    # The screenshot crosses Redis inside the trajectory's JSON: base64 there, bytes here.
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    step_id: int
    action_type: ActionType
    tool: ToolName | Literal["unknown"]
    """The tool called; ``unknown`` for a call of a tool that does not exist (its name is in
    ``action_params["name"]``)."""
    action_params: dict[str, Any]
    observation: str
    success: bool
    error_type: ErrorType | None = None
    error_message: str | None = None
    timestamp: float = Field(default_factory=time.time)
    duration: float = 0.0
    screenshot: bytes | None = None
    """A JPEG of the page's viewport after a browser action (ADP_SCREENSHOTS), never on another
    step. It travels with the trajectory until the lake stores it as a file and the step row
    names it; the per-task JSON files, the messages and the exports never carry it."""


class Trajectory(BaseModel):
    """The outcome of one task: the seeds' TrajectoryResult plus training-data fields."""

    schema_version: int = SCHEMA_VERSION
    task_id: str
    task_type: TaskType
    runtime_id: str
    success: bool
    steps: list[Step] = Field(default_factory=list)
    final_result: str = ""
    error_type: ErrorType | None = None
    error_message: str | None = None
    system_failure: bool = False
    """The task failed for a system reason: adp's machinery failed it, not the agent's work (the
    ``system_failure`` of the error that ended it: no model answered, not even before the task's
    timeout; no browser; a sandbox that could not run the task's code or tests; a worker gave up
    on it). A model that answered badly (no complete_task within max_steps, over the token
    budget), code that failed, a wrong answer, the task's own timeout once its model had
    answered, a start page that did not load in a working browser or a task the oracle cannot
    replay are ordinary failures. A batch whose every task has it fails its run."""
    total_duration: float = 0.0
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    policy: str
    model: str | None = None
    provider: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    llm_calls: list[LLMCall] = Field(default_factory=list)
    verifier: VerifierResult | None = None
    attempts: int = 1
    lineage: Lineage | None = None

    @classmethod
    def failed(
        cls,
        task: TaskSpec,
        error_type: ErrorType,
        message: str,
        *,
        policy: str,
        model: str | None = None,
        provider: str | None = None,
        attempts: int = 1,
        system_failure: bool = True,
    ) -> Trajectory:
        """The one trajectory of a task that could not run at all: still exactly one, classified
        (by default as a system failure: adp could not run it)."""
        return cls(
            task_id=task.task_id,
            task_type=task.task_type,
            runtime_id=RUNTIME_ID,
            success=False,
            error_type=error_type,
            error_message=message,
            system_failure=system_failure,
            policy=policy,
            model=model,
            provider=provider,
            attempts=attempts,
            lineage=task.lineage,
        )

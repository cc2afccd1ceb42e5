"""Who decides the agent's next move: ``oracle`` (replays a task's reference tool calls),
``llm`` (a model behind an OpenAI-compatible endpoint) or ``mock`` (the llm policy against the
scripted mock server). Each names itself in every trajectory it produces."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, get_args

from pydantic import BaseModel, Field

from runtimes.core import ConfigError, LLMError, OracleError, PolicyName, TaskSpec, TokenUsage
from runtimes.llm._cache import ResponseCache
from runtimes.llm._client import LLMClient, LLMResponse
from runtimes.llm._config import HOW_TO_CONFIGURE, LLMConfig, LLMEndpoint

POLICY_NAMES: tuple[PolicyName, ...] = get_args(PolicyName)


class Turn(BaseModel):
    """One assistant message and what it cost."""

    message: dict[str, Any]
    usage: TokenUsage = Field(default_factory=TokenUsage)
    llm: LLMResponse | None = None


class Policy(Protocol):
    name: str
    model: str | None
    provider: str | None
    native_tools: bool

    async def next_turn(self, task: TaskSpec, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Turn:
        """The next assistant message given the conversation so far.

        Raises:
            LLMError: no answer can be had (no model configured, the endpoint failed).
            OracleError: the oracle has nothing (more) to replay.
        """
        ...


class OraclePolicy:
    """Replays ``constraints.reference_tool_calls`` in order, one call per turn."""

    name = "oracle"
    model: str | None = "oracle"
    provider: str | None = "oracle"
    native_tools = True

    async def next_turn(self, task: TaskSpec, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Turn:
        calls = task.constraints.reference_tool_calls
        if not calls:
            raise OracleError(
                f"task {task.task_id!r} has no constraints.reference_tool_calls for the oracle to replay; "
                f"to let a model solve it use --policy llm and {HOW_TO_CONFIGURE}"
            )
        turn = sum(1 for message in messages if message["role"] == "assistant")
        if turn >= len(calls):
            raise OracleError(f"the oracle replayed all {len(calls)} reference calls without complete_task")
        call = calls[turn]
        tool_call = {
            "id": f"call_{turn}",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
        }
        return Turn(message={"role": "assistant", "content": None, "tool_calls": [tool_call]})


class UnconfiguredPolicy:
    """The ``llm`` policy when no endpoint is configured: every task ends as llm_error, saying how to fix it."""

    name = "llm"
    model: str | None = None
    provider: str | None = None
    native_tools = True

    async def next_turn(self, task: TaskSpec, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Turn:
        raise LLMError(f"no LLM is configured: {HOW_TO_CONFIGURE} (or run with --policy oracle)")


class LLMPolicy:
    """Asks a model. With ``native_tools`` off, the tools are described in the system prompt and
    the model answers in the JSON protocol (``{"tool": name, "arguments": {...}}``)."""

    def __init__(self, client: LLMClient, *, name: str = "llm", native_tools: bool = True) -> None:
        self.client = client
        self.name = name
        self.model: str | None = client.endpoint.model
        self.provider: str | None = client.endpoint.provider
        self.native_tools = native_tools

    async def next_turn(self, task: TaskSpec, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Turn:
        if self.native_tools:
            response = await self.client.chat(messages, tools)
        else:
            response = await self.client.chat(messages, response_format={"type": "json_object"})
        return Turn(message=response.message, usage=response.usage, llm=response)


@dataclass(frozen=True)
class PolicyConfig:
    """Everything needed to open any policy by name (from :class:`~runtimes.settings.Settings`)."""

    llm: LLMConfig
    cache: ResponseCache | None = None
    native_tools: bool = True
    mock_url: str | None = None
    """The mock policy talks to this running server (ADP_MOCK_LLM_URL) instead of starting one."""
    mock_latency: float = 0.0

    def problem(self, name: str) -> str | None:
        """Why policy ``name`` cannot run with this configuration, and how to fix it; None when it can.

        A run checks this before any task starts: a policy that cannot act would end every task
        failed, and the run would look like one whose tasks were merely hard.
        """
        if name not in POLICY_NAMES:
            return f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}"
        if name != "llm":
            return None  # oracle replays the task's own calls; mock starts its own server
        try:
            endpoint = self.llm.endpoint()
        except ConfigError as exc:
            return f"policy llm: {exc}"
        if endpoint is None:
            return (
                f"policy llm needs a model and none is configured: {HOW_TO_CONFIGURE}; "
                "or choose another policy (ADP_POLICY=oracle or mock, `adp run --policy oracle`)"
            )
        return None

    @contextlib.asynccontextmanager
    async def open(self, name: str, tasks: Sequence[TaskSpec]) -> AsyncIterator[Policy]:
        """The policy ``name``; ``mock`` starts a server scripted from ``tasks``' reference calls
        (loading :mod:`runtimes.testing` only then) unless ``mock_url`` names a running one. The
        server follows ``tasks``: a caller may append tasks while the policy is open.

        Raises:
            ConfigError: ``name`` is not a policy, or the LLM settings contradict each other.
        """
        if name not in POLICY_NAMES:
            raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
        if name == "oracle":
            yield OraclePolicy()
            return
        if name == "llm":
            endpoint = self.llm.endpoint()
            if endpoint is None:
                yield UnconfiguredPolicy()
                return
            async with self._llm_policy(endpoint, "llm") as policy:
                yield policy
            return
        if self.mock_url:
            async with self._llm_policy(_mock_endpoint(self.mock_url), "mock") as policy:
                yield policy
            return
        from runtimes.testing import MockLLMServer, MockScript  # test tooling: loaded for this policy only

        with MockLLMServer(MockScript.following(tasks), latency=self.mock_latency) as server:
            async with self._llm_policy(_mock_endpoint(server.base_url), "mock") as policy:
                yield policy

    @contextlib.asynccontextmanager
    async def _llm_policy(self, endpoint: LLMEndpoint, name: str) -> AsyncIterator[Policy]:
        client = self.llm.client(endpoint, self.cache)
        try:
            yield LLMPolicy(client, name=name, native_tools=self.native_tools)
        finally:
            await client.aclose()


def _mock_endpoint(base_url: str) -> LLMEndpoint:
    return LLMEndpoint(provider="mock", base_url=base_url, model="mock", api_key="mock")

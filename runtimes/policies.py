"""Who decides the agent's next move: ``oracle`` (replays a task's reference tool calls),
``llm`` (a model behind an OpenAI-compatible endpoint) or ``mock`` (the llm policy against the
scripted mock server). Each names itself in every trajectory it produces."""

from __future__ import annotations

import json
from typing import Any, Protocol

from pydantic import BaseModel, Field

from runtimes.llm import LLMClient, LLMError, LLMResponse
from runtimes.llm_config import HOW_TO_CONFIGURE
from runtimes.protocol import TaskSpec, TokenUsage

POLICY_NAMES = ("oracle", "mock", "llm")


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
            LLMError: no answer can be had (no model configured, the endpoint failed, nothing to replay).
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
            raise LLMError(
                f"task {task.task_id!r} has no constraints.reference_tool_calls for the oracle to replay; "
                f"to let a model solve it use --policy llm and {HOW_TO_CONFIGURE}"
            )
        turn = sum(1 for message in messages if message["role"] == "assistant")
        if turn >= len(calls):
            raise LLMError(f"the oracle replayed all {len(calls)} reference calls without complete_task")
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

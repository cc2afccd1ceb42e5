"""A deterministic OpenAI-compatible chat-completions server, for tests and benchmarks.

It is a real HTTP server on 127.0.0.1 (run in a thread of the caller, or by
``adp mock-llm``), so the ``mock`` policy exercises the real SDK path: serialisation, HTTP,
retries, usage accounting. Answers come from a script: the first user message picks a rule,
and the number of assistant turns so far picks the turn. It can add latency and answer a
seeded, reproducible fraction of requests with 429 or 500.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import uvicorn
from pydantic import BaseModel, Field, PrivateAttr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from runtimes.core import TaskSpec

_START_TIMEOUT = 30.0


class ScriptedCall(BaseModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ScriptedTurn(BaseModel):
    tool_calls: list[ScriptedCall] = Field(default_factory=list)
    content: str | None = None


class ScriptRule(BaseModel):
    """Answers conversations whose first user message equals (or else contains) ``match`` and,
    when ``system`` is set, whose system message contains it: that is how a script tells the
    synthesis prompts (an essence, a ``parameter`` mutation, ...) about one task apart."""

    match: str
    system: str | None = None
    turns: list[ScriptedTurn]


_GIVE_UP = ScriptedTurn(tool_calls=[ScriptedCall(name="complete_task", arguments={"answer": "no scripted answer"})])


class MockScript(BaseModel):
    rules: list[ScriptRule] = Field(default_factory=list)
    _source: Sequence[TaskSpec] | None = PrivateAttr(None)
    _taken: int = PrivateAttr(0)

    @classmethod
    def following(cls, tasks: Sequence[TaskSpec]) -> MockScript:
        """:meth:`from_tasks` of ``tasks``, including tasks appended to it later (a worker's deliveries)."""
        script = cls()
        script._source = tasks
        return script

    @classmethod
    def from_tasks(cls, tasks: Iterable[TaskSpec]) -> MockScript:
        """One rule per task with reference tool calls: each call becomes one assistant turn."""
        rules = [
            ScriptRule(
                match=task.description,
                turns=[
                    ScriptedTurn(tool_calls=[ScriptedCall(name=call.name, arguments=call.arguments)])
                    for call in task.constraints.reference_tool_calls
                ],
            )
            for task in tasks
            if task.constraints.reference_tool_calls
        ]
        return cls(rules=rules)

    def answer(self, messages: list[dict[str, Any]]) -> ScriptedTurn:
        if self._source is not None and len(self._source) > self._taken:
            arrived, self._taken = self._source[self._taken :], len(self._source)
            self.rules.extend(MockScript.from_tasks(arrived).rules)
        first_user = _text(next((m.get("content") for m in messages if m.get("role") == "user"), ""))
        system = _text(next((m.get("content") for m in messages if m.get("role") == "system"), ""))
        # A rule for this system message goes before one for any: an agent's rule for a task
        # must not answer the synthesis prompts, whose user message quotes that task.
        rules = [r for r in self.rules if r.system is not None and r.system in system]
        rules += [r for r in self.rules if r.system is None]
        rule = next((r for r in rules if r.match == first_user), None) or next(
            (r for r in rules if r.match in first_user), None
        )
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if rule is None or turn >= len(rule.turns):
            return _GIVE_UP
        return rule.turns[turn]


def _text(content: object) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else json.dumps(content)


class MockStats(BaseModel):
    requests: int = 0
    completions: int = 0
    injected_errors: int = 0


class MockLLMServer:
    """The server; use as a context manager, or ``start()`` / ``stop()``.

    Args:
        script: what to answer.
        latency: seconds to wait before each answer (without blocking other requests).
        error_rate: fraction of requests answered with 429 or 500 (alternating), drawn from a
            generator seeded with ``seed``, so a run is reproducible.
        port: 0 picks a free port.
    """

    def __init__(
        self,
        script: MockScript,
        *,
        latency: float = 0.0,
        error_rate: float = 0.0,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.script = script
        self.latency = latency
        self.error_rate = error_rate
        self.refuse_with: int | None = None  # answer every request with this HTTP status (e.g. 401)
        self.stats = MockStats()
        self._random = random.Random(seed)
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/stats", self._stats, methods=["GET"]),
            ]
        )

    @property
    def port(self) -> int:
        if self._server is None or not self._server.servers:
            raise RuntimeError("the mock LLM server is not running")
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    def start(self) -> MockLLMServer:
        config = uvicorn.Config(
            self.app, host=self._host, port=self._port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="mock-llm", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the mock LLM server did not start on {self._host}:{self._port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (``adp mock-llm``)."""
        uvicorn.run(self.app, host=self._host, port=self._port, log_level="warning", access_log=False)

    def __enter__(self) -> MockLLMServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _chat(self, request: Request) -> JSONResponse:
        self.stats.requests += 1
        body = await request.json()
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.refuse_with is not None:
            return JSONResponse({"error": {"message": "refused (by the mock)"}}, status_code=self.refuse_with)
        if self.error_rate and self._random.random() < self.error_rate:
            self.stats.injected_errors += 1
            if self.stats.injected_errors % 2:
                error = {"error": {"message": "rate limited (injected by the mock)", "type": "rate_limit_error"}}
                return JSONResponse(error, status_code=429, headers={"retry-after": "0"})
            return JSONResponse({"error": {"message": "server error (injected by the mock)"}}, status_code=500)
        self.stats.completions += 1
        return JSONResponse(_completion(body, self.script.answer(body.get("messages", [])), self.stats.completions))

    async def _models(self, _: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "mock", "object": "model", "owned_by": "adp"}]})

    async def _stats(self, _: Request) -> JSONResponse:
        return JSONResponse(self.stats.model_dump())


def _completion(body: dict[str, Any], turn: ScriptedTurn, number: int) -> dict[str, Any]:
    messages = body.get("messages", [])
    native_tools = bool(body.get("tools"))
    message: dict[str, Any] = {"role": "assistant", "content": turn.content}
    assistant_turn = sum(1 for m in messages if m.get("role") == "assistant")
    if turn.tool_calls and native_tools:
        message["tool_calls"] = [
            {
                "id": f"call_{assistant_turn}_{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
            }
            for index, call in enumerate(turn.tool_calls)
        ]
    elif turn.tool_calls:  # a model without tool calling answers in the JSON protocol
        call = turn.tool_calls[0]
        message["content"] = json.dumps({"tool": call.name, "arguments": call.arguments}, ensure_ascii=False)
    prompt_tokens = max(1, len(json.dumps(messages)) // 4)
    completion_tokens = max(1, len(json.dumps(message)) // 4)
    return {
        "id": f"mock-{number}",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "mock"),
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }

"""Run a batch of tasks concurrently in this process, each to exactly one trajectory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from runtimes.agent import AgentLimits, failed_trajectory, run_task
from runtimes.errors import ConfigError
from runtimes.llm_config import LLMEndpoint
from runtimes.mock_llm import MockLLMServer, MockScript
from runtimes.policies import POLICY_NAMES, LLMPolicy, OraclePolicy, Policy, UnconfiguredPolicy
from runtimes.protocol import ErrorType, TaskSpec, Trajectory
from runtimes.sandbox import Sandbox
from runtimes.settings import Settings
from runtimes.tools import TOOLS_BY_TYPE
from runtimes.web.pool import BrowserPool


async def run_tasks(
    tasks: Sequence[TaskSpec],
    policy: Policy,
    sandbox: Sandbox,
    *,
    max_concurrent: int,
    limits: AgentLimits | None = None,
    on_done: Callable[[Trajectory], None] | None = None,
    browser: BrowserPool | None = None,
    browser_attempts: int = 2,
) -> list[Trajectory]:
    """One trajectory per task, in the order of ``tasks``.

    Code tasks run ``max_concurrent`` at a time; tasks that need the browser as many as the
    pool has contexts. A task whose browser died under it is run again, up to
    ``browser_attempts`` in all; a task whose run raises anything unexpected still gets its
    trajectory, as a system_error.
    """
    code_slots = asyncio.Semaphore(max_concurrent)
    browser_slots = asyncio.Semaphore(browser.max_contexts if browser else max_concurrent)

    async def one(task: TaskSpec) -> Trajectory:
        slots = browser_slots if "browser" in TOOLS_BY_TYPE.get(task.task_type, ()) else code_slots
        async with slots:
            for attempt in range(1, browser_attempts + 1):
                try:
                    trajectory = await run_task(task, policy, sandbox, limits, browser)
                except Exception as exc:  # every accepted task ends with exactly one trajectory
                    trajectory = failed_trajectory(task, policy, ErrorType.SYSTEM_ERROR, f"{type(exc).__name__}: {exc}")
                trajectory.attempts = attempt
                if trajectory.error_type is not ErrorType.BROWSER_ERROR:
                    break
        if on_done is not None:
            on_done(trajectory)
        return trajectory

    return await asyncio.gather(*(one(task) for task in tasks))


@contextlib.asynccontextmanager
async def open_policy(
    name: str, tasks: Sequence[TaskSpec], settings: Settings, mock_script: MockScript | None = None
) -> AsyncIterator[Policy]:
    """The policy ``name`` configured from ``settings``; ``mock`` starts a scripted server
    (scripted from the tasks' reference calls, or answering from ``mock_script``, which the
    caller may extend while it runs) unless ADP_MOCK_LLM_URL names a running one.

    Raises:
        ConfigError: ``name`` is not a policy, or the LLM settings contradict each other.
    """
    if name not in POLICY_NAMES:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
    if name == "oracle":
        yield OraclePolicy()
        return
    if name == "llm":
        endpoint = settings.llm_config.endpoint()
        if endpoint is None:
            yield UnconfiguredPolicy()
            return
        async with _llm_policy(endpoint, "llm", settings) as policy:
            yield policy
        return
    if settings.mock_llm_url:
        async with _llm_policy(_mock_endpoint(settings.mock_llm_url), "mock", settings) as policy:
            yield policy
        return
    script = mock_script if mock_script is not None else MockScript.from_tasks(tasks)
    with MockLLMServer(script, latency=settings.mock_latency) as server:
        async with _llm_policy(_mock_endpoint(server.base_url), "mock", settings) as policy:
            yield policy


def _mock_endpoint(base_url: str) -> LLMEndpoint:
    return LLMEndpoint(provider="mock", base_url=base_url, model="mock", api_key="mock")


@contextlib.asynccontextmanager
async def _llm_policy(endpoint: LLMEndpoint, name: str, settings: Settings) -> AsyncIterator[Policy]:
    cache = settings.llm_cache
    client = settings.llm_config.client(endpoint, cache)
    try:
        yield LLMPolicy(client, name=name, native_tools=settings.llm_tool_calling)
    finally:
        await client.aclose()

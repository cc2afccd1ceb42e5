"""Run a batch of tasks concurrently in this process, each to exactly one trajectory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from runtimes.agent._loop import AgentLimits, failed_trajectory, run_task
from runtimes.agent._tools import TOOLS_BY_TYPE
from runtimes.core import AdpError, ErrorType, TaskSpec, Trajectory
from runtimes.llm import Policy
from runtimes.sandbox import Sandbox
from runtimes.web import BrowserPool


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
                except AdpError as exc:
                    trajectory = failed_trajectory(task, policy, exc.error_type, str(exc))
                except Exception as exc:  # every accepted task ends with exactly one trajectory
                    trajectory = failed_trajectory(task, policy, ErrorType.SYSTEM_ERROR, f"{type(exc).__name__}: {exc}")
                trajectory.attempts = attempt
                if trajectory.error_type is not ErrorType.BROWSER_ERROR:
                    break
        if on_done is not None:
            on_done(trajectory)
        return trajectory

    return await asyncio.gather(*(one(task) for task in tasks))

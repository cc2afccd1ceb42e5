"""Run a batch of tasks concurrently in this process, each to exactly one trajectory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Iterable, Sequence

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
    """One trajectory per task, in the order of ``tasks`` (all held until the last ends: for a
    batch of any size, :func:`stream_tasks`)."""
    done: dict[int, Trajectory] = {}

    def keep(position: int, trajectory: Trajectory) -> None:
        done[position] = trajectory
        if on_done is not None:
            on_done(trajectory)

    await stream_tasks(
        tasks,
        policy,
        sandbox,
        max_concurrent=max_concurrent,
        limits=limits,
        on_done=keep,
        browser=browser,
        browser_attempts=browser_attempts,
    )
    return [done[position] for position in range(len(tasks))]


async def stream_tasks(
    tasks: Iterable[TaskSpec] | AsyncIterable[TaskSpec],
    policy: Policy,
    sandbox: Sandbox,
    *,
    max_concurrent: int,
    on_done: Callable[[int, Trajectory], None],
    limits: AgentLimits | None = None,
    browser: BrowserPool | None = None,
    browser_attempts: int = 2,
) -> int:
    """Run ``tasks`` as they come, each to one trajectory handed to ``on_done`` with the task's
    position, and keep none: memory stays flat however many tasks there are.

    Code tasks run ``max_concurrent`` at a time; tasks that need the browser as many as the
    pool has contexts. Tasks are taken from ``tasks`` only as slots free up (a window of twice
    the slots), so a lazy iterable is read as the work goes. A task whose browser died under it
    is run again, up to ``browser_attempts`` in all; a task whose run raises anything unexpected
    still gets its trajectory, as a system_error. An exception from ``on_done`` stops the run
    (the tasks in flight are cancelled) and is raised.

    Returns:
        How many tasks ran.
    """
    code_slots = asyncio.Semaphore(max_concurrent)
    browser_slots = asyncio.Semaphore(browser.max_contexts if browser else max_concurrent)
    window = asyncio.Semaphore(2 * (max_concurrent + (browser.max_contexts if browser else 0)))

    async def one(position: int, task: TaskSpec) -> None:
        try:
            slots = browser_slots if "browser" in TOOLS_BY_TYPE.get(task.task_type, ()) else code_slots
            async with slots:
                for attempt in range(1, browser_attempts + 1):
                    try:
                        trajectory = await run_task(task, policy, sandbox, limits, browser)
                    except AdpError as exc:
                        trajectory = failed_trajectory(
                            task, policy, exc.error_type, str(exc), system_failure=exc.system_failure
                        )
                    except Exception as exc:  # every accepted task ends with exactly one trajectory
                        trajectory = failed_trajectory(
                            task, policy, ErrorType.SYSTEM_ERROR, f"{type(exc).__name__}: {exc}"
                        )
                    trajectory.attempts = attempt
                    # A dead browser is retried on a relaunched one; a start page that did not
                    # load (the task's data, not a system failure) would fail the same way again.
                    if trajectory.error_type is not ErrorType.BROWSER_ERROR or not trajectory.system_failure:
                        break
            on_done(position, trajectory)
        finally:
            window.release()

    count = 0
    try:
        async with asyncio.TaskGroup() as group:
            async for task in _each(tasks):
                await window.acquire()
                group.create_task(one(count, task))
                count += 1
    except BaseExceptionGroup as failures:  # on_done's (or the iterable's) error, as it was raised
        raise failures.exceptions[0] from None
    return count


async def _each(tasks: Iterable[TaskSpec] | AsyncIterable[TaskSpec]) -> AsyncIterable[TaskSpec]:
    if isinstance(tasks, AsyncIterable):
        async for task in tasks:
            yield task
    else:
        for task in tasks:
            yield task

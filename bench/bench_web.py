"""Web-task throughput: adp's agent loop (mock LLM at 0 ms in its own process) against a bare
Playwright script doing the same actions on the same browser setup, in one run.

    .venv/bin/python bench/bench_web.py [--tasks 60] [--contexts 4]

The task: on adp's local shop, select an item, fill a quantity, click, verify the page text.
A last row runs the MiniWoB++ examples (examples/miniwob.jsonl, oracle, verified by the page's
reward) through the same loop. Both sides launch Chromium with adp's flags (CHROMIUM_ARGS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from playwright.async_api import Route, async_playwright
from rich.console import Console
from rich.table import Table

from runtimes.agent import run_tasks
from runtimes.core import Allowlist, TaskSpec, parse_browser_action
from runtimes.llm import LLMClient, LLMEndpoint, LLMPolicy, OraclePolicy
from runtimes.sandbox import WarmSandbox
from runtimes.web import (
    CHROMIUM_ARGS,
    BrowserPool,
    BrowserSession,
    content_type,
    local_file,
    miniwob_url,
)

START = "http://adp.local/inventory.html"
ACTIONS = [
    {"action": "select", "selector": "#item", "value": "pen"},
    {"action": "fill", "selector": "#qty", "text": "3"},
    {"action": "click", "selector": "#place"},
]


def web_tasks(n: int) -> list[TaskSpec]:
    calls = [{"name": "browser", "arguments": action} for action in ACTIONS]
    calls.append({"name": "complete_task", "arguments": {"answer": "ordered"}})
    return [
        TaskSpec.model_validate(
            {
                "task_id": f"web_bench_{i}",
                "task_type": "web",
                "description": f"Bench web task {i}: order 3 pens on the inventory page.",
                "expected_tools": ["browser"],
                "max_steps": 6,
                "timeout": 120,
                "constraints": {
                    "start_url": START,
                    "reference_tool_calls": calls,
                    "verify": {"page_contains": "Ordered 3 x pen"},
                },
            },
            strict=False,
        )
        for i in range(n)
    ]


async def _serve_local(route: Route) -> None:
    """What adp's routing does for its own sites, for the bare scripts: the file, or nothing."""
    path = local_file(route.request.url)
    if path is None:
        await route.abort()
    else:
        await route.fulfill(path=path, content_type=content_type(path))


async def bare_playwright(n: int, contexts: int) -> float:
    async with async_playwright() as playwright:
        # The same flags as adp's pool (omnibox WebUI pages off among them), so the ratio is fair.
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        slots = asyncio.Semaphore(contexts)

        async def one() -> bool:
            async with slots:
                context = await browser.new_context()
                await context.route("**/*", _serve_local)
                page = await context.new_page()
                await page.goto(START, wait_until="load")
                await page.select_option("#item", value="pen")
                await page.fill("#qty", "3")
                await page.click("#place")
                ok = "Ordered 3 x pen" in await page.locator("body").inner_text()
                await context.close()
                return ok

        await one()  # warm up
        started = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - started
        await browser.close()
    assert all(results)
    return n / elapsed


async def adp_rate(n: int, contexts: int) -> tuple[float, int, float]:
    from bench.bench_code import MockProcess  # the mock LLM in its own process

    tasks = web_tasks(n + 1)
    mock = MockProcess(tasks, 0.0)
    client = LLMClient(LLMEndpoint(provider="mock", base_url=mock.url, model="mock", api_key="mock"))
    policy = LLMPolicy(client, name="mock")
    browser = BrowserPool(contexts)
    sandbox = WarmSandbox(1)
    try:
        await run_tasks(tasks[:1], policy, sandbox, max_concurrent=contexts, browser=browser)  # warm up
        started = time.perf_counter()
        trajectories = await run_tasks(tasks[1:], policy, sandbox, max_concurrent=contexts, browser=browser)
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
        await sandbox.aclose()
        await browser.aclose()
        mock.close()
    return n / elapsed, sum(not t.success for t in trajectories), browser.peak_memory_mb


def miniwob_tasks() -> list[TaskSpec]:
    path = Path(__file__).resolve().parents[1] / "examples" / "miniwob.jsonl"
    return [TaskSpec.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


async def bare_miniwob(contexts: int) -> float:
    """The same MiniWoB++ episodes as a bare Playwright script: a fresh context each, the page,
    the seeded episode, the reference actions, the reward. MiniWoB tasks/s, the baseline."""

    tasks = miniwob_tasks()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        slots = asyncio.Semaphore(contexts)

        async def one(task: TaskSpec) -> bool:
            assert task.constraints.miniwob is not None and task.constraints.reference_tool_calls
            async with slots:
                context = await browser.new_context()
                await context.route("**/*", _serve_local)
                page = await context.new_page()
                await page.goto(miniwob_url(task.constraints.miniwob.task), wait_until="load")
                await page.evaluate(
                    "(seed) => { Math.seedrandom(String(seed)); core.startEpisodeReal(); }",
                    task.constraints.miniwob.seed,
                )
                for call in task.constraints.reference_tool_calls:
                    if call.name == "browser":
                        await BrowserSession(context, page, task, Allowlist([])).act(
                            parse_browser_action(call.arguments)
                        )
                reward = await page.evaluate("() => WOB_RAW_REWARD_GLOBAL")
                await context.close()
                return bool(reward >= 1)

        await one(tasks[0])  # warm up
        started = time.perf_counter()
        results = await asyncio.gather(*(one(task) for task in tasks))
        elapsed = time.perf_counter() - started
        await browser.close()
    assert all(results)
    return len(tasks) / elapsed


async def miniwob_rate(contexts: int) -> tuple[float, int, int]:
    """MiniWoB++ tasks/s through adp's agent loop with the oracle: (rate, tasks, failed)."""
    tasks = miniwob_tasks()
    browser = BrowserPool(contexts)
    sandbox = WarmSandbox(1)
    try:
        await run_tasks(tasks[:contexts], OraclePolicy(), sandbox, max_concurrent=contexts, browser=browser)  # warm up
        started = time.perf_counter()
        trajectories = await run_tasks(tasks, OraclePolicy(), sandbox, max_concurrent=contexts, browser=browser)
        elapsed = time.perf_counter() - started
    finally:
        await sandbox.aclose()
        await browser.aclose()
    return len(tasks) / elapsed, len(tasks), sum(not t.success for t in trajectories)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--contexts", type=int, default=4)
    args = parser.parse_args()
    console = Console(stderr=True)
    console.print("bare Playwright ...")
    bare = await bare_playwright(args.tasks, args.contexts)
    console.print("adp web tasks, mock LLM at 0 ms ...")
    adp, failed, peak = await adp_rate(args.tasks, args.contexts)
    console.print("MiniWoB++ examples, bare Playwright ...")
    bare_wob = await bare_miniwob(args.contexts)
    console.print("MiniWoB++ examples through adp, oracle ...")
    miniwob, episodes, miniwob_failed = await miniwob_rate(args.contexts)
    table = Table(title=f"adp web bench ({args.tasks} tasks, {args.contexts} contexts)")
    for column in ("measure", "tasks/s", "ratio", "note"):
        table.add_column(column, justify="left" if column in ("measure", "note") else "right")
    table.add_row("bare Playwright script, same actions (baseline)", f"{bare:.1f}", "1.00", "no agent, no LLM")
    table.add_row("adp agent loop, mock LLM 0 ms", f"{adp:.1f}", f"{adp / bare:.2f}", f"{failed} failed")
    table.add_row("  peak browser memory (MiB, PSS)", f"{peak:.0f}", "", f"{args.contexts} contexts")
    table.add_row(f"MiniWoB++ episodes, bare Playwright script ({episodes}, baseline)", f"{bare_wob:.1f}", "1.00", "")
    table.add_row(
        "MiniWoB++ episodes through adp, oracle",
        f"{miniwob:.1f}",
        f"{miniwob / bare_wob:.2f}",
        f"{miniwob_failed} failed",
    )
    Console(width=110).print(table)
    print(
        json.dumps(
            {
                "bare_playwright": round(bare, 1),
                "adp": round(adp, 1),
                "peak_mb": round(peak),
                "bare_miniwob": round(bare_wob, 1),
                "miniwob": round(miniwob, 1),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())

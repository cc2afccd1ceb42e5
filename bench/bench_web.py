"""Web-task throughput: adp's agent loop (mock LLM at 0 ms in its own process) against a bare
Playwright script doing the same actions on the same browser setup, in one run.

    .venv/bin/python bench/bench_web.py [--tasks 60] [--contexts 4]

The task: on adp's local shop, select an item, fill a quantity, click, verify the page text.
A last row runs the MiniWoB++ examples (examples/miniwob.jsonl, oracle, verified by the page's
reward) through the same loop. Both sides launch Chromium with adp's flags (CHROMIUM_ARGS).

    .venv/bin/python bench/bench_web.py --screenshots [--tasks 30] [--rounds 2]

compares instead the same shop tasks, then the MiniWoB++ examples, through adp's loop with
ADP_SCREENSHOTS=off, every and final, back to back in one process (``--rounds`` times,
interleaved, the best of each kept), each screenshot stored in a scratch lake as a run's
checkpoint stores it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from playwright.async_api import Route, async_playwright
from rich.console import Console
from rich.table import Table

from adp_pipeline.storage import Lake
from runtimes.agent import run_tasks
from runtimes.core import Allowlist, ScreenshotMode, TaskSpec, Trajectory, parse_browser_action
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


def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process and every process below it (Playwright's driver,
    Chromium, the mock server), those they have reaped included (a closed context's renderer)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, pending, seen = 0, [os.getpid()], set()
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    pending += [int(child) for child in (task / "children").read_text().split()]
    return total / tick


def _storer(lake: Lake | None, batch: str) -> Callable[[Trajectory], None]:
    """What stores a finished trajectory's screenshots in ``lake`` (nothing without one)."""

    def store(trajectory: Trajectory) -> None:
        for step in trajectory.steps:
            if lake is not None and step.screenshot is not None:
                lake.write_screenshot(batch, trajectory.task_id, step.step_id, step.screenshot)
                step.screenshot = None

    return store


async def adp_rate(
    n: int, contexts: int, screenshots: ScreenshotMode = "every", lake: Lake | None = None
) -> tuple[float, int, float, float]:
    """adp's shop-task rate: (tasks/s, failed, peak browser MiB, CPU seconds per task of the whole
    process tree). With ``lake``, each trajectory's screenshots are written into it as it ends, as
    a run's checkpoint writes them."""
    from bench.bench_code import MockProcess  # the mock LLM in its own process

    tasks = web_tasks(n + 1)
    mock = MockProcess(tasks, 0.0)
    client = LLMClient(LLMEndpoint(provider="mock", base_url=mock.url, model="mock", api_key="mock"))
    policy = LLMPolicy(client, name="mock")
    browser = BrowserPool(contexts, screenshots=screenshots)
    sandbox = WarmSandbox(1)
    store = _storer(lake, f"bench-shop-{screenshots}")
    try:
        await run_tasks(tasks[:1], policy, sandbox, max_concurrent=contexts, browser=browser)  # warm up
        cpu, started = tree_cpu_seconds(), time.perf_counter()
        trajectories = await run_tasks(
            tasks[1:], policy, sandbox, max_concurrent=contexts, browser=browser, on_done=store
        )
        elapsed, cpu = time.perf_counter() - started, tree_cpu_seconds() - cpu
    finally:
        await client.aclose()
        await sandbox.aclose()
        await browser.aclose()
        mock.close()
    return n / elapsed, sum(not t.success for t in trajectories), browser.peak_memory_mb, cpu / n


class ModeResult(NamedTuple):
    rate: float  # tasks/s, the best round
    cpu: float  # CPU seconds per task of the whole process tree, the least of the rounds
    failed: int
    stored: int  # JPEG files the last round stored
    bytes_per_shot: float


WORKLOADS = ("shop", "miniwob")


async def screenshot_rates(n: int, contexts: int, rounds: int) -> dict[tuple[str, str], ModeResult]:
    """The shop tasks and the MiniWoB++ examples through adp with each ADP_SCREENSHOTS mode,
    interleaved ``rounds`` times (the load of a shared machine drifts), the best round of each:
    (workload, mode) -> result."""
    modes: tuple[ScreenshotMode, ...] = ("off", "every", "final")
    best: dict[tuple[str, str], ModeResult] = {}
    with tempfile.TemporaryDirectory() as scratch:
        lake = Lake(Path(scratch))
        for _ in range(rounds):
            for workload in WORKLOADS:
                for mode in modes:
                    folder = lake.root / "screenshots" / f"bench-{workload}-{mode}"
                    shutil.rmtree(folder, ignore_errors=True)  # this round's files only
                    if workload == "shop":
                        rate, failed, _peak, cpu = await adp_rate(n, contexts, mode, lake)
                    else:
                        rate, _episodes, failed, cpu = await miniwob_rate(contexts, mode, lake)
                    files = list(folder.rglob("*.jpg")) if folder.is_dir() else []
                    size = sum(path.stat().st_size for path in files) / max(1, len(files))
                    seen = best.get((workload, mode))
                    best[workload, mode] = ModeResult(
                        max(rate, seen.rate) if seen else rate,
                        min(cpu, seen.cpu) if seen else cpu,
                        failed + (seen.failed if seen else 0),
                        len(files),
                        size,
                    )
    return best


async def screenshots_main(n: int, contexts: int, rounds: int) -> None:
    console = Console(stderr=True)
    console.print(f"adp web tasks and MiniWoB++ episodes, ADP_SCREENSHOTS off/every/final x {rounds} ...")
    results = await screenshot_rates(n, contexts, rounds)
    table = Table(title=f"web tasks by ADP_SCREENSHOTS ({n} shop tasks, {contexts} contexts, best of {rounds} rounds)")
    columns = (
        "workload",
        "ADP_SCREENSHOTS",
        "tasks/s",
        "ratio",
        "CPU s/task",
        "CPU ratio",
        "failed",
        "JPEGs",
        "KB/JPEG",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("workload", "ADP_SCREENSHOTS") else "right")
    for (workload, mode), result in results.items():
        off = results[workload, "off"]
        table.add_row(
            "shop, mock LLM 0 ms" if workload == "shop" else "MiniWoB++ examples, oracle",
            mode,
            f"{result.rate:.2f}",
            f"{result.rate / off.rate:.2f}",
            f"{result.cpu:.3f}",
            f"{off.cpu / result.cpu:.2f}",  # the tasks/s ratio on a machine the tasks keep busy
            str(result.failed),
            str(result.stored),
            f"{result.bytes_per_shot / 1000:.0f}" if result.stored else "",
        )
    Console(width=130).print(table)
    print(
        json.dumps(
            {f"{w}/{m}": {"tasks_s": round(r.rate, 2), "cpu_s": round(r.cpu, 3)} for (w, m), r in results.items()}
        )
    )


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


async def miniwob_rate(
    contexts: int, screenshots: ScreenshotMode = "every", lake: Lake | None = None
) -> tuple[float, int, int, float]:
    """MiniWoB++ tasks/s through adp's agent loop with the oracle: (rate, tasks, failed, CPU
    seconds per task of the whole process tree); screenshots stored in ``lake`` as in adp_rate."""
    tasks = miniwob_tasks()
    browser = BrowserPool(contexts, screenshots=screenshots)
    sandbox = WarmSandbox(1)
    store = _storer(lake, f"bench-miniwob-{screenshots}")
    try:
        await run_tasks(tasks[:contexts], OraclePolicy(), sandbox, max_concurrent=contexts, browser=browser)  # warm up
        cpu, started = tree_cpu_seconds(), time.perf_counter()
        trajectories = await run_tasks(
            tasks, OraclePolicy(), sandbox, max_concurrent=contexts, browser=browser, on_done=store
        )
        elapsed, cpu = time.perf_counter() - started, tree_cpu_seconds() - cpu
    finally:
        await sandbox.aclose()
        await browser.aclose()
    return len(tasks) / elapsed, len(tasks), sum(not t.success for t in trajectories), cpu / len(tasks)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--screenshots", action="store_true", help="compare ADP_SCREENSHOTS=off|every|final")
    parser.add_argument("--rounds", type=int, default=2, help="with --screenshots: interleaved runs of each")
    args = parser.parse_args()
    if args.screenshots:
        await screenshots_main(args.tasks, args.contexts, args.rounds)
        return
    console = Console(stderr=True)
    console.print("bare Playwright ...")
    bare = await bare_playwright(args.tasks, args.contexts)
    console.print("adp web tasks, mock LLM at 0 ms ...")
    adp, failed, peak, _cpu = await adp_rate(args.tasks, args.contexts)
    console.print("MiniWoB++ examples, bare Playwright ...")
    bare_wob = await bare_miniwob(args.contexts)
    console.print("MiniWoB++ examples through adp, oracle ...")
    miniwob, episodes, miniwob_failed, _cpu = await miniwob_rate(args.contexts)
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

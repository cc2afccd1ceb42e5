"""Code-task throughput, each number next to the baseline it is judged against, in one run.

    .venv/bin/python bench/bench_code.py [--tasks 400] [--slots 4] [--concurrency 16]

Rows:
  sandbox executions/s      warm pool and launch-per-execution bubblewrap, against plain
                            `python3 -I -S` subprocesses with no isolation (the baseline);
  checks/s                  python_tests judged by `check_python` (their own execution,
                            evidence after the last test), against the same code and tests
                            appended into one plain execution (how they ran before);
  code tasks/s, mock 0 ms   the whole agent loop (mock LLM over HTTP in its own process, the
                            real SDK, the sandbox, verification) for simple code tasks, with
                            an expected answer, and with an expected answer and python_tests;
  code tasks/s, mock 1 s    64 tasks in flight with every LLM call taking 1 s, against the
                            ideal (64 tasks per 2 calls x 1 s).
Run as root on an idle machine; it prints a table and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runtimes.agent import AgentLimits, run_tasks
from runtimes.core import TaskSpec
from runtimes.llm import LLMClient, LLMEndpoint, LLMPolicy
from runtimes.sandbox import BwrapSandbox, Sandbox, WarmSandbox

CODE = "print(sum(range(10)))"
SOLUTION = "def total(n):\n    return sum(range(n))\n\nprint(total(10))\n"
TESTS = "assert total(10) == 45\nassert total(0) == 0\nassert total(4) == 6\n"


def code_tasks(n: int, *, tests: bool = False) -> list[TaskSpec]:
    verify = {"expected_answer": "45", **({"python_tests": TESTS} if tests else {})}
    return [
        TaskSpec.model_validate(
            {
                "task_id": f"bench_{i}",
                "task_type": "code",
                "description": f"Bench task {i}: print the sum of 0..9 and answer with it.",
                "expected_tools": ["python_executor"],
                "max_steps": 4,
                "timeout": 120,
                "constraints": {
                    "reference_tool_calls": [
                        {"name": "python_executor", "arguments": {"code": SOLUTION if tests else CODE}},
                        {"name": "complete_task", "arguments": {"answer": "45"}},
                    ],
                    "verify": verify,
                },
            },
            strict=False,
        )
        for i in range(n)
    ]


async def rate(n: int, concurrency: int, one: Callable[[], Awaitable[bool]]) -> tuple[float, int]:
    """Calls of ``one`` per second with ``concurrency`` in flight, and how many returned False."""
    slots = asyncio.Semaphore(concurrency)

    async def bounded() -> bool:
        async with slots:
            return await one()

    started = time.perf_counter()
    results = await asyncio.gather(*(bounded() for _ in range(n)))
    return n / (time.perf_counter() - started), results.count(False)


async def sandbox_rate(sandbox: Sandbox, n: int, concurrency: int) -> tuple[float, int]:
    async def one() -> bool:
        return (await sandbox.exec_python(CODE)).stdout == "45\n"

    await sandbox.exec_python(CODE)  # warm up
    try:
        return await rate(n, concurrency, one)
    finally:
        await sandbox.aclose()


async def check_rate(sandbox: Sandbox, n: int, concurrency: int, *, appended: bool) -> tuple[float, int]:
    async def one() -> bool:
        if appended:
            return (await sandbox.exec_python(f"{SOLUTION}\n{TESTS}")).ok
        return (await sandbox.check_python(SOLUTION, TESTS)).passed

    await one()  # warm up
    try:
        return await rate(n, concurrency, one)
    finally:
        await sandbox.aclose()


async def subprocess_rate(n: int, concurrency: int) -> tuple[float, int]:
    async def one() -> bool:
        process = await asyncio.create_subprocess_exec(
            "/usr/bin/python3", "-I", "-S", "-c", CODE, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        return out == b"45\n"

    return await rate(n, concurrency, one)


class MockProcess:
    """`adp mock-llm` in its own process, as an LLM would be: not sharing this process's CPU."""

    def __init__(self, tasks: list[TaskSpec], latency: float) -> None:
        self.file = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)  # noqa: SIM115
        self.file.write("".join(task.model_dump_json() + "\n" for task in tasks))
        self.file.close()
        adp = str(Path(sys.executable).with_name("adp"))
        command = [adp, "mock-llm", "--tasks", self.file.name, "--latency", str(latency)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        Path(self.file.name).unlink()


async def task_rate(n: int, latency: float, concurrency: int, slots: int, *, tests: bool = False) -> tuple[float, int]:
    tasks = code_tasks(n, tests=tests)
    mock = MockProcess(tasks, latency)
    endpoint = LLMEndpoint(provider="mock", base_url=mock.url, model="mock", api_key="mock")
    client = LLMClient(endpoint, max_concurrency=max(concurrency, 16))
    sandbox = WarmSandbox(slots)
    try:
        started = time.perf_counter()
        trajectories = await run_tasks(
            tasks, LLMPolicy(client, name="mock"), sandbox, max_concurrent=concurrency, limits=AgentLimits()
        )
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
        await sandbox.aclose()
        mock.close()
    return n / elapsed, sum(not t.success for t in trajectories)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--slots", type=int, default=4, help="sandboxes")
    parser.add_argument("--concurrency", type=int, default=16, help="tasks in flight at mock 0 ms")
    args = parser.parse_args()
    console = Console(stderr=True)
    rows: list[tuple[str, float, str, str]] = []

    console.print("plain subprocess ...")
    plain, _ = await subprocess_rate(args.tasks, args.slots)
    rows.append(("plain `python3 -I -S` subprocess, executions/s (baseline)", plain, "1.00", "no isolation"))
    console.print("bubblewrap per execution ...")
    cold, failed = await sandbox_rate(BwrapSandbox(args.slots), args.tasks, args.slots)
    rows.append(("bwrap launch per execution, executions/s", cold, f"{cold / plain:.2f}", f"{failed} failed"))
    console.print("warm sandbox pool ...")
    warm, failed = await sandbox_rate(WarmSandbox(args.slots), args.tasks, args.slots)
    rows.append(("warm sandbox pool, executions/s", warm, f"{warm / plain:.2f}", f"{failed} failed"))

    console.print("python_tests checks ...")
    appended, failed = await check_rate(WarmSandbox(args.slots), args.tasks, args.slots, appended=True)
    rows.append(("code + tests in one execution (as before), warm, /s", appended, "1.00", f"{failed} failed"))
    checks, failed = await check_rate(WarmSandbox(args.slots), args.tasks, args.slots, appended=False)
    rows.append(
        ("check_python (own execution, evidence), warm, /s", checks, f"{checks / appended:.2f}", f"{failed} failed")
    )

    console.print("code tasks, mock at 0 ms ...")
    tasks_0, failed = await task_rate(args.tasks, 0.0, args.concurrency, args.slots)
    rows.append(("code tasks/s end to end, mock 0 ms", tasks_0, f"{tasks_0 / plain:.2f}", f"{failed} failed"))
    tested, failed = await task_rate(args.tasks, 0.0, args.concurrency, args.slots, tests=True)
    rows.append(("  the same with python_tests too", tested, f"{tested / tasks_0:.2f} of above", f"{failed} failed"))

    in_flight, latency = 64, 1.0
    n = in_flight * 2
    console.print(f"code tasks, mock at {latency:g} s, {in_flight} in flight ...")
    tasks_1, failed = await task_rate(n, latency, in_flight, args.slots)
    ideal = in_flight / (2 * latency)  # two LLM calls per task, every task overlapping
    rows.append((f"code tasks/s, mock {latency:g} s, {in_flight} in flight", tasks_1, "", f"{failed} failed"))
    rows.append(("  ideal for that (64 / (2 calls x 1 s))", ideal, f"{tasks_1 / ideal:.2f} of ideal", ""))

    table = Table(title=f"adp code bench ({args.tasks} tasks, {args.slots} sandboxes)")
    for column in ("measure", "per second", "ratio", "note"):
        table.add_column(column, justify="left" if column in ("measure", "note") else "right")
    for measure, value, ratio, note in rows:
        table.add_row(measure, f"{value:.1f}", ratio, note)
    Console(width=110).print(table)
    print(json.dumps({measure: round(value, 1) for measure, value, _, _ in rows}))


if __name__ == "__main__":
    asyncio.run(main())

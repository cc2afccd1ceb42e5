"""Local mode against redis mode, and one worker against two, on the same batch, in one run.

    .venv/bin/python -m bench.bench_scale [--tasks 200]

Starts its own redis-server on a free port and `adp worker` processes; the batch is code
tasks replayed by the oracle (no LLM), so the numbers measure the queueing and the runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.bench_code import code_tasks
from runtimes import scale
from runtimes.agent import run_tasks
from runtimes.llm import OraclePolicy
from runtimes.sandbox import WarmSandbox
from runtimes.testing import RedisServer, free_port, http_ok, wait_for

ADP = str(Path(sys.executable).with_name("adp"))


async def local_rate(n: int, slots: int) -> float:
    tasks = code_tasks(n)
    sandbox = WarmSandbox(slots)
    started = time.perf_counter()
    await run_tasks(tasks, OraclePolicy(), sandbox, max_concurrent=slots)
    elapsed = time.perf_counter() - started
    await sandbox.aclose()
    return n / elapsed


def redis_rate(server: RedisServer, n: int, workers: int, slots: int, round_: int) -> float:
    processes = []
    for index in range(workers):
        port = free_port()
        env = {**os.environ, "REDIS_URL": server.url, "MAX_CONCURRENT_TASKS": str(slots),
               "ADP_SANDBOX_UID_BASE": str(62000 + 100 * round_ + 10 * index)}  # fmt: skip
        processes.append(
            subprocess.Popen(
                [ADP, "worker", "--runtime", "code", "--name", f"bench-{round_}-{index}", "--metrics-port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(lambda port=port: http_ok(f"http://127.0.0.1:{port}/health"), 60, "a worker")
    client = scale.connect(server.url)
    tasks = code_tasks(n)
    batch = f"bench-{round_}"
    started = time.perf_counter()
    scale.enqueue(client, batch, tasks, "oracle")
    scale.collect(client, batch, [task.task_id for task in tasks], deadline_s=600)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=60)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--slots", type=int, default=2, help="sandboxes per worker (and locally)")
    args = parser.parse_args()
    console = Console(stderr=True)
    console.print("local mode ...")
    local = asyncio.run(local_rate(args.tasks, args.slots))
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            console.print("redis mode, 1 worker ...")
            one = redis_rate(server, args.tasks, 1, args.slots, 1)
            console.print("redis mode, 2 workers ...")
            two = redis_rate(server, args.tasks, 2, args.slots, 2)
        finally:
            server.stop()
    table = Table(title=f"adp scale-out bench ({args.tasks} code tasks, oracle, {args.slots} sandboxes per process)")
    for column in ("mode", "tasks/s", "ratio"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    table.add_row("local, in-process (baseline)", f"{local:.1f}", "1.00")
    table.add_row("redis, 1 worker", f"{one:.1f}", f"{one / local:.2f}")
    table.add_row("redis, 2 workers", f"{two:.1f}", f"{two / local:.2f} ({two / one:.2f} of 1 worker)")
    Console(width=110).print(table)
    print(json.dumps({"local": round(local, 1), "redis_1_worker": round(one, 1), "redis_2_workers": round(two, 1)}))


if __name__ == "__main__":
    main()

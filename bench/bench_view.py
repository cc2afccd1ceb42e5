"""`adp view`'s trajectories list at 100k trajectories: latency (p50/p95) of the first page,
each filter, the search, each sort, a deep keyset page and one trajectory with its
previous/next, served by the real `adp view` process over HTTP.

    .venv/bin/python -m bench.bench_view [--trajectories 100000] [--batches 20] [--requests 30] [--data-dir DIR]

A lake of synthetic trajectories (with their task rows and three steps each; varied types,
policies, models, generations, outcomes, error types, durations and tokens) is written with
``Lake.write_partition`` (into ``--data-dir`` and kept there when given, so a second run reuses
it). Baselines in the same run: the static stylesheet (what a request costs with no query at
all) and opening the lake-only catalog alone (what every page pays before its first query).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

from rich.console import Console
from rich.table import Table

from adp_pipeline.storage import Lake, QueryLimits, open_catalog, within_limits
from runtimes.core import ErrorType
from runtimes.settings import Settings
from runtimes.testing import free_port, http_ok, wait_for

ADP = str(Path(sys.executable).with_name("adp"))
TYPES = ["code", "web", "reasoning"]
POLICIES = ["oracle", "openai", "replay"]
MODELS = ["gpt-4o-mini", "qwen2.5-7b-instruct", "llama-3.1-8b", None]
WORDS = ["sort", "parse", "invoice", "shop", "cart", "button", "table", "sum", "prime", "graph", "route", "login"]
WORDS += ["form", "price", "list"]


def trajectory_rows(batch: int, count: int, start: datetime, rng: random.Random) -> Iterator[dict[str, object]]:
    for n in range(count):
        success = rng.random() < 0.7
        verified = None if rng.random() < 0.1 else (success and rng.random() < 0.9)
        n_steps = rng.randint(1, 12)
        prompt = rng.randint(200, 20_000)
        messages = [
            {"role": "system", "content": "You are an agent that completes tasks with tools. " * 4},
            {"role": "user", "content": f"Task {batch}-{n}: " + " ".join(rng.choices(WORDS, k=40))},
            {"role": "assistant", "content": "done " * 60},
        ]
        yield {
            "task_id": f"t{batch:02d}_{n:06d}",
            "task_type": TYPES[n % 3],
            "success": success,
            "error_type": None if success else rng.choice(list(ErrorType)).value,
            "error_message": None if success else "it went wrong " * 5,
            "system_failure": False,
            "policy": POLICIES[(n // 3) % 3],
            "model": MODELS[n % 4],
            "provider": "bench",
            "runtime_id": "bench",
            "n_steps": n_steps,
            "total_duration": round(rng.uniform(0.1, 120.0), 3),
            "final_result": "[1, 2, 3]",
            "prompt_tokens": prompt,
            "completion_tokens": prompt // 10,
            "total_tokens": prompt + prompt // 10,
            "llm_calls": n_steps,
            "llm_retries": 0,
            "llm_cached_calls": 0,
            "verified": verified,
            "verifier": json.dumps({"passed": bool(verified), "checks": {}, "details": ""}),
            "attempts": 1,
            "messages": json.dumps(messages),
            "tools": "[]",
            "schema_version": 1,
            "created_at": start + timedelta(seconds=n * 0.5 + rng.random()),
            "generation": n % 4 if n % 7 == 0 else 0,
            "lineage": None,
        }


def task_rows(batch: int, count: int, rng: random.Random) -> Iterator[dict[str, object]]:
    for n in range(count):
        words = " ".join(rng.choices(WORDS, k=30))
        yield {
            "task_id": f"t{batch:02d}_{n:06d}",
            "task_type": TYPES[n % 3],
            "description": f"Task {n} of batch {batch}: {words}. Report 100% of the results in snake_case.",
            "expected_tools": ["python_executor"],
            "max_steps": 12,
            "timeout": 60,
            "priority": 1,
            "constraints": "{}",
            "source_file": f"bench-{batch}.jsonl",
            "line_number": n + 1,
            "schema_version": 1,
            "ingested_at": None,
            "generation": 0,
            "lineage": None,
        }


def step_rows(batch: int, count: int) -> Iterator[dict[str, object]]:
    for n in range(count):
        for step in range(3):
            yield {
                "task_id": f"t{batch:02d}_{n:06d}",
                "step_id": step,
                "tool": "python_executor",
                "action_type": "tool_call",
                "action_params": json.dumps({"code": f"print({n} + {step})"}),
                "observation": f"{n + step}\n" * 10,
                "success": True,
                "error_type": None,
                "error_message": None,
                "duration": 0.25,
                "timestamp": None,
            }


def build_lake(data: Path, trajectories: int, batches: int) -> None:
    lake = Lake(data)
    rng = random.Random(21)
    per_batch = -(-trajectories // batches)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for batch in range(batches):
        count = min(per_batch, trajectories - batch * per_batch)
        key = f"2026-11-{batch + 1:02d}T00-00-00_bench{batch:02d}"
        lake.write_partition("tasks", key, task_rows(batch, count, rng))
        lake.write_partition("steps", key, step_rows(batch, count))
        lake.write_partition("trajectories", key, trajectory_rows(batch, count, start + timedelta(days=batch), rng))


class _Links(HTMLParser):
    """The hrefs of a page's links, by their rel (``next``, ``prev``) and all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.by_rel: dict[str, str] = {}
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.hrefs.append(str(found["href"]))
            if found.get("rel"):
                self.by_rel[str(found["rel"])] = str(found["href"])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.status == 200, url
        return str(response.read().decode())


def links(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency(call: Callable[[], object], requests: int, pid: int | None = None) -> tuple[float, float, float | None]:
    """p50 and p95 of ``call`` in milliseconds over ``requests`` calls after one warm-up, and the
    CPU milliseconds process ``pid`` (the server) spent per call: what the machine's other load
    moves far less than the wall time."""
    call()
    times = []
    cpu = cpu_seconds(pid) if pid is not None else 0.0
    for _ in range(requests):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    per_call = (cpu_seconds(pid) - cpu) * 1000 / requests if pid is not None else None
    times.sort()
    return statistics.median(times), times[max(0, -(-len(times) * 95 // 100) - 1)], per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--data-dir", type=Path, default=None, help="write the lake here and keep it (reused if there)")
    args = parser.parse_args()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as folder:
        data = args.data_dir or Path(folder) / "data"
        if not (data / "lake" / "trajectories").is_dir():
            console.print(f"writing a lake of {args.trajectories} trajectories in {args.batches} batches ...")
            started = time.perf_counter()
            build_lake(data, args.trajectories, args.batches)
            console.print(f"lake written in {time.perf_counter() - started:.1f} s")
        limits = QueryLimits.from_settings(Settings(data_dir=data))
        with open_catalog(data, limits) as connection, within_limits(connection, limits):
            (count,) = connection.execute("SELECT count(*) FROM trajectories").fetchone() or (0,)
            batch, task_id = connection.execute(
                "SELECT batch, task_id FROM trajectories ORDER BY batch, task_id LIMIT 1 OFFSET ?", [count // 2]
            ).fetchone() or ("", "")
        port = free_port()
        server = subprocess.Popen(
            [ADP, "view", "--data-dir", str(data), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: http_ok(base + "/static/view.css") or server.poll() is not None, 60, "adp view")
            rows = measure(base, server.pid, data, limits, batch, task_id, args.requests, console)
        finally:
            server.terminate()
            server.wait(timeout=30)
    first = next(p50 for label, _, p50, _, _ in rows if label == "first page, no filter (newest first)")
    table = Table(title=f"adp view bench ({count:,} trajectories, {args.requests} requests each, real `adp view`)")
    for column in ("request", "p50 ms", "p95 ms", "p50 / first page", "p95 < 300 ms", "server CPU ms"):
        table.add_column(column, justify="left" if column == "request" else "right")
    for label, _, p50, p95, cpu in rows:
        shown_cpu = "" if cpu is None else f"{cpu:.0f}"
        table.add_row(label, f"{p50:.0f}", f"{p95:.0f}", f"{p50 / first:.2f}", "yes" if p95 < 300 else "NO", shown_cpu)
    Console(width=130).print(table)
    # The machine's other load moves the wall times; the load average says how much there was.
    console.print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    results = {
        label: {"path": path, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "cpu_ms": cpu and round(cpu, 1)}
        for label, path, p50, p95, cpu in rows
    }
    print(json.dumps(results))


def measure(
    base: str, pid: int, data: Path, limits: QueryLimits, batch: str, task_id: str, requests: int, console: Console
) -> list[tuple[str, str, float, float, float | None]]:
    """(label, path, p50, p95) of every request the bench makes."""
    cases: list[tuple[str, str]] = [
        ("the stylesheet (no query: the server's own cost)", "/static/view.css"),
        ("first page, no filter (newest first)", "/trajectories"),
        ("filter: batch", f"/trajectories?batch={batch}"),
        ("filter: task type", "/trajectories?task_type=web"),
        ("filter: success=false", "/trajectories?success=false"),
        ("filter: verified=true", "/trajectories?verified=true"),
        ("filter: verified=none (no verifier)", "/trajectories?verified=none"),
        ("filter: error type", "/trajectories?error_type=timeout"),
        ("filter: policy", "/trajectories?policy=replay"),
        ("filter: model", "/trajectories?model=llama-3.1-8b"),
        ("filter: generation", "/trajectories?generation=2"),
        ("filter: failed + web + model (combined)", "/trajectories?success=false&task_type=web&model=gpt-4o-mini"),
        ("search: words of descriptions", "/trajectories?search=invoice+shop+cart"),
        ("search: part of a task id", "/trajectories?search=T07_00421"),
        ("search: 100% (a literal %)", "/trajectories?search=100%25"),
        ("search within a batch", f"/trajectories?batch={batch}&search=invoice"),
    ]
    for sort in ("created", "task_id", "batch", "duration", "steps", "tokens"):
        for order in ("asc", "desc"):
            if (sort, order) != ("created", "desc"):
                cases.append((f"sort: {sort} {order}", f"/trajectories?sort={sort}&order={order}"))
    console.print("following next links to page 50 ...")
    deep = "/trajectories?sort=duration&order=desc"
    for _ in range(49):
        deep = links(get(base + deep)).by_rel["next"].replace("&amp;", "&")
    cases.append(("page 50 (keyset, by duration)", deep))
    filtered = "?success=false&task_type=web&sort=tokens&order=asc"
    cases += [
        ("batches page", "/"),
        ("one trajectory + previous/next, no filter", f"/trajectories/{batch}/{task_id}"),
        ("one trajectory + previous/next, filtered", f"/trajectories/{batch}/{task_id}{filtered}"),
    ]
    rows: list[tuple[str, str, float, float, float | None]] = []

    def opening() -> None:
        with open_catalog(data, limits):
            pass

    p50, p95, _ = latency(opening, requests)
    rows.append(("opening the lake-only catalog alone (every page pays it)", "", p50, p95, None))
    for label, path in cases:
        console.print(label)
        p50, p95, cpu = latency(lambda path=path: get(base + path), requests, pid)  # type: ignore[misc]
        rows.append((label, path, p50, p95, cpu))
    return rows


if __name__ == "__main__":
    main()

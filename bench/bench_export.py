"""Training-set export throughput and peak memory, each export next to a baseline, in one run.

    .venv/bin/python -m bench.bench_export [--trajectories 100000] [--partitions 20]

A lake of synthetic trajectories (each a realistic 6-message code conversation with a tool
schema, ~3 KB of messages) is written once; then each measure runs in a fresh process, whose
peak resident memory (ru_maxrss) is reported with its time. Baseline: DuckDB copying the same
rows straight to one Parquet file (what reading and writing the data costs, no conversion).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from adp_pipeline.storage import Lake
from runtimes.agent import tools_for
from runtimes.core import TaskType

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from adp_pipeline.export import export_training_set
from adp_pipeline.storage import Lake
data, out, fmt = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
started = time.perf_counter()
if fmt == "baseline":  # DuckDB unconfined: adp's readers may not COPY out of the lake
    import duckdb
    with duckdb.connect() as connection:
        for sql in Lake(Path(data)).views_sql():
            connection.execute(sql)
        connection.execute(f"COPY (SELECT * FROM trajectories) TO '{out}' (FORMAT parquet)")
    rows = None
else:
    rows = export_training_set(Lake(Path(data)), out, export_format=fmt).rows
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process's peak resident memory
print(json.dumps({"seconds": seconds, "rows": rows, "peak_mb": peak_mb}))
"""


def trajectory_row(number: int, tools: str, created_at: datetime) -> dict[str, object]:
    code = f"def solve_{number}(values):\n    return sorted(set(values))[:{number % 50}]\n\nprint(solve_{number}([3]))"
    task = f"Task {number}: write solve_{number} that returns the smallest distinct values. " * 3

    def call(call_id: str, name: str, arguments: dict[str, str]) -> dict[str, object]:
        function = {"name": name, "arguments": json.dumps(arguments)}
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": function}],
        }

    messages = [
        {"role": "system", "content": "You are an agent that completes tasks with tools. " * 4},
        {"role": "user", "content": task},
        call("call_0", "python_executor", {"code": code}),
        {"role": "tool", "tool_call_id": "call_0", "content": "[1, 2, 3]\n" * 5},
        call("call_1", "complete_task", {"answer": "[1, 2, 3]"}),
        {"role": "tool", "tool_call_id": "call_1", "content": "task completed"},
    ]
    return {
        "task_id": f"bench_{number:07d}",
        "task_type": "code",
        "success": True,
        "error_type": None,
        "error_message": None,
        "policy": "oracle",
        "model": "oracle",
        "provider": "oracle",
        "runtime_id": "bench",
        "n_steps": 2,
        "total_duration": 0.5,
        "final_result": "[1, 2, 3]",
        "prompt_tokens": 900,
        "completion_tokens": 120,
        "total_tokens": 1020,
        "llm_calls": 2,
        "llm_retries": 0,
        "llm_cached_calls": 0,
        "verified": True,
        "verifier": json.dumps({"passed": True, "checks": {"python_tests": True}, "details": ""}),
        "attempts": 1,
        "messages": json.dumps(messages),
        "tools": tools,
        "schema_version": 1,
        "created_at": created_at,
        "generation": 0,
        "lineage": None,
    }


def build_lake(data: Path, trajectories: int, partitions: int) -> None:
    lake = Lake(data)
    tools = json.dumps(tools_for(TaskType.CODE))
    now = datetime.now(UTC)
    per_partition = -(-trajectories // partitions)
    for partition in range(partitions):
        start = partition * per_partition
        rows = [trajectory_row(n, tools, now) for n in range(start, min(start + per_partition, trajectories))]
        lake.write_partition("trajectories", f"bench-{partition:04d}", rows)


def measure(data: Path, out: Path, export_format: str) -> dict[str, float]:
    """Run one export in a fresh process: its time, rows and peak resident memory (MB)."""
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(data), str(out), export_format], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=20)
    args = parser.parse_args()
    console = Console(stderr=True)
    table = Table(title=f"adp export bench ({args.trajectories} trajectories in {args.partitions} partitions)")
    for column in ("measure", "seconds", "ratio", "rows/s", "peak MB"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        console.print(f"writing a lake of {args.trajectories} trajectories ...")
        started = time.perf_counter()
        build_lake(data, args.trajectories, args.partitions)
        console.print(f"lake written in {time.perf_counter() - started:.1f} s")
        runs = [
            ("DuckDB COPY to Parquet (baseline)", "baseline", "copy.parquet"),
            ("export openai → Parquet", "openai", "openai.parquet"),
            ("export openai → JSON lines", "openai", "openai.jsonl"),
            ("export trl → Parquet", "trl", "trl.parquet"),
            ("export sharegpt → JSON lines", "sharegpt", "sharegpt.jsonl"),
            ("export atif → JSON lines", "atif", "atif.jsonl"),
            ("export atif → Parquet", "atif", "atif.parquet"),
        ]
        baseline = 0.0
        for label, export_format, name in runs:
            console.print(f"{label} ...")
            result = measure(data, Path(folder) / name, export_format)
            baseline = baseline or result["seconds"]
            rows = result["rows"] if result["rows"] is not None else args.trajectories
            table.add_row(
                label,
                f"{result['seconds']:.1f}",
                f"{result['seconds'] / baseline:.1f}",
                f"{rows / result['seconds']:,.0f}",
                f"{result['peak_mb']:.0f}",
            )
            results[name] = result
    Console(width=120).print(table)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

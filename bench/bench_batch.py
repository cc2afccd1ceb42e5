"""One `adp run` per batch size: wall time, tasks/s and peak memory of the whole process tree.

    .venv/bin/python -m bench.bench_batch [--tasks 2000 20000 100000]

For each size N a file of N trivial code tasks (the oracle replays one `python_executor` call
that prints a number, then `complete_task`) is run by `adp run FILE --policy oracle` in a
fresh data dir, in a clean environment (no .env file, no ADP_*/DAGSTER_* variables). The
subprocess runs the adp of the tree this bench file sits in (PYTHONPATH, not the venv's entry
point), so that the same venv can measure another checkout (`git worktree add`). A sampler
walks the process tree under `adp run` in /proc (sandboxes included) every --interval seconds
and sums VmRSS, and every --pss-interval seconds sums PSS (shared pages counted once over the
tree); `adp run`'s own peak is its kernel high-water mark (VmHWM). The phases come from the
run's Dagster event log: adp run's RSS at the end of each step (and its peak in it) shows which
step holds memory in proportion to the batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
# Runs the cli of the tree on PYTHONPATH and says which one it imported, on stderr's first line.
_LAUNCH = (
    "import sys, adp_pipeline; print('adp_pipeline from', adp_pipeline.__file__, file=sys.stderr, flush=True); "
    "from adp_pipeline.cli import main; sys.argv[0] = 'adp'; main()"
)


def task_line(number: int) -> str:
    """A code task as tests/helpers.py `code_task` writes it: the oracle runs the code, answers its output."""
    answer = str(number % 997)
    code = f"print({number} % 997)"
    task = {
        "task_id": f"bench_{number:07d}",
        "task_type": "code",
        "description": f"print {number} modulo 997",
        "expected_tools": ["python_executor"],
        "max_steps": 5,
        "constraints": {
            "reference_tool_calls": [
                {"name": "python_executor", "arguments": {"code": code}},
                {"name": "complete_task", "arguments": {"answer": answer}},
            ],
            "verify": {"expected_answer": answer},
        },
    }
    return json.dumps(task)


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:  # the process ended between listing and reading
        return ""


def _status_kb(pid: int, key: str) -> int:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, through every thread's children list (no scan of all of /proc)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            threads = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for thread in threads:
            pending.extend(int(child) for child in _read(f"/proc/{current}/task/{thread}/children").split())
    return found


def _forked_copy(pid: int, parent_cmdline: str) -> bool:
    """A fork of its parent that has not exec'd yet shares the parent's pages: summing its RSS would
    count them twice (a sandbox's launch briefly shows a second 300 MB `adp run`)."""
    return _read(f"/proc/{pid}/cmdline") == parent_cmdline


@dataclass
class Sampler:
    """Samples the tree's memory in a thread until stopped: summed VmRSS every ``interval`` seconds,
    summed PSS (shared pages split between their processes) every ``pss_interval`` seconds or ten
    times what one PSS reading costs, whichever is longer (smaps_rollup walks the page tables)."""

    pid: int
    interval: float
    pss_interval: float
    peak_tree_kb: int = 0
    peak_pss_kb: int = 0
    peak_processes: int = 0
    root_hwm_kb: int = 0
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)  # (s, tree RSS, adp RSS, tree PSS) kB
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started_wall = time.time()
        self._started = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        next_pss = 0.0
        root_cmdline = _read(f"/proc/{self.pid}/cmdline")
        while not self._stop.is_set():
            pids = [pid for pid in _tree(self.pid) if pid == self.pid or not _forked_copy(pid, root_cmdline)]
            sizes = {pid: _status_kb(pid, "VmRSS:") for pid in pids}
            total = sum(sizes.values())
            self.peak_tree_kb = max(self.peak_tree_kb, total)
            self.peak_processes = max(self.peak_processes, len([size for size in sizes.values() if size]))
            self.root_hwm_kb = max(self.root_hwm_kb, _status_kb(self.pid, "VmHWM:"))
            pss = 0
            if (now := time.perf_counter()) >= next_pss:
                pss = sum(_rollup_kb(pid, "Pss:") for pid in pids)
                self.peak_pss_kb = max(self.peak_pss_kb, pss)
                next_pss = now + max(self.pss_interval, 10 * (time.perf_counter() - now))
            self.timeline.append((round(now - self._started, 2), total, sizes.get(self.pid, 0), pss))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _rollup_kb(pid: int, key: str) -> int:
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def step_times(data: Path, started_wall: float) -> list[tuple[str, float, float]]:
    """Each Dagster step of the run as (step, start, end) in seconds after the run's start, from the
    instance's event log (SQLite under DAGSTER_HOME; timestamps are UTC)."""
    steps: dict[str, list[float]] = {}
    for database in sorted((data / "dagster" / "history" / "runs").glob("*-*.db")):
        with contextlib.closing(sqlite3.connect(database)) as connection:
            rows = connection.execute(
                "SELECT step_key, dagster_event_type, timestamp FROM event_logs "
                "WHERE dagster_event_type IN ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE') ORDER BY id"
            ).fetchall()
        for step, kind, stamp in rows:
            at = datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp() - started_wall
            steps.setdefault(step, [at, at])[0 if kind == "STEP_START" else 1] = at
    return [(step, start, end) for step, (start, end) in sorted(steps.items(), key=lambda item: item[1][0])]


def phases(
    result_seconds: float, steps: list[tuple[str, float, float]], timeline: list[tuple[float, int, int, int]]
) -> list[dict[str, object]]:
    """Seconds and memory of each phase: before the first step (start, registering the file), each
    step, after the last (the summary): adp run's RSS at the phase's end and its peak in it."""
    bounds = [("start", 0.0, steps[0][1] if steps else result_seconds)]
    bounds += steps
    bounds.append(("summary", steps[-1][2] if steps else 0.0, result_seconds))
    out: list[dict[str, object]] = []
    for name, start, end in bounds:
        inside = [sample for sample in timeline if start <= sample[0] <= end] or [
            min(timeline, key=lambda s: abs(s[0] - end))
        ]
        pss = [sample[3] for sample in inside if sample[3]]
        out.append(
            {
                "phase": name,
                "seconds": round(end - start, 1),
                "adp_end_mb": round(next((sample[2] for sample in reversed(inside) if sample[2]), 0) / 1024),
                "adp_peak_mb": round(max(sample[2] for sample in inside) / 1024),
                "tree_pss_peak_mb": round(max(pss) / 1024) if pss else None,
            }
        )
    return out


@dataclass
class Result:
    tasks: int
    seconds: float
    peak_tree_mb: float
    peak_pss_mb: float
    peak_adp_mb: float
    cpu_seconds: float
    processes: int
    trajectories: int
    verified: int
    returncode: int
    imported: str
    phases: list[dict[str, object]]
    error: str = ""

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


def clean_env(data: Path, tasks: Path) -> dict[str, str]:
    """This environment less adp's and Dagster's settings, plus a fresh data dir and no dotenv file."""
    from runtimes.settings import Settings

    names = {
        choice.upper()
        for info in Settings.model_fields.values()
        for choice in getattr(info.validation_alias, "choices", ())
        if isinstance(choice, str)
    }
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ADP_", "DAGSTER_")) and key.upper() not in names
    }
    return {**env, "ADP_ENV_FILE": "", "ADP_DATA_DIR": str(data), "TASKS_DIR": str(tasks), "PYTHONPATH": str(ROOT)}


def count_trajectories(data: Path) -> tuple[int, int]:
    from adp_pipeline.storage import Lake

    with Lake(data).connect() as connection:
        row = connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE verified_success) FROM trajectories"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run_batch(n: int, interval: float, pss_interval: float, timeline: Path | None, keep: Path | None) -> Result:
    kept = contextlib.nullcontext(tempfile.mkdtemp(prefix="bench-batch-", dir=keep)) if keep else None
    with kept or tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        base = Path(folder)
        data, tasks = base / "data", base / "tasks"
        tasks.mkdir()
        task_file = base / f"batch_{n}.jsonl"
        task_file.write_text("".join(task_line(number) + "\n" for number in range(n)))
        log = base / "adp-run.log"
        started = time.perf_counter()
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-c", _LAUNCH, "run", str(task_file), "--policy", "oracle"],
                cwd=ROOT,
                env=clean_env(data, tasks),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            sampler = Sampler(process.pid, interval, pss_interval)
            # wait4's rusage: the largest peak RSS of adp run and its reaped children (adp run's own:
            # every child is far smaller), exact where the sampler may miss the last moments; and the
            # CPU time of the whole tree, which other load on the machine changes far less than wall.
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        sampler.stop()
        text = log.read_text(errors="replace")
        first = text.splitlines()[0] if text else ""
        imported = first.removeprefix("adp_pipeline from ").strip()
        steps = step_times(data, sampler.started_wall)
        if timeline is not None:
            timeline.write_text(
                json.dumps({"tasks": n, "seconds": seconds, "steps": steps, "samples": sampler.timeline})
            )
        trajectories = verified = 0
        error = ""
        if returncode == 0:
            trajectories, verified = count_trajectories(data)
        else:
            error = text[-2000:]
        return Result(
            tasks=n,
            seconds=seconds,
            peak_tree_mb=sampler.peak_tree_kb / 1024,
            peak_pss_mb=sampler.peak_pss_kb / 1024,
            peak_adp_mb=max(sampler.root_hwm_kb, usage.ru_maxrss) / 1024,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            processes=sampler.peak_processes,
            trajectories=trajectories,
            verified=verified,
            returncode=returncode,
            imported=imported,
            phases=phases(seconds, steps, sampler.timeline),
            error=error,
        )


def _wall(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s" if minutes else f"{rest:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[2000, 20000, 100000], help="batch sizes")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between RSS samples")
    parser.add_argument("--pss-interval", type=float, default=0.5, help="seconds between PSS samples (at least)")
    parser.add_argument("--timeline", type=Path, default=None, help="folder for each run's memory timeline (JSON)")
    parser.add_argument("--keep", type=Path, default=None, help="keep each run's folder (data dir, log) under this one")
    args = parser.parse_args()
    console = Console(stderr=True)
    expected = str(ROOT / "adp_pipeline" / "__init__.py")
    results: list[Result] = []
    for n in sorted(args.tasks):
        console.print(f"adp run, {n:,} tasks ...")
        timeline = args.timeline / f"timeline_{n}.json" if args.timeline else None
        if args.timeline:
            args.timeline.mkdir(parents=True, exist_ok=True)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        result = run_batch(n, args.interval, args.pss_interval, timeline, args.keep)
        if result.imported != expected:  # the subprocess must measure this tree, not the venv's editable install
            raise SystemExit(f"adp run imported {result.imported!r}, not {expected!r}")
        if result.error:
            console.print(f"[red]adp run failed (exit {result.returncode}):[/red]\n{result.error}")
        results.append(result)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    out = Console(width=130)
    table = Table(title=f"adp run --policy oracle, trivial code tasks (tree {ROOT}, {commit.strip()})")
    columns = ("tasks", "wall", "tasks/s", "CPU ms/task", "peak, adp run", "peak RSS, tree", "peak PSS, tree",
               "processes", "verified")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for result in results:
        table.add_row(
            f"{result.tasks:,}",
            _wall(result.seconds),
            f"{result.rate:.1f}",
            f"{1000 * result.cpu_seconds / result.tasks:.1f}",
            f"{result.peak_adp_mb:,.0f} MB",
            f"{result.peak_tree_mb:,.0f} MB",
            f"{result.peak_pss_mb:,.0f} MB",
            str(result.processes),
            f"{result.verified:,}/{result.trajectories:,}" if not result.error else f"failed ({result.returncode})",
        )
    out.print(table)
    if len(results) > 1:
        low, high = results[0], results[-1]
        per_task = 1024 / (high.tasks - low.tasks)
        growths = {
            "adp run": high.peak_adp_mb - low.peak_adp_mb,
            "tree RSS": high.peak_tree_mb - low.peak_tree_mb,
            "tree PSS": high.peak_pss_mb - low.peak_pss_mb,
        }
        out.print(
            f"growth {low.tasks:,} → {high.tasks:,} tasks: "
            + ", ".join(f"{name} {mb:+,.0f} MB ({mb * per_task:.1f} KB per task)" for name, mb in growths.items())
        )
    by_phase = Table(title="per phase: seconds, adp run's RSS at its end (its peak in it)")
    by_phase.add_column("phase")
    for result in results:
        by_phase.add_column(f"{result.tasks:,} tasks", justify="right")
    names = list(dict.fromkeys(phase["phase"] for result in results for phase in result.phases))
    for name in names:
        cells = []
        for result in results:
            phase = next((phase for phase in result.phases if phase["phase"] == name), None)
            cells.append(f"{phase['seconds']} s, {phase['adp_end_mb']} MB ({phase['adp_peak_mb']})" if phase else "—")
        by_phase.add_row(str(name), *cells)
    out.print(by_phase)
    print(
        json.dumps(
            [{**asdict(result), "rate": round(result.rate, 1), "error": bool(result.error)} for result in results]
        )
    )


if __name__ == "__main__":
    main()

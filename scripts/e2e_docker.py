"""End-to-end test of the compose deployment (`make e2e-docker`).

Starts a Docker engine when none answers (and stops it again), builds every image, brings the
stack up with two code runtimes, drops a mixed task file into the task folder that the Dagster
daemon's sensor watches, and waits for the run it launches (in its own container, through
dagster-docker's run launcher) to send every task through the Redis streams to the
containerised runtimes. Then it checks that every accepted task has exactly one trajectory,
run by a runtime container of its type, that the bad line is rejected, that the MiniWoB tasks
were reseeded into a new generation which the sensor ran (the synthesis loop), that the Dagster runs
succeeded, that Prometheus scraped every worker's counts and that the viewer service (adp view)
shows the batch; and takes the stack down with its volumes. Exits non-zero, with the failing
check and the services' logs, on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "adp-e2e"
TASK_FILE = "e2e_mixed.jsonl"
TRAJECTORY_COLUMNS = "batch, task_id, task_type, success, error_type, error_message, runtime_id"


class E2EError(Exception):
    """A check of the end-to-end run failed."""


def log(message: str) -> None:
    print(f"e2e: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, condition: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    """Poll ``condition`` until it returns something truthy; E2EError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise E2EError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@contextlib.contextmanager
def docker_engine(state_dir: Path) -> Iterator[None]:
    """A running Docker engine: the one that answers, or a ``dockerd`` started (and stopped) here."""
    if docker_answers():
        yield
        return
    pidfile = state_dir / "dockerd.pid"
    if pidfile.exists() and not Path(f"/proc/{pidfile.read_text().strip() or 0}").exists():
        pidfile.unlink()  # left by a dockerd that was killed (a session ended): it would refuse to start
    log(f"starting dockerd (log: {state_dir / 'dockerd.log'})")
    with open(state_dir / "dockerd.log", "wb") as output:
        process = subprocess.Popen(["dockerd", "--pidfile", str(pidfile)], stdout=output, stderr=output)
    try:
        wait_for("dockerd to answer", lambda: process.poll() is not None or docker_answers(), 60, 0.5)
        if process.poll() is not None:
            raise E2EError(f"dockerd exited with {process.returncode}; see {state_dir / 'dockerd.log'}")
        yield
    finally:
        if process.poll() is None:
            log("stopping dockerd")
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Stack:
    """The compose project under test, with its own names, ports and passwords."""

    def __init__(self) -> None:
        self.ports = {name: free_port() for name in ("REDIS_PORT", "DAGSTER_PORT", "PROMETHEUS_PORT", "ADP_VIEW_PORT")}
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": PROJECT,
            "ADP_NETWORK": PROJECT,
            "ADP_DATA_VOLUME": f"{PROJECT}-data",
            "REDIS_PASSWORD": secrets.token_hex(16),
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "ADP_POLICY": "oracle",
            "ADP_SENSOR_INTERVAL_SECONDS": "5",
            # One generation of synthesis: the MiniWoB tasks are reseeded through the web workers.
            "ADP_SYNTH_MAX_GENERATION": "1",
            "ADP_SYNTH_CANDIDATES": "4",
            "ADP_REDIS_DEADLINE": "600",
            "ADP_STOP_GRACE": "20s",
            **{name: str(port) for name, port in self.ports.items()},
        }

    def compose_process(self, *args: str, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        command = ["docker", "compose", "--file", str(ROOT / "docker-compose.yml"), *args]
        return subprocess.run(command, env=self.env, input=input_bytes, capture_output=True, cwd=ROOT)

    def compose(self, *args: str, input_bytes: bytes | None = None, check: bool = True) -> str:
        result = self.compose_process(*args, input_bytes=input_bytes)
        if check and result.returncode != 0:
            raise E2EError(f"docker compose {' '.join(args)} failed:\n{result.stderr.decode(errors='replace')}")
        return result.stdout.decode(errors="replace")

    def query(self, sql: str) -> list[dict[str, Any]] | None:
        """Rows of ``sql`` over the deployment's catalog, or None while it has none."""
        result = self.compose_process("exec", "-T", "dagster-code", "adp", "query", "--format", "json", sql)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def http_json(self, port_name: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"http://127.0.0.1:{self.ports[port_name]}{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def http_text(self, port_name: str, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[port_name]}{path}", timeout=10) as response:
            body: bytes = response.read()
        return body.decode()

    def down(self) -> None:
        """Remove the stack, its volumes and any run container the run launcher left behind."""
        runs = subprocess.run(
            ["docker", "ps", "--all", "--quiet", "--filter", f"label=adp.deployment={PROJECT}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if runs:
            subprocess.run(["docker", "rm", "--force", *runs], capture_output=True)
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)

    def container_hosts(self, service: str) -> set[str]:
        """The hostnames (short container ids) of a service's containers."""
        return {line[:12] for line in self.compose("ps", "--quiet", service).split()}


def mixed_batch() -> tuple[bytes, dict[str, str]]:
    """Tasks with reference solutions of every type, and one bad line; and the expected types."""
    examples = ROOT / "examples"
    lines = [line for line in (examples / "tasks.jsonl").read_text().splitlines() if "reference_tool_calls" in line]
    lines += (examples / "humaneval.jsonl").read_text().splitlines()[:4]
    lines += (examples / "miniwob.jsonl").read_text().splitlines()[:4]
    expected = {task["task_id"]: task["task_type"] for task in map(json.loads, lines)}
    lines.append('{"task_id": "e2e_bad_line", "task_type": "video"}')
    return ("\n".join(lines) + "\n").encode(), expected


def run(stack: Stack, timeout: float) -> None:
    started = time.monotonic()
    log("docker compose up --wait (2 code runtimes)")
    stack.compose("up", "--detach", "--wait", "--scale", "runtime-code=2")
    log(f"stack healthy in {time.monotonic() - started:.0f} s")

    batch, expected = mixed_batch()
    counts = {kind: list(expected.values()).count(kind) for kind in ("code", "web", "reasoning")}
    log(f"submitting {TASK_FILE}: {len(expected)} tasks {counts} and 1 bad line")
    # Written aside and renamed, as a producer should: the sensor never sees half a file.
    write = f"cat > /data/inbox/.part && mv /data/inbox/.part /data/inbox/{TASK_FILE}"
    stack.compose("exec", "-T", "dagster-code", "sh", "-c", write, input_bytes=batch)

    submitted = time.monotonic()
    seen = -1

    def all_trajectories() -> list[dict[str, Any]] | None:
        nonlocal seen
        rows = stack.query(f"SELECT {TRAJECTORY_COLUMNS} FROM trajectories WHERE generation = 0")
        if rows is not None and len(rows) != seen:
            seen = len(rows)
            log(f"{seen}/{len(expected)} trajectories after {time.monotonic() - submitted:.0f} s")
        return rows if rows is not None and len(rows) >= len(expected) else None

    rows = wait_for("a trajectory for every task", all_trajectories, timeout)
    check_trajectories(stack, rows, expected)
    check_rejects(stack, bad_line=len(expected) + 1)
    check_synthesis(stack, timeout)
    check_dagster_runs(stack)
    check_prometheus(stack, len(expected))
    check_viewer(stack, rows)
    log(f"passed in {time.monotonic() - started:.0f} s from up to last check")


def check_trajectories(stack: Stack, rows: list[dict[str, Any]], expected: dict[str, str]) -> None:
    ids = [row["task_id"] for row in rows]
    if sorted(ids) != sorted(expected):
        raise E2EError(f"trajectories {sorted(ids)} are not one per task {sorted(expected)}")
    failed = [f"{row['task_id']}: {row['error_type']}: {row['error_message']}" for row in rows if not row["success"]]
    if failed:
        raise E2EError(f"tasks with a reference solution failed: {failed}")
    hosts = {kind: stack.container_hosts(f"runtime-{kind}") for kind in ("code", "web", "reasoning")}
    used: set[str] = set()
    for row in rows:
        # A worker's runtime_id is <runtime>-<hostname>-<pid>; a container's hostname is its short id.
        kind, (runtime, host, _) = row["task_type"], row["runtime_id"].split("-")
        if runtime != kind or host not in hosts[kind]:
            raise E2EError(f"{row['task_id']} ({kind}) ran on {row['runtime_id']}, not a runtime-{kind} container")
        if kind == "code":
            used.add(host)
    log(f"every task has one successful trajectory; code tasks ran on {len(used)} of {len(hosts['code'])} replicas")


def check_rejects(stack: Stack, bad_line: int) -> None:
    rejects = stack.query("SELECT line_number, field FROM task_rejects") or []
    if [(row["line_number"], row["field"]) for row in rejects] != [(bad_line, "task_type")]:
        raise E2EError(f"expected the bad last line rejected on task_type, got {rejects}")
    log("the bad line is in task_rejects")


def check_synthesis(stack: Stack, timeout: float) -> None:
    """The loop in the stack: the batch's MiniWoB essences were reseeded (probed and self-checked
    on the web workers: the Dagster containers have no browser), the new file was picked up by
    the sensor, and each new task has one successful trajectory."""

    def generation_1() -> tuple[int, list[dict[str, Any]]] | None:
        made = stack.query("SELECT count(*) AS n FROM synthesized_tasks")
        ran = stack.query("SELECT task_id, success, error_message FROM trajectories WHERE generation = 1")
        if not made or ran is None or not made[0]["n"] or len(ran) < made[0]["n"]:
            return None
        return made[0]["n"], ran

    accepted, rows = wait_for("the synthesized generation to run", generation_1, timeout)
    failed = [f"{row['task_id']}: {row['error_message']}" for row in rows if not row["success"]]
    if len(rows) != accepted or failed:
        raise E2EError(f"expected {accepted} successful generation-1 trajectories, got {len(rows)}; failed: {failed}")
    rejected = stack.query("SELECT stage, count(*) AS n FROM synthesis_rejects GROUP BY 1") or []
    log(f"synthesis: {accepted} reseeded tasks accepted and run, rejected by stage {rejected}")


def check_dagster_runs(stack: Stack) -> None:
    query = "{ runsOrError { ... on Runs { results { runId jobName status } } } }"

    def finished_runs() -> list[dict[str, str]] | None:
        runs = stack.http_json("DAGSTER_PORT", "/graphql", {"query": query})["data"]["runsOrError"]["results"]
        return runs if runs and all(run["status"] in {"SUCCESS", "FAILURE", "CANCELED"} for run in runs) else None

    # The trajectories land before the run ends: its asset checks still run.
    runs = wait_for("the Dagster run to finish", finished_runs, 120)
    if any(run["status"] != "SUCCESS" for run in runs):
        raise E2EError(f"expected only successful Dagster runs, got {runs}")
    log(f"Dagster runs: {[(run['jobName'], run['status']) for run in runs]}")


def check_prometheus(stack: Stack, tasks: int) -> None:
    def instant(expr: str) -> float | None:
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        result = stack.http_json("PROMETHEUS_PORT", path)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    # Two code runtimes, one web, one reasoning: four targets up; their completed counts add up.
    wait_for("Prometheus to scrape 4 runtime workers", lambda: instant('count(up{job="adp-runtimes"} == 1)') == 4, 60)
    # The batch's tasks, and the synthesis runs (probes, self-checks, the new generation) on top.
    wait_for(
        f"Prometheus to count at least {tasks} completed tasks",
        lambda: (instant('sum(tasks_completed_total{status="success"})') or 0) >= tasks,
        60,
    )
    log(f"Prometheus: 4 workers up, sum(tasks_completed_total) >= {tasks}")


def check_viewer(stack: Stack, rows: list[dict[str, Any]]) -> None:
    """The viewer service answers on its published port and shows the batch: listed on the
    batches page, and one of its trajectories with its steps."""
    (batch,) = {row["batch"] for row in rows}
    page = stack.http_text("ADP_VIEW_PORT", "/")
    if html.escape(batch) not in page:
        raise E2EError(f"the viewer's batches page does not list {batch}")
    task_id = sorted(row["task_id"] for row in rows)[0]
    path = "/trajectories/" + "/".join(urllib.parse.quote(part, safe="") for part in (batch, task_id))
    trajectory = stack.http_text("ADP_VIEW_PORT", path)
    if 'class="step' not in trajectory:
        raise E2EError(f"the viewer shows no step of {batch}/{task_id}")
    log(f"viewer: lists {batch}, shows the steps of {task_id}")


def dump_logs(stack: Stack) -> None:
    print(stack.compose("ps", "--all", check=False), file=sys.stderr)
    print(stack.compose("logs", "--no-color", "--tail", "60", check=False), file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", default=os.environ.get("BASE_IMAGE", "debootstrap"))
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the batch (default 600)")
    parser.add_argument(
        "--keep", action="store_true", help="leave the stack up for a look (with an engine that was already running)"
    )
    args = parser.parse_args()

    state_dir = Path(os.environ.get("ADP_E2E_STATE", "/var/tmp/adp-e2e"))
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        return build_and_test(args.base_image, args.timeout, args.keep, state_dir)
    except E2EError as exc:  # the engine would not start
        log(f"FAILED: {exc}")
        return 1


def build_and_test(base_image: str, timeout: float, keep: bool, state_dir: Path) -> int:
    with docker_engine(state_dir):
        started = time.monotonic()
        build = subprocess.run(
            ["bash", str(ROOT / "scripts" / "docker_build.sh")], env={**os.environ, "BASE_IMAGE": base_image}
        )
        if build.returncode != 0:
            return build.returncode
        log(f"images built in {time.monotonic() - started:.0f} s")
        stack = Stack()
        stack.down()  # the leftovers of an interrupted run
        try:
            run(stack, timeout)
        except (E2EError, OSError) as exc:
            dump_logs(stack)
            log(f"FAILED: {exc}")
            return 1
        finally:
            if not keep:
                stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

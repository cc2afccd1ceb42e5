"""Redis mode keeps what the workers finished: `adp run --mode redis` killed (SIGKILL, no
cleanup) while enqueueing or while collecting, with the workers running on, and run again
collects what they published and enqueues only what is not on the queue; nothing is lost and no
task runs twice. A run of another policy ignores the crashed run's results and skips its tasks."""

from __future__ import annotations

import hashlib
import signal
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import redis

from adp_pipeline.checkpoint import checkpoint_dir
from adp_pipeline.storage import Lake
from adp_pipeline.task_files import partition_key_for
from runtimes.core import ErrorType, TaskSpec, Trajectory
from runtimes.scale import ENQUEUE_CHUNK, BatchRun, Consumer, Delivery, ResultReader, result_stream, run_state
from runtimes.testing import RedisServer
from tests.helpers import Workers, adp, code_task, wait_for

TASKS = ENQUEUE_CHUNK + 100  # two chunks of XADDs: the kill lands between them


def batch_file(folder: Path, tasks: int, *, sleep: float = 0.0) -> tuple[Path, str]:
    path = folder / "nightly.jsonl"
    lines = [
        code_task(f"t{n:04d}", f"import time\ntime.sleep({sleep})\nprint({n} * 3)", str(n * 3)) for n in range(tasks)
    ]
    path.write_text("".join(line + "\n" for line in lines))
    return path, partition_key_for(path.stem, hashlib.sha256(path.read_bytes()).hexdigest())


def env(data: Path, server: RedisServer, commit_every: int = 10, **extra: str) -> dict[str, str]:
    return {
        "ADP_DATA_DIR": str(data),
        "TASKS_DIR": str(data.parent / "inbox"),
        "ADP_MODE": "redis",
        "REDIS_URL": server.url,
        "ADP_REDIS_DEADLINE": "120",
        "ADP_COMMIT_EVERY_TASKS": str(commit_every),
        **extra,
    }


def committed_in_checkpoint(data: Path, batch: str) -> set[str]:
    return {
        task_id
        for chunk in checkpoint_dir(data, batch).glob("*.trajectories.parquet")
        for task_id in pq.read_table(chunk, columns=["task_id"]).column(0).to_pylist()
    }


def counter(workers: Workers, metric: str, *names: str) -> float:
    """``metric`` summed over every label and every worker (or the workers ``names``)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for name in names or tuple(workers.processes)
        for line in workers.metrics(name).splitlines()
        if line.startswith(metric + "{")
    )


def test_killed_while_enqueueing_and_while_collecting_the_reruns_lose_nothing_and_run_nothing_twice(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    data = tmp_path / "data"
    path, batch = batch_file(tmp_path, TASKS)
    workers.start("w1")
    workers.start("w2")
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)

    # 1. Killed between the first chunk of XADDs and the second: the workers run on.
    killed = adp("run", str(path), "--policy", "oracle", env=env(data, redis_server, ADP_TEST_KILL_AT="redis:enqueued"))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert client.hget(run_state(batch), "enqueued") == str(ENQUEUE_CHUNK)
    wait_for(lambda: client.xlen(result_stream(batch)) == ENQUEUE_CHUNK, 60, "the workers to finish the first chunk")
    assert committed_in_checkpoint(data, batch) == set()

    # 2. Resumed: it takes those 500 results instead of running them again, enqueues the other
    # 100 only, and is killed at its third committed chunk (of 50).
    crash = env(data, redis_server, 50, ADP_TEST_KILL_AT="chunk:committed@3")
    killed = adp("run", str(path), "--policy", "oracle", env=crash)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert client.hget(run_state(batch), "enqueued") == str(TASKS)
    committed = committed_in_checkpoint(data, batch)
    assert len(committed) == 150
    wait_for(lambda: counter(workers, "tasks_completed_total") >= TASKS, 60, "the workers to finish the batch")
    killed_at = datetime.now(UTC)

    # 3. Resumed again: every result is on the stream already; nothing is enqueued or run.
    rerun = adp("run", str(path), "--policy", "oracle", env=env(data, redis_server, 50))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"150 of {TASKS} tasks done before; ran {TASKS - 150}" in rerun.stdout

    assert counter(workers, "tasks_completed_total") == TASKS  # each task ran (and was published) once
    assert counter(workers, "tasks_superseded_total") == 0
    assert counter(workers, "tasks_completed_total", "w1") > 0 and counter(workers, "tasks_completed_total", "w2") > 0
    with Lake(data).connect() as connection:
        rows = connection.execute(
            "SELECT task_id, verified_success, runtime_id FROM trajectories WHERE batch = ?", [batch]
        ).fetchall()
        last_step = dict(
            connection.execute(
                "SELECT task_id, max(timestamp) FROM steps WHERE batch = ? GROUP BY 1", [batch]
            ).fetchall()
        )
    assert sorted(row[0] for row in rows) == [f"t{n:04d}" for n in range(TASKS)]  # one each, none lost
    assert all(row[1] for row in rows) and {row[2] for row in rows} == {"w1", "w2"}
    assert all(stamp < killed_at for stamp in last_step.values())  # the re-run ran none of them
    assert sorted(checkpoint_dir(data, batch).glob("*.parquet")) == []  # committed, the chunks gone


def test_a_run_with_another_policy_after_a_crash_ignores_the_old_results_and_skips_the_old_tasks(
    tmp_path: Path, redis_server: RedisServer, workers: Workers
) -> None:
    data = tmp_path / "data"
    path, batch = batch_file(tmp_path, 40, sleep=0.2)
    workers.start("w1")
    workers.start("w2")

    killed = adp(
        "run", str(path), "--policy", "oracle", env=env(data, redis_server, ADP_TEST_KILL_AT="chunk:committed@2")
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert len(committed_in_checkpoint(data, batch)) == 20

    other = adp("run", str(path), "--policy", "mock", env=env(data, redis_server))
    assert other.returncode == 0, other.stdout + other.stderr
    assert "resumed" not in other.stdout
    with Lake(data).connect() as connection:
        rows = connection.execute(
            "SELECT task_id, policy, success FROM trajectories WHERE batch = ?", [batch]
        ).fetchall()
    assert sorted(row[0] for row in rows) == [f"t{n:04d}" for n in range(40)]
    assert {(row[1], row[2]) for row in rows} == {("mock", True)}  # not one oracle result counted
    # Each of the oracle run's 40 messages was run or skipped as superseded, once; the mock run's ran.
    wait_for(
        lambda: counter(workers, "tasks_completed_total") + counter(workers, "tasks_superseded_total") >= 80,
        60,
        "the workers to take every message",
    )
    assert counter(workers, "tasks_completed_total") + counter(workers, "tasks_superseded_total") == 80


def test_results_of_another_run_or_of_no_run_are_ignored_and_a_superseded_runs_tasks_are_not_run(
    redis_server: RedisServer, workers: Workers
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    tasks = [TaskSpec.model_validate_json(code_task(f"t{n}", f"print({n} + 1)", str(n + 1))) for n in range(3)]
    first = BatchRun.open(client, "b", "run-a")
    assert first.enqueue(enumerate(tasks), "oracle") == 3
    second = BatchRun.open(client, "b", "run-b")  # a fresh run of the batch supersedes run-a
    assert second.enqueued == 0 and client.hget(run_state("b"), "run") == "run-b"
    assert second.enqueue(enumerate(tasks), "oracle") == 3
    assert BatchRun.open(client, "b", "run-b").enqueued == 3  # the same key resumes

    # Results published before the workers answer: one of run-a, one without a run key.
    forger = Consumer(client, tasks[0].task_type, "forger")
    for run in ("run-a", ""):
        delivery = Delivery(forger.stream, "0-1", "b", "oracle", tasks[0], 1, run)
        forger.publish(
            delivery, Trajectory.failed(tasks[0], ErrorType.SYSTEM_ERROR, f"from {run or 'no run'}", policy="oracle")
        )
    workers.start("w1")
    handed: list[Trajectory] = []
    reader = ResultReader(client, "b", "run-b", handed.append)
    for task in tasks:
        reader.expect(task.task_id)
    reader.wait(60)
    assert sorted(t.task_id for t in handed) == ["t0", "t1", "t2"] and all(t.success for t in handed)
    assert reader.ignored == 2
    assert counter(workers, "tasks_superseded_total") == 3  # run-a's queued tasks were acked, not run
    assert counter(workers, "tasks_completed_total") == 3

"""Redis mode against a real redis-server and real `adp worker` processes."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import dagster as dg
import redis

from adp_pipeline.execute import run_task_specs
from adp_pipeline.storage import Lake
from runtimes.core import TaskSpec
from runtimes.scale import GROUP
from runtimes.settings import Settings
from runtimes.testing import RedisServer
from tests.helpers import (
    ADP,
    REPO,
    Workers,
    check_results,
    clean_env,
    code_task,
    free_port,
    materialize_file,
    task_line,
    wait_for,
)


def redis_settings(settings: Settings, redis_server: RedisServer) -> Settings:
    return settings.model_copy(update={"mode": "redis", "redis_url": redis_server.url, "redis_deadline": 120.0})


def batch_file(path: Path, n: int, *, sleep: float = 0.0) -> Path:
    lines = [
        code_task(f"t{i}", f"import time\ntime.sleep({sleep})\nprint({i} * 3)", str(i * 3), timeout=5) for i in range(n)
    ]
    lines.append(code_task("fails", "1/0", "x", tests="pass"))
    lines.append(task_line("no_reference"))
    path.write_text("".join(line + "\n" for line in lines))
    return path


def outcomes(data_dir: Path) -> list[tuple[object, ...]]:
    with Lake(data_dir).connect() as connection:
        return connection.execute(
            "SELECT task_id, success, error_type, final_result, n_steps FROM trajectories ORDER BY task_id"
        ).fetchall()


def test_redis_mode_with_two_workers_gives_the_same_trajectories_as_local_mode_and_metrics_count_them(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance, workers: Workers,
    redis_server: RedisServer,
) -> None:  # fmt: skip
    path = batch_file(tmp_path / "batch.jsonl", 10)
    local = settings.model_copy(update={"data_dir": tmp_path / "local"})
    assert materialize_file(path, local, instance).success

    workers.start("w1")
    workers.start("w2")
    remote = redis_settings(settings, redis_server)
    result = materialize_file(path, remote, instance)
    assert result.success and check_results(result)["one_trajectory_per_task"]
    assert outcomes(remote.data_dir) == outcomes(local.data_dir)
    assert len(outcomes(remote.data_dir)) == 12

    completed = failed_runtime = 0.0
    per_worker = []
    for name in ("w1", "w2"):
        text = workers.metrics(name)
        for metric in ("tasks_submitted_total", "tasks_completed_total", "tasks_failed_total", "task_duration_seconds",
                       "active_tasks", "queue_size", "pending_lag_seconds", "cache_hits_total", "cache_misses_total",
                       "runtime_health", "llm_requests_total", "llm_tokens_total"):  # fmt: skip
            assert metric in text, (name, metric)
        mine = sum(_samples(text, "tasks_completed_total"))
        per_worker.append(mine)
        completed += mine
        failed_runtime += sum(_samples(text, 'tasks_failed_total{error_type="runtime_error",runtime="code"}'))
        assert sum(_samples(text, 'runtime_health{runtime="code"}')) == 1
    assert completed == 12
    assert all(count > 0 for count in per_worker)  # both workers took part
    assert failed_runtime == 1


def _samples(text: str, prefix: str) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)]


def test_a_worker_killed_mid_batch_loses_no_task(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance, workers: Workers,
    redis_server: RedisServer,
) -> None:  # fmt: skip
    path = batch_file(tmp_path / "slow.jsonl", 6, sleep=1.0)
    workers.start("victim")
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    remote = redis_settings(settings, redis_server)

    def kill_when_busy() -> None:
        wait_for(lambda: _pending_of(client, "victim") > 0, 60, "the victim to take a task")
        workers.kill("victim")
        workers.start("survivor")

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    result = materialize_file(path, remote, instance)
    killer.join()
    assert result.success and check_results(result)["one_trajectory_per_task"]
    rows = outcomes(remote.data_dir)
    assert len(rows) == 8 and len({row[0] for row in rows}) == 8
    assert [row[0] for row in rows if row[1]] == [f"t{i}" for i in range(6)]


def _pending_of(client: redis.Redis, consumer: str) -> int:
    if not client.exists("tasks:code"):
        return 0
    return sum(c["pending"] for c in client.xinfo_consumers("tasks:code", GROUP) if c["name"] == consumer)


def test_redis_restarted_mid_batch_loses_no_task(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance, workers: Workers,
    redis_server: RedisServer,
) -> None:  # fmt: skip
    path = batch_file(tmp_path / "restart.jsonl", 8, sleep=0.5)
    workers.start("w1")
    remote = redis_settings(settings, redis_server)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)

    def restart_after_first_result() -> None:
        wait_for(lambda: any(client.xlen(k) > 0 for k in client.scan_iter("results:*")), 60, "a first result")
        redis_server.stop()
        redis_server.start()

    restarter = threading.Thread(target=restart_after_first_result)
    restarter.start()
    result = materialize_file(path, remote, instance)
    restarter.join()
    assert result.success and check_results(result)["one_trajectory_per_task"]
    rows = outcomes(remote.data_dir)
    assert len(rows) == 10
    assert [row[0] for row in rows if row[1]] == [f"t{i}" for i in range(8)]


def _worker_exit(tmp_path: Path, runtime: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ADP, "worker", "--runtime", runtime, "--metrics-port", str(free_port())],
        cwd=REPO, env=clean_env(ADP_DATA_DIR=str(tmp_path), **env), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_web_worker_that_cannot_start_its_browser_exits_at_once_with_the_reason(redis_server, tmp_path: Path):
    missing = tmp_path / "no-chromium"
    done = _worker_exit(tmp_path, "web", REDIS_URL=redis_server.url, ADP_CHROMIUM_PATH=str(missing))
    assert done.returncode == 1
    assert f"worker web: {missing} not found" in done.stderr


def test_a_worker_without_redis_exits_with_the_url_and_no_password(tmp_path: Path):
    port = free_port()
    done = _worker_exit(tmp_path, "code", REDIS_URL=f"redis://:s3cret@127.0.0.1:{port}/0")
    assert done.returncode == 1
    assert f"worker code: cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def test_foreign_and_malformed_messages_are_dead_lettered_and_the_worker_goes_on(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance, workers: Workers,
    redis_server: RedisServer,
) -> None:  # fmt: skip
    workers.start("w1")
    client = redis.Redis.from_url(redis_server.url)
    seed_line = task_line("seed_style")  # the seeds' `XADD tasks:code * task <json>`: no batch, no policy
    foreign = [
        {"task": seed_line},
        {"hello": "world"},
        {"batch": "b", "policy": "oracle", "task": "{not json"},
        {"batch": "b", "policy": "rm -rf", "task": seed_line},
        {"batch": "b", "policy": "oracle", "task": task_line("a_web_task", "web")},
        {"batch": "b", "policy": "oracle", "task": b"\xff\xfe not utf-8"},
        {"batch": "b", "policy": "oracle", "task": seed_line, "run": "../" + "x" * 100},
    ]
    for fields in foreign:
        client.xadd("tasks:code", fields)
    wait_for(lambda: client.xlen("tasks:dead") >= len(foreign), 60, "the foreign messages to be dead-lettered")
    reasons = [fields[b"reason"].decode() for _, fields in client.xrange("tasks:dead")]
    assert reasons[0].startswith("missing batch, policy")
    assert "invalid task" in reasons[2] and "unknown policy 'rm -rf'" in reasons[3]
    assert "a web task on tasks:code" in reasons[4] and "invalid task" in reasons[5]
    assert reasons[6].startswith("invalid run '../xxx")
    assert client.xpending("tasks:code", GROUP)["pending"] == 0  # acked: never redelivered

    path = batch_file(tmp_path / "after.jsonl", 3)  # the same worker still runs real tasks
    result = materialize_file(path, redis_settings(settings, redis_server), instance)
    assert result.success and len(outcomes(settings.data_dir)) == 5
    assert workers.processes["w1"][0].poll() is None


def test_a_worker_scripts_its_mock_server_from_every_delivery_not_only_the_first_batch(
    tmp_path: Path, settings: Settings, workers: Workers, redis_server: RedisServer
) -> None:
    # The worker opens the mock policy once; tasks delivered later must still be answered.
    workers.start("w1")
    remote = redis_settings(settings, redis_server).model_copy(update={"policy": "mock"})
    for batch in ("first", "second"):
        lines = [code_task(f"{batch}_{i}", f"print({i} + 1)", str(i + 1)) for i in range(3)]
        tasks = [TaskSpec.model_validate_json(line, strict=False) for line in lines]
        trajectories = run_task_specs(batch, tasks, remote)
        assert [(t.task_id, t.policy, t.success) for t in trajectories] == [(t.task_id, "mock", True) for t in tasks]
        assert all(call.requests == 1 for t in trajectories for call in t.llm_calls)

"""A worker whose consumer group vanishes (an operator deleted it) recreates it, says so, and
goes on taking tasks: the ones after the last it took, not the stream's whole history."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import redis

from runtimes.core import TaskSpec
from runtimes.scale import GROUP, enqueue, result_stream, task_stream
from runtimes.testing import RedisServer
from tests.helpers import ADP, REPO, clean_env, code_task, free_port, http_ok, wait_for


def _run_one(client: redis.Redis, batch: str, task_id: str) -> None:
    enqueue(client, batch, [TaskSpec.model_validate_json(code_task(task_id, "print(6 * 7)", "42"))], "oracle")
    wait_for(lambda: client.xlen(result_stream(batch)) == 1, 60, f"the trajectory of {task_id}")
    ((_, [(_, fields)]),) = client.xread({result_stream(batch): "0"})
    assert json.loads(fields["trajectory"])["success"] is True


def test_a_worker_whose_group_was_deleted_recreates_it_and_runs_the_next_task(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    log_path = tmp_path / "worker.log"
    port = free_port()
    env = clean_env(REDIS_URL=server.url, ADP_DATA_DIR=str(tmp_path / "data"), MAX_CONCURRENT_TASKS="1")
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [ADP, "worker", "--runtime", "code", "--name", "w1", "--metrics-port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 60, "the worker")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        _run_one(client, "before", "first")
        stream = task_stream("code")
        assert client.xgroup_destroy(stream, GROUP) == 1
        wait_for(lambda: "recreating it" in log_path.read_text(), 30, "the worker to notice")
        wait_for(lambda: any(g["name"] == GROUP for g in client.xinfo_groups(stream)), 30, "the group to be back")

        _run_one(client, "after", "second")
        assert client.xlen(result_stream("before")) == 1  # the task it had run was not run again
        log = log_path.read_text()
        assert f"consumer group {GROUP} of {stream} is gone; recreating it" in log
        assert "redis unavailable" not in log  # it was never a connection problem
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        server.stop()

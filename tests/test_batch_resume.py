"""A batch that dies keeps what it finished: `adp run` killed mid-batch (SIGKILL, no cleanup)
and run again runs only what is missing; killed at any point of its commit, readers see the
previous batch or the whole new one, never steps without their trajectories."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from adp_pipeline.checkpoint import checkpoint_dir
from adp_pipeline.instance import open_instance
from adp_pipeline.storage import Lake
from adp_pipeline.task_files import partition_key_for
from runtimes.settings import Settings
from tests.helpers import adp, code_task

TASKS = 120


def batch_file(folder: Path, tasks: int = TASKS) -> Path:
    path = folder / "nightly.jsonl"
    path.write_text("".join(code_task(f"t{n:04d}", f"print({n} * 3)", str(n * 3)) + "\n" for n in range(tasks)))
    return path


def env(data: Path, **extra: str) -> dict[str, str]:
    return {
        "ADP_DATA_DIR": str(data),
        "TASKS_DIR": str(data.parent / "inbox"),
        "ADP_COMMIT_EVERY_TASKS": "10",
        "MAX_CONCURRENT_TASKS": "2",
        **extra,
    }


def key_of(path: Path) -> str:
    import hashlib

    return partition_key_for(path.stem, hashlib.sha256(path.read_bytes()).hexdigest())


def committed_in_checkpoint(data: Path, batch: str) -> set[str]:
    folder = checkpoint_dir(data, batch)
    return {
        task_id
        for chunk in folder.glob("*.trajectories.parquet")
        for task_id in pq.read_table(chunk, columns=["task_id"]).column(0).to_pylist()
    }


def consistent(data: Path, batch: str) -> tuple[int, int]:
    """(trajectories, steps) a reader sees of ``batch``, after asserting they belong together:
    every visible step has its trajectory, every trajectory all its steps, one per task."""
    with Lake(data).connect() as connection:
        trajectories = connection.execute(
            "SELECT count(*), count(DISTINCT task_id), coalesce(sum(n_steps), 0) FROM trajectories WHERE batch = ?",
            [batch],
        ).fetchone()
        assert trajectories is not None
        rows, distinct, expected_steps = trajectories
        orphans = connection.execute(
            "SELECT count(*) FROM steps s WHERE batch = ? AND NOT EXISTS "
            "(SELECT 1 FROM trajectories t WHERE t.batch = s.batch AND t.task_id = s.task_id)",
            [batch],
        ).fetchone()
        (steps,) = connection.execute("SELECT count(*) FROM steps WHERE batch = ?", [batch]).fetchone() or (0,)
    assert orphans == (0,), "steps without their trajectory"
    assert rows == distinct, "a task with two trajectories"
    assert rows in (0, TASKS), f"half a batch: {rows} of {TASKS} trajectories"
    assert steps == expected_steps, f"{steps} steps for trajectories that took {expected_steps}"
    return rows, steps


def chunks_left(data: Path, batch: str) -> list[Path]:
    return sorted(checkpoint_dir(data, batch).glob("*.parquet"))


def staging_left(data: Path) -> list[Path]:
    return [*data.rglob(".staging-*"), *data.rglob("*.partial")]


def test_killed_mid_batch_the_rerun_runs_only_what_is_missing(tmp_path: Path) -> None:
    data, tasks = tmp_path / "data", batch_file(tmp_path)
    batch = key_of(tasks)

    killed = adp("run", str(tasks), "--policy", "oracle", env=env(data, ADP_TEST_KILL_AT="chunk:committed@3"))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    killed_at = datetime.now(UTC)
    done_before = committed_in_checkpoint(data, batch)
    assert len(done_before) >= 30 and len(done_before) < TASKS  # three chunks of ten, at least
    assert consistent(data, batch) == (0, 0)  # nothing of the batch is in the lake yet

    rerun = adp("run", str(tasks), "--policy", "oracle", env=env(data))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(done_before)} of {TASKS} tasks done before; ran {TASKS - len(done_before)}" in rerun.stdout
    assert consistent(data, batch)[0] == TASKS
    with Lake(data).connect() as connection:
        last_step = dict(
            connection.execute(
                "SELECT task_id, max(timestamp) FROM steps WHERE batch = ? GROUP BY 1", [batch]
            ).fetchall()
        )
    assert len(last_step) == TASKS
    assert all(last_step[task_id] < killed_at for task_id in done_before)  # not run again
    assert all(last_step[task_id] > killed_at for task_id in set(last_step) - done_before)
    assert staging_left(data) == [] and chunks_left(data, batch) == []


@pytest.mark.parametrize(
    "point", ["chunk:steps_written", "commit:steps_written", "commit:trajectories_written", "commit:done"]
)
def test_killed_anywhere_in_a_commit_readers_see_one_whole_batch(tmp_path: Path, point: str) -> None:
    """The batch first lands whole; a second run of it (``--fresh``: every task again) is killed
    at ``point``: a reader sees the first run's batch or the second's, whole, with its steps; the
    run after that completes it."""
    data, tasks = tmp_path / "data", batch_file(tmp_path)
    batch = key_of(tasks)
    first = adp("run", str(tasks), "--policy", "oracle", env=env(data))
    assert first.returncode == 0, first.stdout + first.stderr
    before = consistent(data, batch)
    assert before[0] == TASKS

    killed = adp("run", str(tasks), "--policy", "oracle", "--fresh", env=env(data, ADP_TEST_KILL_AT=point))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert consistent(data, batch) == before  # the same counts: the first batch or the whole second one

    again = adp("run", str(tasks), "--policy", "oracle", env=env(data))
    assert again.returncode == 0, again.stdout + again.stderr
    assert consistent(data, batch) == before
    assert staging_left(data) == [] and chunks_left(data, batch) == []
    steps_files = sorted(path.name for path in (Lake(data).root / "steps" / f"batch={batch}").iterdir())
    assert len(steps_files) <= 3, steps_files  # superseded commits' steps outlive a late reader, then go


def test_a_second_run_of_a_running_batch_is_refused(tmp_path: Path) -> None:
    from adp_pipeline.checkpoint import BatchBusyError, RunIdentity, open_checkpoint

    lake = Lake(tmp_path / "data")
    identity = RunIdentity("oracle", None, 1000)
    with (
        open_checkpoint(lake, "b-1", identity),
        pytest.raises(BatchBusyError, match="another process"),
        open_checkpoint(lake, "b-1", identity),
    ):
        pass
    assert os.path.isdir(checkpoint_dir(lake.root.parent, "b-1"))


def test_the_instance_retries_a_failed_run_twice(settings: Settings) -> None:
    """A crashed nightly partition is retried by the daemon and resumes its committed chunks."""
    instance = open_instance(settings)
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert instance.run_retries_retry_on_asset_or_op_failure
    assert instance.run_monitoring_enabled  # a killed run's worker is found dead, so it is retried


def test_a_batch_already_in_the_lake_runs_nothing_again_unless_fresh(tmp_path: Path) -> None:
    """A crash after the batch reached the lake (in essences, synthesis, the checks) or a later
    run of the same file with the same policy: the committed trajectories stand."""
    data, tasks = tmp_path / "data", batch_file(tmp_path, tasks=30)
    batch = key_of(tasks)
    first = adp("run", str(tasks), "--policy", "oracle", env=env(data, ADP_TEST_KILL_AT="commit:recorded"))
    assert first.returncode == -signal.SIGKILL, first.stdout + first.stderr
    with Lake(data).connect() as connection:
        before = connection.execute("SELECT max(timestamp) FROM steps WHERE batch = ?", [batch]).fetchall()
    again = adp("run", str(tasks), "--policy", "oracle", env=env(data))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "30 of 30 tasks done before; ran 0" in again.stdout
    with Lake(data).connect() as connection:
        assert connection.execute("SELECT max(timestamp) FROM steps WHERE batch = ?", [batch]).fetchall() == before
        assert connection.execute("SELECT count(*) FROM trajectories WHERE batch = ?", [batch]).fetchall() == [(30,)]
    fresh = adp("run", str(tasks), "--policy", "oracle", "--fresh", env=env(data))
    assert fresh.returncode == 0 and "done before" not in fresh.stdout, fresh.stdout + fresh.stderr
    with Lake(data).connect() as connection:
        (later,) = connection.execute("SELECT max(timestamp) FROM steps WHERE batch = ?", [batch]).fetchall()
    assert later > before[0]

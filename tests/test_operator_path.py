"""The operator's path after `make demo`: with default settings the sensor watches the folder the
demo filled (``$ADP_DATA_DIR/inbox``), runs the demo's generation-1 files and any file dropped there."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from adp_pipeline.defs.partitions import task_files
from runtimes.settings import Settings
from tests.helpers import Daemon, task_line


@pytest.fixture
def demo_copy(demo_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the demo's data dir (``data/``), with no TASKS_DIR in the environment: `adp dev`
    after `make demo` as a new user runs it."""
    monkeypatch.delenv("TASKS_DIR", raising=False)
    data = tmp_path / "data"
    shutil.copytree(demo_lake, data, ignore=shutil.ignore_patterns("dagster"))
    return data


def test_after_the_demo_the_default_sensor_runs_its_generation_one_files_and_a_file_dropped_in_data_inbox(
    demo_copy: Path, instance: dg.DagsterInstance
) -> None:
    settings = Settings(data_dir=demo_copy, tasks_settle_seconds=0)
    assert settings.tasks_dir == demo_copy / "inbox"
    generated = sorted(path.name for path in settings.tasks_dir.glob("synth-*-g1.jsonl"))
    assert generated, "the demo's first run synthesizes generation-1 files into data/inbox"

    daemon = Daemon(settings, instance)
    first = daemon.tick()
    assert sorted(request.partition_key.rsplit("-", 1)[0] for request in first) == [
        name.removesuffix(".jsonl") for name in generated
    ]
    assert daemon.tick() == []  # seen once, run once

    (settings.tasks_dir / ".mine.jsonl").write_text(task_line("dropped_1") + "\n" + task_line("dropped_2") + "\n")
    (settings.tasks_dir / ".mine.jsonl").rename(settings.tasks_dir / "mine.jsonl")
    (request,) = daemon.tick()
    assert request.partition_key.startswith("mine-") and request.run_key == request.partition_key
    assert request.partition_key in instance.get_dynamic_partitions(task_files.name)


def test_the_sensor_says_which_folder_it_watches_and_when_that_folder_does_not_exist(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKS_DIR", raising=False)
    settings = Settings(data_dir=tmp_path / "data", tasks_settle_seconds=0)
    daemon = Daemon(settings, instance)
    sensor = daemon.sensor

    def skip_reason() -> str:
        with dg.build_sensor_context(
            instance=instance, definitions=daemon.defs, resources=daemon.defs.resources
        ) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult) and not result.run_requests
        reason = result.skip_reason
        return reason.skip_message if isinstance(reason, dg.SkipReason) else str(reason)

    inbox = (tmp_path / "data" / "inbox").absolute()
    missing = skip_reason()
    assert str(inbox) in missing and "does not exist" in missing
    inbox.mkdir(parents=True)
    empty = skip_reason()
    assert empty == f"no new task files in {inbox}"

"""The operator's path after `make demo`: with default settings the sensor watches the folder the
demo filled (``$ADP_DATA_DIR/inbox``), knows the files the demo ran, and runs a file dropped there."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from adp_pipeline.defs.partitions import task_files
from adp_pipeline.instance import open_instance
from runtimes.settings import Settings
from tests.helpers import Daemon, task_line


@pytest.fixture
def after_the_demo(demo_lake_with_g1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What `make demo` leaves: its data dir after both its runs (the instance in ``data/dagster``
    included; see ``demo_lake_with_g1``), copied, since a test drops files into it. No TASKS_DIR in
    the environment: `adp dev` afterwards, as a new user starts it."""
    monkeypatch.delenv("TASKS_DIR", raising=False)
    data = tmp_path / "data"
    shutil.copytree(demo_lake_with_g1, data)
    assert sorted((data / "inbox").glob("synth-*-g1.jsonl")), "the demo's first run synthesizes into data/inbox"
    return data


def test_after_the_demo_the_default_sensor_watches_data_inbox_and_runs_a_file_dropped_there(
    after_the_demo: Path,
) -> None:
    settings = Settings(data_dir=after_the_demo, tasks_settle_seconds=0, policy="oracle")
    assert settings.tasks_dir == after_the_demo / "inbox"
    instance = open_instance(settings)  # the instance `adp run` and `adp dev` share
    daemon = Daemon(settings, instance)
    # The demo ran its generation-1 files itself: the sensor knows them and runs nothing again.
    assert daemon.tick() == []
    assert daemon.last_skip_reason == f"no new task files in {settings.tasks_dir.absolute()}"

    (settings.tasks_dir / ".mine.jsonl").write_text(task_line("dropped_1") + "\n" + task_line("dropped_2") + "\n")
    (settings.tasks_dir / ".mine.jsonl").rename(settings.tasks_dir / "mine.jsonl")
    (request,) = daemon.tick()
    assert request.partition_key.startswith("mine-") and request.run_key == request.partition_key
    assert request.partition_key in instance.get_dynamic_partitions(task_files.name)
    assert daemon.tick() == []


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

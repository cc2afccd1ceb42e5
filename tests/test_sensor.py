from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import dagster as dg
import pytest

from adp_pipeline.defs.partitions import task_files
from adp_pipeline.task_files import InboxCursor, register_task_file, registered_task_file, scan_inbox
from runtimes.core import TaskFileError
from runtimes.settings import Settings
from tests.helpers import Daemon, task_line


def write(path: Path, *task_ids: str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(task_line(task_id) + "\n" for task_id in task_ids))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_new_file_runs_once_same_file_never_again_and_an_older_mtime_file_runs(
    settings: Settings, instance: dg.DagsterInstance
) -> None:
    daemon = Daemon(settings, instance)
    inbox = settings.tasks_dir
    now = time.time()

    write(inbox / "one.jsonl", "a", "b", mtime=now - 60)
    (request,) = daemon.tick()
    assert request.partition_key == request.run_key
    assert request.run_key.startswith("one-")
    assert daemon.sensor.job_name == "process_task_file"
    assert instance.get_dynamic_partitions(task_files.name) == [request.partition_key]
    assert registered_task_file(settings.data_dir, request.partition_key).path.read_text().count("\n") == 2

    assert daemon.tick() == []  # nothing changed
    os.utime(inbox / "one.jsonl", (now, now))  # touched, same content
    assert daemon.tick() == []
    # The key names the file too, so a renamed copy is a batch of its own (whose tasks the
    # duplicate rule then rejects); only the very same file is never run twice.
    write(inbox / "copy-of-one.jsonl", "a", "b", mtime=now - 30)
    (copy,) = daemon.tick()
    assert copy.run_key.startswith("copy-of-one-") and copy.run_key[-8:] == request.run_key[-8:]

    write(inbox / "older.jsonl", "c", mtime=now - 3600)  # arrives later with an older mtime (cp -p)
    (older,) = daemon.tick()
    assert older.run_key.startswith("older-")

    write(inbox / "one.jsonl", "a", "b", "d", mtime=now - 10)  # edited: new content, new partition
    (edited,) = daemon.tick()
    assert edited.run_key.startswith("one-") and edited.run_key != request.run_key
    assert len(instance.get_dynamic_partitions(task_files.name)) == 4
    assert daemon.tick() == []


def test_files_still_being_written_hidden_files_and_other_suffixes_wait_or_are_ignored(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    now = time.time()
    write(inbox / "fresh.jsonl", "a", mtime=now)
    write(inbox / ".partial.jsonl", "b", mtime=now - 60)
    write(inbox / "notes.txt", "c", mtime=now - 60)
    changed, cursor = scan_inbox(inbox, InboxCursor(), settle_seconds=5, now=now)
    assert changed == [] and cursor.files == {}
    changed, cursor = scan_inbox(inbox, cursor, settle_seconds=5, now=now + 6)
    assert [path.name for path in changed] == ["fresh.jsonl"]
    assert scan_inbox(tmp_path / "missing", cursor, settle_seconds=0) == ([], InboxCursor())


def test_cursor_forgets_deleted_files(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write(inbox / "a.jsonl", "a", mtime=time.time() - 60)
    _, cursor = scan_inbox(inbox, InboxCursor(), settle_seconds=0)
    assert set(cursor.files) == {"a.jsonl"}
    (inbox / "a.jsonl").unlink()
    _, cursor = scan_inbox(inbox, cursor, settle_seconds=0)
    assert cursor.files == {}


def test_sensor_run_request_materialises_the_partition(settings: Settings, instance: dg.DagsterInstance) -> None:
    daemon = Daemon(settings, instance)
    write(settings.tasks_dir / "batch.jsonl", "x", "y", mtime=time.time() - 60)
    (request,) = daemon.tick()
    job = daemon.defs.resolve_job_def(daemon.sensor.job_name)
    result = job.execute_in_process(partition_key=request.partition_key, instance=instance)
    assert result.success
    assert result.asset_materializations_for_node("task_batch")[0].metadata["accepted"].value == 2


def test_the_inbox_ignores_symlinks_and_non_regular_files_and_copies_keep_permissions(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    daemon = Daemon(settings, instance)
    inbox = settings.tasks_dir
    inbox.mkdir(parents=True)
    secret = write(tmp_path / "elsewhere" / "secret.jsonl", "outside_the_inbox")
    (inbox / "link.jsonl").symlink_to(secret)  # would read a file outside the inbox
    (inbox / "dangling.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    os.mkfifo(inbox / "fifo.jsonl")  # reading it would block the sensor forever
    (inbox / "folder.jsonl").mkdir()
    private = write(inbox / "private.jsonl", "mine")
    private.chmod(0o600)
    os.utime(private, (time.time() - 60, time.time() - 60))

    requests = daemon.tick()
    assert len(requests) == 1
    stored = registered_task_file(settings.data_dir, requests[0].partition_key)
    assert stored.path.read_text() == private.read_text()
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o600  # not world-readable in the data dir
    assert stat.S_IMODE(stored.path.with_suffix(".json").stat().st_mode) == 0o600
    assert daemon.tick() == []

    # `adp run` on an explicit symlink is the user's choice; the inbox never follows one.
    with pytest.raises(TaskFileError, match="symlink"):
        register_task_file(inbox / "link.jsonl", settings.data_dir, follow_symlinks=False)
    with pytest.raises(TaskFileError, match="not a regular file"):
        register_task_file(inbox / "fifo.jsonl", settings.data_dir)

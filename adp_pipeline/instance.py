"""The Dagster instance `adp run` and `adp dev` share, so CLI runs show up in the UI."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import dagster as dg

from adp_pipeline.storage.locks import file_lock
from runtimes.settings import Settings

INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")
_LOCK, _READY = ".adp-instance.lock", ".adp-instance-ready"
# Tags of an in-process run: which process ran it, so the next start can tell it died.
HOST_TAG, PID_TAG, PID_START_TAG = "adp/host", "adp/pid", "adp/pid_start"


def prepare_dagster_home(settings: Settings) -> Path:
    """Create the instance folder and its storage, once, under a lock.

    Two processes that create a fresh SQLite instance at the same moment both run its schema
    migrations and can corrupt it; the first does it here while holding the lock, and later
    ones (another `adp run`, `adp dev`) find it made.
    """
    home = settings.dagster_home
    ready = home / _READY
    if ready.exists():
        return home
    with file_lock(home / _LOCK):
        if not ready.exists():
            config = home / "dagster.yaml"
            if not config.exists():
                shutil.copyfile(INSTANCE_TEMPLATE, config)
            dg.DagsterInstance.from_config(str(home)).dispose()
            ready.touch()
    return home


def open_instance(settings: Settings) -> dg.DagsterInstance:
    """The instance, its storage created, and the runs that a killed `adp run` left STARTED marked failed."""
    instance = dg.DagsterInstance.from_config(str(prepare_dagster_home(settings)))
    fail_orphaned_runs(instance)
    return instance


def process_tags() -> dict[str, str]:
    """Tags naming this process, for runs executed in it."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), PID_START_TAG: _start_time(os.getpid())}


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every STARTED run of this host whose `adp run` process is gone; return their ids."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={HOST_TAG: socket.gethostname()})
    )
    orphaned = []
    for run in runs:
        pid = run.tags.get(PID_TAG, "")
        if pid.isdigit() and _start_time(int(pid)) == run.tags.get(PID_START_TAG):
            continue  # still running
        instance.report_run_failed(run, message=f"the `adp run` process (pid {pid}) ended without finishing this run")
        orphaned.append(run.run_id)
    return orphaned


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot), or "" if there is none: a pid can be reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""

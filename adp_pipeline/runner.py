"""Materialise the per-file assets for task files in this process: the engine of `adp run`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from adp_pipeline.definitions import build_definitions
from adp_pipeline.defs.jobs import process_task_file
from adp_pipeline.defs.partitions import task_files
from adp_pipeline.instance import open_instance
from adp_pipeline.task_files import RegisteredTaskFile, register_task_file
from runtimes.settings import Settings

# The CLI prints its own summary; Dagster's per-event console log would drown it.
_QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@dataclass(frozen=True)
class FileRun:
    registered: RegisteredTaskFile
    success: bool
    run_id: str
    failure: str | None = None


def run_task_files(
    files: Sequence[Path], settings: Settings, on_file_done: Callable[[FileRun], None] | None = None
) -> list[FileRun]:
    """Register each file as a partition and run `process_task_file` for it, in order.

    Raises:
        TaskFileError: a file is missing or unreadable (raised before anything runs).
    """
    registered = [register_task_file(path, settings.data_dir) for path in files]
    job = build_definitions(settings).resolve_job_def(process_task_file.name)
    instance = open_instance(settings)
    instance.add_dynamic_partitions(task_files.name, sorted({item.key for item in registered}))
    runs: list[FileRun] = []
    for item in registered:
        result = job.execute_in_process(
            partition_key=item.key, instance=instance, run_config=_QUIET_RUN_CONFIG, raise_on_error=False
        )
        run = FileRun(item, result.success, result.run_id, None if result.success else _failure_reason(result))
        runs.append(run)
        if on_file_done:
            on_file_done(run)
    return runs


def _failure_reason(result: dg.ExecuteInProcessResult) -> str:
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        if error is not None:
            message = error.message.strip().splitlines()
            return f"{event.step_key}: {message[0] if message else error.cls_name}"
    return "the run failed; see the Dagster UI (`adp dev`) for its log"

"""Materialise the per-file assets for task files in this process: the engine of `adp run`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from adp_pipeline.builder import build_definitions
from adp_pipeline.defs.jobs import nightly, process_task_file
from adp_pipeline.defs.partitions import TASK_FILES
from adp_pipeline.defs.trajectories.assets import FRESH_TAG
from adp_pipeline.instance import open_instance, process_tags
from adp_pipeline.task_files import RegisteredTaskFile, register_task_file
from runtimes.settings import Settings

# The CLI prints its own summary and one line per failure; the full log is in the instance.
_QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass(frozen=True)
class FileRun:
    registered: RegisteredTaskFile
    success: bool
    run_id: str
    failure: str | None = None
    resumed: int = 0  # tasks a crashed earlier run had committed: this run did not run them again
    tasks: int = 0


def run_task_files(
    files: Sequence[Path],
    settings: Settings,
    on_file_done: Callable[[FileRun], None] | None = None,
    *,
    fresh: bool = False,
) -> list[FileRun]:
    """Register each file as a partition and run `process_task_file` for it, in order; a file
    whose earlier run crashed resumes it (``fresh``: starts over).

    Raises:
        TaskFileError: a file is missing or unreadable (raised before anything runs).
    """
    registered = [
        register_task_file(path, settings.data_dir, max_line_bytes=settings.max_task_line_bytes) for path in files
    ]
    job = build_definitions(settings, lake_wide=False).resolve_job_def(process_task_file.name)
    instance = open_instance(settings)
    instance.add_dynamic_partitions(TASK_FILES, sorted({item.key for item in registered}))
    runs: list[FileRun] = []
    for item in registered:
        result = job.execute_in_process(
            partition_key=item.key,
            instance=instance,
            run_config=_QUIET_RUN_CONFIG,
            raise_on_error=False,
            tags={**process_tags(), **({FRESH_TAG: "true"} if fresh else {})},
        )
        run = FileRun(
            item, result.success, result.run_id, None if result.success else failure_reason(result), *_resumed(result)
        )
        runs.append(run)
        if on_file_done:
            on_file_done(run)
    return runs


def _resumed(result: dg.ExecuteInProcessResult) -> tuple[int, int]:
    """(tasks done by a crashed earlier run, tasks) of the run's trajectories materialisation."""
    for materialization in result.asset_materializations_for_node("trajectories"):
        metadata = materialization.metadata
        resumed, tasks = metadata.get("resumed"), metadata.get("tasks")
        return int(resumed.value if resumed else 0), int(tasks.value if tasks else 0)  # type: ignore[arg-type]
    return 0, 0


def failure_reason(result: dg.ExecuteInProcessResult) -> str:
    """One line saying why a run failed: the reason of its first failed step, that is the
    description of a ``dg.Failure`` it raised, the descriptions of the blocking checks that
    failed it, or else the first line of its innermost error."""
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return f"{event.step_key}: {_one_line(data.user_failure_data.description)}"
        error = data.error
        while error is not None and error.cause is not None:
            error = error.cause  # Dagster wraps the user's exception in its own
        if error is not None and error.cls_name == "DagsterAssetCheckFailedError":
            failed = [
                f"check {evaluation.check_name} failed: {_one_line(evaluation.description)}"
                for evaluation in result.get_asset_check_evaluations()
                if evaluation.blocking
                and not evaluation.passed
                and evaluation.severity is dg.AssetCheckSeverity.ERROR
                and evaluation.description
            ]
            if failed:
                return f"{event.step_key}: {'; '.join(failed)}"
        if error is not None:
            lines = error.message.strip().splitlines()
            return f"{event.step_key}: {lines[0] if lines else error.cls_name}"
    return "the run failed; see its log in the Dagster UI (`adp dev`)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_nightly(settings: Settings) -> dg.ExecuteInProcessResult:
    """The ``nightly`` job (dbt build, the training-set export) in this process, on the shared instance."""
    job = build_definitions(settings).resolve_job_def(nightly.name)
    return job.execute_in_process(
        instance=open_instance(settings), run_config=_QUIET_RUN_CONFIG, raise_on_error=False, tags=process_tags()
    )

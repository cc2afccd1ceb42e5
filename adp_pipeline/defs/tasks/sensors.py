from pathlib import Path

import dagster as dg

from adp_pipeline.defs.jobs import process_task_file
from adp_pipeline.defs.partitions import TASK_FILES, task_files
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.task_files import InboxCursor, register_task_file, scan_inbox
from runtimes.core import TaskFileError, redact


def build_task_file_sensor(minimum_interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        job=process_task_file,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers each new or changed `*.jsonl` file in TASKS_DIR (default `$ADP_DATA_DIR/inbox`) "
        "as a partition, once unmodified for ADP_TASKS_SETTLE_SECONDS, and requests one process_task_file run "
        "for each content not run before; it looks every ADP_SENSOR_INTERVAL_SECONDS.",
    )
    def task_file_sensor(context: dg.SensorEvaluationContext, adp: AdpResource) -> dg.SensorResult:
        settings = adp.settings()
        inbox = settings.tasks_dir.absolute()
        cursor = InboxCursor.model_validate_json(context.cursor) if context.cursor else InboxCursor()
        changed, next_cursor = scan_inbox(inbox, cursor, settle_seconds=settings.tasks_settle_seconds)
        # The partition set is the memory of what ran: content seen before, under any name or
        # mtime, is not run again, while a new file with an old mtime is.
        known = set(context.instance.get_dynamic_partitions(TASK_FILES))
        new_keys: list[str] = []
        for path in changed:
            try:
                key = register_task_file(
                    path, adp.data_path, follow_symlinks=False, max_line_bytes=settings.max_task_line_bytes
                ).key
            except TaskFileError as exc:
                context.log.warning(redact(str(exc)))
                next_cursor.files.pop(path.name, None)  # look again next tick
                continue
            if key not in known and key not in new_keys:
                new_keys.append(key)
        if not new_keys:
            return dg.SensorResult(skip_reason=_nothing_new(inbox), cursor=next_cursor.model_dump_json())
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=key, partition_key=key) for key in new_keys],
            dynamic_partitions_requests=[task_files.build_add_request(new_keys)],
            cursor=next_cursor.model_dump_json(),
        )

    return task_file_sensor


def _nothing_new(inbox: Path) -> str:
    """The skip reason: which folder was looked at, and whether it is there at all."""
    if not inbox.exists():
        return f"TASKS_DIR {inbox} does not exist: create it and drop *.jsonl task files into it"
    if not inbox.is_dir():
        return f"TASKS_DIR {inbox} is not a folder"
    return f"no new task files in {inbox}"

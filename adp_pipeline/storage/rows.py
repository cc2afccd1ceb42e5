"""The one mapping between adp's records and the lake's rows (schemas in ``tables.py``): tasks
to rows and back, trajectories and their steps to rows, steps back. Ingest, execute, essences,
synthesis and export all go through here, so a new field is added in one place.

Rows are dicts keyed by column name; reading goes by name too (``Row``), never by position.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from runtimes.core import SCHEMA_VERSION, ActionType, ErrorType, Step, TaskSpec, Trajectory

Row = Mapping[str, Any]

TASK_FIELDS = ("task_id", "task_type", "description", "expected_tools", "max_steps", "timeout", "priority")
TASK_COLUMNS = (*TASK_FIELDS, "constraints", "lineage")
"""The columns of ``tasks`` that :func:`task_from_row` reads: a TaskSpec and nothing else."""
# What step_from_row reads: every Step field, the timestamp as epoch seconds (no timezone library);
# not the screenshot, whose bytes are a file in the lake that the row only names.
STEP_COLUMNS = (
    "task_id",
    *(field for field in Step.model_fields if field not in {"timestamp", "screenshot"}),
    "epoch(timestamp) AS timestamp",
)


def task_row(task: TaskSpec, *, source_file: str, line_number: int, ingested_at: datetime) -> dict[str, Any]:
    """``task`` as a row of ``tasks``."""
    return {
        **{name: getattr(task, name) for name in TASK_FIELDS},
        "task_type": task.task_type.value,
        "expected_tools": list(task.expected_tools),
        "constraints": task.constraints.model_dump_json(exclude_none=True),
        "source_file": source_file,
        "line_number": line_number,
        "schema_version": SCHEMA_VERSION,
        "ingested_at": ingested_at,
        "generation": task.generation,
        "lineage": task.lineage.model_dump_json() if task.lineage else None,
    }


def task_from_row(row: Row) -> TaskSpec:
    """The TaskSpec a row of ``tasks`` (at least :data:`TASK_COLUMNS`) holds."""
    return TaskSpec.model_validate(
        {
            **{name: row[name] for name in TASK_FIELDS},
            "constraints": json.loads(row["constraints"]),
            "lineage": json.loads(row["lineage"]) if row["lineage"] else None,
        },
        strict=False,
    )


def task_line(task: TaskSpec) -> str:
    """``task`` as one line of a task file (and the ``task`` column of the synthesis tables)."""
    return task.model_dump_json(exclude_none=True)


def trajectory_row(trajectory: Trajectory, created_at: datetime) -> dict[str, Any]:
    """``trajectory`` as a row of ``trajectories``; LLM calls are counted by :class:`~runtimes.core.LLMCall`."""
    calls = trajectory.llm_calls
    return {
        "task_id": trajectory.task_id,
        "task_type": trajectory.task_type.value,
        "success": trajectory.success,
        "error_type": trajectory.error_type.value if trajectory.error_type else None,
        "error_message": trajectory.error_message,
        "system_failure": trajectory.system_failure,
        "policy": trajectory.policy,
        "model": trajectory.model,
        "provider": trajectory.provider,
        "runtime_id": trajectory.runtime_id,
        "n_steps": len(trajectory.steps),
        "total_duration": trajectory.total_duration,
        "final_result": trajectory.final_result,
        "prompt_tokens": trajectory.usage.prompt_tokens,
        "completion_tokens": trajectory.usage.completion_tokens,
        "total_tokens": trajectory.usage.total_tokens,
        "llm_calls": sum(1 for call in calls if not call.cached),
        "llm_retries": sum(call.retries for call in calls),
        "llm_cached_calls": sum(1 for call in calls if call.cached),
        "verified": trajectory.verifier.passed if trajectory.verifier else None,
        "verifier": trajectory.verifier.model_dump_json() if trajectory.verifier else None,
        "attempts": trajectory.attempts,
        "messages": json.dumps(trajectory.messages, ensure_ascii=False),
        "tools": json.dumps(trajectory.tools, ensure_ascii=False),
        "schema_version": trajectory.schema_version,
        "created_at": created_at,
        "generation": trajectory.lineage.generation if trajectory.lineage else 0,
        "lineage": trajectory.lineage.model_dump_json() if trajectory.lineage else None,
    }


def conversation_from_row(row: Row) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``messages`` and ``tools`` a row of ``trajectories`` holds (JSON text in the lake)."""
    return json.loads(row["messages"]), json.loads(row["tools"])


def step_rows(trajectory: Trajectory, screenshots: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """``trajectory``'s steps as rows of ``steps``; ``screenshots`` names, by step id, the lake file
    that holds a step's screenshot (:meth:`~adp_pipeline.storage.Lake.write_screenshot`)."""
    screenshots = screenshots or {}
    return [
        {
            "task_id": trajectory.task_id,
            "step_id": step.step_id,
            "tool": step.tool,
            "action_type": step.action_type.value,
            "action_params": json.dumps(step.action_params, ensure_ascii=False),
            "observation": step.observation,
            "success": step.success,
            "error_type": step.error_type.value if step.error_type else None,
            "error_message": step.error_message,
            "duration": step.duration,
            "timestamp": datetime.fromtimestamp(step.timestamp, UTC),
            "screenshot": screenshots.get(step.step_id),
        }
        for step in trajectory.steps
    ]


def step_from_row(row: Row) -> Step:
    """The Step a row of ``steps`` (:data:`STEP_COLUMNS`) holds, without its screenshot's bytes
    (what reads steps back, essences and exports, has no use for them)."""
    return Step(
        step_id=row["step_id"],
        action_type=ActionType(row["action_type"]),
        tool=row["tool"],
        action_params=json.loads(row["action_params"]),
        observation=row["observation"],
        success=row["success"],
        error_type=ErrorType(row["error_type"]) if row["error_type"] else None,
        error_message=row["error_message"],
        duration=row["duration"],
        timestamp=row["timestamp"],
    )


def select(columns: tuple[str, ...]) -> str:
    """The SELECT list of ``columns``, for a query read back with :func:`named`."""
    return ", ".join(columns)


def named(cursor: Any) -> list[dict[str, Any]]:
    """A DuckDB cursor's rows as dicts keyed by column name."""
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

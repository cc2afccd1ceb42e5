"""The lake's tables: one Arrow schema each, the single source of their columns.

The partition column ``batch`` is not stored in the files; it comes from the
``batch=<key>`` folder (hive partitioning), so a partition can never disagree with its path.
"""

from __future__ import annotations

import pyarrow as pa

_INGESTED_AT = pa.field("ingested_at", pa.timestamp("us", tz="UTC"))
_GENERATION = pa.field("generation", pa.int32())  # 0: written by a person; N: synthesized
_LINEAGE = pa.field("lineage", pa.string())  # JSON text; null unless synthesized
# The batch commit a row of trajectories or steps belongs to: a batch's steps are visible only
# with the trajectories of their commit (STEPS_FOLLOW_TRAJECTORIES), so a reader never sees
# steps without their trajectories, whatever moment it reads at. Null in partitions written whole.
_COMMIT_ID = pa.field("commit_id", pa.string())

TABLES: dict[str, pa.Schema] = {
    "tasks": pa.schema(
        [
            pa.field("task_id", pa.string(), nullable=False),
            pa.field("task_type", pa.string(), nullable=False),
            pa.field("description", pa.string(), nullable=False),
            pa.field("expected_tools", pa.list_(pa.string()), nullable=False),
            pa.field("max_steps", pa.int32(), nullable=False),
            pa.field("timeout", pa.int32(), nullable=False),
            pa.field("priority", pa.int32(), nullable=False),
            pa.field("constraints", pa.string(), nullable=False),  # JSON text
            pa.field("source_file", pa.string(), nullable=False),
            pa.field("line_number", pa.int64(), nullable=False),
            pa.field("schema_version", pa.int32(), nullable=False),
            _INGESTED_AT,
            _GENERATION,
            _LINEAGE,
        ]
    ),
    "trajectories": pa.schema(
        [
            pa.field("task_id", pa.string(), nullable=False),
            pa.field("task_type", pa.string(), nullable=False),
            pa.field("success", pa.bool_(), nullable=False),
            pa.field("error_type", pa.string()),
            pa.field("error_message", pa.string()),
            # Trajectory.system_failure: adp's machinery failed the task (no model answered, no
            # browser, no sandbox), not the agent. Null in partitions written before it existed.
            pa.field("system_failure", pa.bool_()),
            pa.field("policy", pa.string(), nullable=False),
            pa.field("model", pa.string()),
            pa.field("provider", pa.string()),
            pa.field("runtime_id", pa.string(), nullable=False),
            pa.field("n_steps", pa.int32(), nullable=False),
            pa.field("total_duration", pa.float64(), nullable=False),
            pa.field("final_result", pa.string(), nullable=False),
            pa.field("prompt_tokens", pa.int64(), nullable=False),
            pa.field("completion_tokens", pa.int64(), nullable=False),
            pa.field("total_tokens", pa.int64(), nullable=False),
            pa.field("llm_calls", pa.int32(), nullable=False),
            pa.field("llm_retries", pa.int32(), nullable=False),
            pa.field("llm_cached_calls", pa.int32(), nullable=False),
            pa.field("verified", pa.bool_()),  # null: the task has no verifier
            pa.field("verifier", pa.string()),  # JSON text
            pa.field("attempts", pa.int32(), nullable=False),
            pa.field("messages", pa.string(), nullable=False),  # JSON text, OpenAI chat format
            pa.field("tools", pa.string(), nullable=False),  # JSON text, OpenAI tool schemas
            pa.field("schema_version", pa.int32(), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC")),
            _GENERATION,
            _LINEAGE,
            _COMMIT_ID,
        ]
    ),
    "steps": pa.schema(
        [
            pa.field("task_id", pa.string(), nullable=False),
            pa.field("step_id", pa.int32(), nullable=False),
            pa.field("tool", pa.string(), nullable=False),
            pa.field("action_type", pa.string(), nullable=False),
            pa.field("action_params", pa.string(), nullable=False),  # JSON text
            pa.field("observation", pa.string(), nullable=False),
            pa.field("success", pa.bool_(), nullable=False),
            pa.field("error_type", pa.string()),
            pa.field("error_message", pa.string()),
            pa.field("duration", pa.float64(), nullable=False),
            pa.field("timestamp", pa.timestamp("us", tz="UTC")),
            # The JPEG of the page after a browser step, as a path relative to the lake's root
            # (``screenshots/<batch>/<task>/<step>-<sha256[:12]>.jpg``, Lake.write_screenshot);
            # null for every other step, with ADP_SCREENSHOTS=off, and in files written before it existed.
            pa.field("screenshot", pa.string()),
            _COMMIT_ID,
        ]
    ),
    "essences": pa.schema(
        [
            pa.field("essence_id", pa.string(), nullable=False),
            pa.field("task_id", pa.string(), nullable=False),
            pa.field("task_type", pa.string(), nullable=False),
            pa.field("generation", pa.int32(), nullable=False),
            pa.field("domain", pa.string()),
            pa.field("query", pa.string(), nullable=False),
            pa.field("complexity", pa.int32(), nullable=False),
            pa.field("tools", pa.list_(pa.string()), nullable=False),
            pa.field("n_steps", pa.int32(), nullable=False),
            pa.field("success_pattern", pa.string(), nullable=False),  # JSON text
            pa.field("verifier_kind", pa.string(), nullable=False),
            pa.field("extractor", pa.string(), nullable=False),
            pa.field("prompt_hash", pa.string()),
            pa.field("created_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    # One row per accepted synthesized task, partitioned by the batch whose essences made it.
    "synthesized_tasks": pa.schema(
        [
            pa.field("task_id", pa.string(), nullable=False),
            pa.field("task_type", pa.string(), nullable=False),
            pa.field("generation", pa.int32(), nullable=False),
            pa.field("mutation", pa.string(), nullable=False),
            pa.field("parent_task_ids", pa.list_(pa.string()), nullable=False),
            pa.field("essence_ids", pa.list_(pa.string()), nullable=False),
            pa.field("description", pa.string(), nullable=False),
            pa.field("task", pa.string(), nullable=False),  # the task-file line (JSON text)
            pa.field("task_file", pa.string(), nullable=False),  # where it was written, in TASKS_DIR
            pa.field("tokens", pa.int64(), nullable=False),  # LLM tokens spent making it
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    ),
    # One row per candidate that was not accepted, with the filter that stopped it.
    "synthesis_rejects": pa.schema(
        [
            pa.field("candidate_id", pa.string()),  # null when the model gave no task at all
            pa.field("task_type", pa.string(), nullable=False),
            pa.field("mutation", pa.string(), nullable=False),
            pa.field("stage", pa.string(), nullable=False),  # model|validation|self_check|dedupe|guard
            pa.field("reason", pa.string(), nullable=False),
            pa.field("parent_task_ids", pa.list_(pa.string()), nullable=False),
            pa.field("essence_ids", pa.list_(pa.string()), nullable=False),
            pa.field("description", pa.string()),
            pa.field("task", pa.string()),  # JSON text, when there was a valid task
            pa.field("tokens", pa.int64(), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    ),
    "task_rejects": pa.schema(
        [
            pa.field("source_file", pa.string(), nullable=False),
            pa.field("line_number", pa.int64(), nullable=False),
            pa.field("field", pa.string()),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("raw", pa.string(), nullable=False),
            pa.field("raw_bytes", pa.int64(), nullable=False),
            pa.field("task_id", pa.string()),
            _INGESTED_AT,
        ]
    ),
}


# Columns a table's view computes from its stored ones (after ``*``). ``verified_success`` is
# the one definition of a verified success that every count reads (checks, dbt, CLI, essences,
# synthesis, export, charts): the run succeeded AND its verifier passed. A task without a
# verifier (``verified`` null) is not a verified success, however its run ended.
COMPUTED_COLUMNS: dict[str, dict[str, str]] = {
    "trajectories": {"verified_success": "success AND coalesce(verified, false)"},
}

# A row ``t`` of ``tasks`` that adp's synthesis wrote: its id and text are an accepted row of
# ``synthesized_tasks``. A ``lineage`` on a line a person wrote is kept as a claim, but only
# these tasks count as a synthesized generation (the view below, the synthesis checks).
WRITTEN_BY_SYNTHESIS = (
    "EXISTS (SELECT 1 FROM synthesized_tasks s WHERE s.task_id = t.task_id AND s.description = t.description)"
)

# Views computed from the tables (created after them, in the catalog and every lake connection).
DERIVED_VIEWS: dict[str, str] = {
    # Success of synthesized tasks by generation, mutation and type: the loop's feedback.
    "synthesis_stats": f"""
        SELECT t.generation,
               json_extract_string(t.lineage, '$.mutation') AS mutation,
               t.task_type,
               count(*) AS tasks,
               count(r.task_id) AS ran,
               count(*) FILTER (WHERE r.verified_success) AS succeeded,
               succeeded / nullif(ran, 0) AS success_rate
        FROM tasks t
        LEFT JOIN trajectories r ON r.batch = t.batch AND r.task_id = t.task_id
        WHERE {WRITTEN_BY_SYNTHESIS}
        GROUP BY ALL
        ORDER BY ALL
    """,
}

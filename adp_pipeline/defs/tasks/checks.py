"""The checks of ``task_batch``, evaluated in its own step (a step each would cost Dagster's
per-step overhead for a query of a few milliseconds)."""

import dagster as dg

from adp_pipeline.defs.markdown import for_people
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.task_files import registered_task_file

CHECK_SPECS = [
    dg.AssetCheckSpec(
        "every_line_accounted_for",
        asset="task_batch",
        blocking=True,
        description="accepted + rejected in the lake equals the non-blank lines of the file: nothing was dropped.",
    ),
    dg.AssetCheckSpec(
        "task_ids_unique",
        asset="task_batch",
        description="No task_id is accepted in two batches.",
    ),
]


def evaluate_checks(adp: AdpResource, batch: str) -> list[dg.AssetCheckResult]:
    return [every_line_accounted_for(adp, batch), task_ids_unique(adp)]


def every_line_accounted_for(adp: AdpResource, batch: str) -> dg.AssetCheckResult:
    registered = registered_task_file(adp.data_path, batch)
    with registered.path.open("rb") as lines:
        # Counted without the parser, so a parser that loses lines fails this check. The copy
        # holds no line over ADP_MAX_TASK_LINE_BYTES (a short placeholder stands for each).
        expected = sum(1 for line in lines if line.strip())
    # Past ADP_MAX_TASK_LINES, one reject row stands for all the lines not read.
    max_lines = adp.settings().max_task_lines
    expected = min(expected, max_lines) + (expected > max_lines)
    with adp.lake().connect() as connection:
        row = connection.execute(
            "SELECT (SELECT count(*) FROM tasks WHERE batch = $1),"
            " (SELECT count(*) FROM task_rejects WHERE batch = $1)",
            [batch],
        ).fetchone()
    accepted, rejected = row if row else (0, 0)
    return dg.AssetCheckResult(
        check_name="every_line_accounted_for",
        passed=accepted + rejected == expected,
        metadata=for_people({"non_blank_lines": expected, "accepted": accepted, "rejected": rejected}),
    )


def task_ids_unique(adp: AdpResource) -> dg.AssetCheckResult:
    with adp.lake().connect() as connection:
        duplicates = connection.execute(
            "SELECT task_id, list(batch ORDER BY batch) FROM tasks GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 20"
        ).fetchall()
    return dg.AssetCheckResult(
        check_name="task_ids_unique",
        passed=not duplicates,
        metadata=for_people({"duplicates": {str(task_id): batches for task_id, batches in duplicates}}),
    )

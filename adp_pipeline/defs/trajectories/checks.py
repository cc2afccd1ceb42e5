"""The checks of ``trajectories``, evaluated in its own step (see the tasks checks)."""

import dagster as dg

from adp_pipeline.defs.markdown import for_people, markdown_table
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.view.links import view_links
from runtimes.core import redact

_EXAMPLE_CHARS = 300

CHECK_SPECS = [
    dg.AssetCheckSpec(
        "one_trajectory_per_task",
        asset="trajectories",
        blocking=True,
        description="Every accepted task of the batch has exactly one trajectory, and no trajectory lacks a task.",
    ),
    dg.AssetCheckSpec(
        "not_all_system_failures",
        asset="trajectories",
        blocking=True,
        description="Not every task of the batch failed for a system reason (the trajectories' system_failure "
        "column: no model answered, not even within the task's timeout; no browser; a sandbox that could not run the "
        "code). A batch where every task did fails its run, its trajectories kept in the lake; ordinary failures "
        "(wrong answers, failing code, a start page that did not load) never fail it.",
    ),
    dg.AssetCheckSpec(
        "success_rate_per_type",
        asset="trajectories",
        description="The verified success rate of each task type in the batch is at least ADP_SUCCESS_THRESHOLD.",
    ),
    dg.AssetCheckSpec(
        "step_budget_respected",
        asset="trajectories",
        description="No trajectory has more steps than its task's max_steps.",
    ),
]


def evaluate_checks(adp: AdpResource, batch: str) -> list[dg.AssetCheckResult]:
    return [
        one_trajectory_per_task(adp, batch),
        not_all_system_failures(adp, batch),
        success_rate_per_type(adp, batch),
        step_budget_respected(adp, batch),
    ]


def one_trajectory_per_task(adp: AdpResource, batch: str) -> dg.AssetCheckResult:
    with adp.lake().connect() as connection:
        missing, extra, repeated = connection.execute(
            """
            SELECT
              (SELECT count(*) FROM tasks t WHERE t.batch = $1
                 AND t.task_id NOT IN (SELECT task_id FROM trajectories WHERE batch = $1)),
              (SELECT count(*) FROM trajectories r WHERE r.batch = $1
                 AND r.task_id NOT IN (SELECT task_id FROM tasks WHERE batch = $1)),
              (SELECT count(*) - count(DISTINCT task_id) FROM trajectories WHERE batch = $1)
            """,
            [batch],
        ).fetchone() or (0, 0, 0)
    return dg.AssetCheckResult(
        check_name="one_trajectory_per_task",
        passed=missing == extra == repeated == 0,
        metadata=for_people(
            {"tasks_without_trajectory": missing, "trajectories_without_task": extra, "repeated": repeated}
        ),
    )


def not_all_system_failures(adp: AdpResource, batch: str) -> dg.AssetCheckResult:
    """Fails (and, blocking, fails the run) when the batch has tasks and every one of them is a
    system failure: a run whose every task failed because the model, the browser or the sandbox
    was not there must not look like one whose tasks were merely hard. Read from the lake, so a
    re-run that finds the batch committed and runs nothing says the same."""
    causes: list[tuple[str, int, str, str]] = []
    with adp.lake().connect() as connection:
        tasks, system = connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE system_failure) FROM trajectories WHERE batch = ?", [batch]
        ).fetchone() or (0, 0)
        if system:
            causes = connection.execute(
                "SELECT r.error_type, count(*), arg_min(r.task_id, (t.line_number, r.task_id)), "
                "arg_min(r.error_message, (t.line_number, r.task_id)) FROM trajectories r "
                "LEFT JOIN tasks t USING (batch, task_id) "
                "WHERE r.batch = ? AND r.system_failure GROUP BY 1 ORDER BY 2 DESC, 1",
                [batch],
            ).fetchall()
    # One line each (the first is the run's failure reason in `adp run`), redacted before cut.
    causes = [
        (kind, n, task, " ".join(redact(message or "").split())[:_EXAMPLE_CHARS]) for kind, n, task, message in causes
    ]
    failed = bool(tasks) and system == tasks
    description = None
    if failed:
        kind, _, task, example = causes[0]
        counts = ", ".join(f"{n} {error_type}" for error_type, n, _, _ in causes)
        description = (
            f"every one of the {tasks} tasks failed for a system reason ({counts}); e.g. task {task}: {kind}: "
            f"{example} -- fix the cause (`adp doctor` checks the model, the browser and the sandbox), then run the "
            "batch again from the start (`adp run --fresh FILE`, or launch the partition with the run tag "
            "adp/fresh=true)"
        )
    metadata = {
        "tasks": tasks,
        "system_failures": system,
        "causes": markdown_table(("error type", "tasks", "example task", "its message"), causes),
    }
    if causes and (links := view_links(adp.settings().view_url)) is not None:
        metadata["view_example"] = dg.MetadataValue.url(links.trajectory(batch, causes[0][2]))
    return dg.AssetCheckResult(
        check_name="not_all_system_failures",
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=for_people(metadata),
    )


def success_rate_per_type(adp: AdpResource, batch: str) -> dg.AssetCheckResult:
    threshold = adp.settings().success_threshold
    with adp.lake().connect() as connection:
        rates = connection.execute(
            "SELECT task_type, count(*), count(*) FILTER (WHERE verified_success) FROM trajectories WHERE batch = ? "
            "GROUP BY 1 ORDER BY 1",
            [batch],
        ).fetchall()
    below = {task_type: ok / n for task_type, n, ok in rates if ok / n < threshold}
    table = markdown_table(("type", "tasks", "verified", "rate"), [(t, n, ok, f"{ok / n:.1%}") for t, n, ok in rates])
    return dg.AssetCheckResult(
        check_name="success_rate_per_type",
        passed=not below,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if not below else f"below {threshold:.0%}: {', '.join(sorted(below))}",
        metadata=for_people({"threshold": threshold, "rates": table}),
    )


def step_budget_respected(adp: AdpResource, batch: str) -> dg.AssetCheckResult:
    with adp.lake().connect() as connection:
        over = connection.execute(
            "SELECT r.task_id FROM trajectories r JOIN tasks t USING (batch, task_id) "
            "WHERE r.batch = ? AND r.n_steps > t.max_steps ORDER BY 1 LIMIT 20",
            [batch],
        ).fetchall()
    return dg.AssetCheckResult(
        check_name="step_budget_respected",
        passed=not over,
        metadata=for_people({"over_budget": [task_id for (task_id,) in over]}),
    )

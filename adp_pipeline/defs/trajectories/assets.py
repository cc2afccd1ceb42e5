import dagster as dg

from adp_pipeline.defs.markdown import failures_redacted, for_people, markdown_bar_chart, markdown_table
from adp_pipeline.defs.partitions import task_files
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.defs.tasks.assets import refuse_unusable_policy, task_batch
from adp_pipeline.defs.trajectories.checks import CHECK_SPECS, evaluate_checks
from adp_pipeline.execute import BatchProgress, ExecuteSummary, execute_batch
from adp_pipeline.view.links import ViewLinks, view_links
from runtimes.core import Trajectory, redact

_PROGRESS_EVERY = 25
# A run tag that makes the trajectories of a partition start over instead of resuming a crashed run.
FRESH_TAG = "adp/fresh"
_BATCHES_CHARTED = 15


@dg.asset(
    partitions_def=task_files,
    group_name="tasks",
    deps=[task_batch],
    kinds={"python", "parquet"},
    description="One trajectory per accepted task (success or a classified failure), with its steps.",
    check_specs=CHECK_SPECS,
)
@failures_redacted()
def trajectories(context: dg.AssetExecutionContext, adp: AdpResource) -> dg.MaterializeResult:
    settings = adp.settings()
    refuse_unusable_policy(settings)  # checked by task_batch too; this step can be re-executed alone
    done = 0

    def progress(trajectory: Trajectory) -> None:
        nonlocal done
        done += 1
        if done % _PROGRESS_EVERY == 0:
            context.log.info(redact(f"{done} tasks done (last: {trajectory.task_id}, success={trajectory.success})"))

    started: list[BatchProgress] = []

    def committed(state: BatchProgress) -> None:
        """The run's progress in its log and, as an observation of the partition, in the asset's
        page: done of total and verified successes so far, at the start and after every chunk."""
        if not started:
            started.append(state)
            if state.resumed:
                running = state.total - state.resumed
                context.log.info(
                    f"resuming: {state.resumed:,} of {state.total:,} tasks done before; running {running:,}"
                )
        else:
            context.log.info(
                f"chunk {state.chunks} committed: {state.done:,} of {state.total:,} tasks done, "
                f"{state.succeeded:,} verified successes in this run so far"
            )
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                partition=context.partition_key,
                metadata={
                    "done": dg.MetadataValue.int(state.done),
                    "total": dg.MetadataValue.int(state.total),
                    "resumed": dg.MetadataValue.int(state.resumed),
                    "verified_successes_so_far": dg.MetadataValue.int(state.succeeded),
                },
            )
        )

    fresh = context.run.tags.get(FRESH_TAG) == "true"
    summary = execute_batch(
        adp.lake(), context.partition_key, settings, on_done=progress, fresh=fresh, on_progress=committed
    )
    context.log.info(f"{done} tasks done with policy {summary.policy}")
    resumed = started[0].resumed if started else 0
    charts = _charts(adp, context.partition_key, view_links(settings.view_url))
    metadata = {**_metadata(summary), "resumed": dg.MetadataValue.int(resumed), **charts}
    checks = evaluate_checks(adp, context.partition_key)
    return dg.MaterializeResult(metadata=for_people(metadata), check_results=checks)


def _charts(adp: AdpResource, batch: str, links: ViewLinks | None) -> dict[str, dg.MetadataValue]:
    """What a person checks first: the top errors with an example, the verified success rate of
    the latest batches (oldest first) and this batch's step counts, as charts; with a viewer, links
    to the batch's trajectories and to the example of its top error type there."""
    with adp.lake().connect() as connection:
        rates = connection.execute(
            "SELECT batch, avg(CASE WHEN verified_success THEN 1 ELSE 0 END), min(created_at) "
            f"FROM trajectories GROUP BY batch ORDER BY 3 DESC LIMIT {_BATCHES_CHARTED}"
        ).fetchall()[::-1]
        steps = connection.execute(
            "SELECT n_steps, count(*) FROM trajectories WHERE batch = ? GROUP BY 1 ORDER BY 1", [batch]
        ).fetchall()
        errors = connection.execute(
            "SELECT r.error_type, count(*), arg_min(r.task_id, (t.line_number, r.task_id)), "
            "arg_min(r.error_message, (t.line_number, r.task_id)) FROM trajectories r "
            "LEFT JOIN tasks t USING (batch, task_id) "
            "WHERE r.batch = ? AND r.error_type IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
            [batch],
        ).fetchall()
    panels: dict[str, dg.MetadataValue] = {}
    if links is not None:
        panels["view_batch"] = dg.MetadataValue.url(links.batch(batch))
        if errors:
            panels["view_top_error_example"] = dg.MetadataValue.url(links.trajectory(batch, errors[0][2]))
    if errors:
        # Redacted before it is cut: a cut can leave a secret its redaction would not recognise.
        rows = [(kind, n, task, redact(message or "")[:160]) for kind, n, task, message in errors]
        panels["top_errors"] = markdown_table(("error type", "tasks", "example task", "its message"), rows)
    return panels | {
        "success_over_batches": markdown_bar_chart(
            "verified success rate, latest batches", [r[0] for r in rates], [r[1] for r in rates], percent=True
        ),
        "step_counts": markdown_bar_chart(
            "trajectories per step count", [f"{n} steps" for n, _ in steps], [c for _, c in steps]
        ),
    }


def _metadata(summary: ExecuteSummary) -> dict[str, dg.MetadataValue]:
    rows = [
        (task_type, outcome.tasks, outcome.succeeded, f"{outcome.success_rate:.0%}")
        for task_type, outcome in summary.by_type.items()
        if outcome.tasks
    ]
    metadata: dict[str, dg.MetadataValue] = {
        "policy": dg.MetadataValue.text(summary.policy),
        "tasks": dg.MetadataValue.int(sum(o.tasks for o in summary.by_type.values())),
        "succeeded": dg.MetadataValue.int(sum(o.succeeded for o in summary.by_type.values())),
        "llm_calls": dg.MetadataValue.int(summary.llm_calls),
        "llm_retries": dg.MetadataValue.int(summary.llm_retries),
        "by_type": markdown_table(("type", "tasks", "succeeded", "rate"), rows),
    }
    if summary.error_types:
        metadata["error_types"] = dg.MetadataValue.json(summary.error_types)
    return metadata

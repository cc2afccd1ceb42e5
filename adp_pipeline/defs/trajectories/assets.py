import dagster as dg

from adp_pipeline.defs.partitions import task_files
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.defs.tasks.assets import task_batch
from adp_pipeline.defs.trajectories.checks import CHECK_SPECS, evaluate_checks
from adp_pipeline.execute import ExecuteSummary, execute_batch
from runtimes.protocol import Trajectory

_PROGRESS_EVERY = 25


@dg.asset(
    partitions_def=task_files,
    group_name="tasks",
    deps=[task_batch],
    kinds={"python", "parquet"},
    description="One trajectory per accepted task (success or a classified failure), with its steps.",
    check_specs=CHECK_SPECS,
)
def trajectories(context: dg.AssetExecutionContext, adp: AdpResource) -> dg.MaterializeResult:
    done = 0

    def progress(trajectory: Trajectory) -> None:
        nonlocal done
        done += 1
        if done % _PROGRESS_EVERY == 0:
            context.log.info(f"{done} tasks done (last: {trajectory.task_id}, success={trajectory.success})")

    summary = execute_batch(adp.lake(), context.partition_key, adp.settings(), on_done=progress)
    context.log.info(f"{done} tasks done with policy {summary.policy}")
    return dg.MaterializeResult(metadata=_metadata(summary), check_results=evaluate_checks(adp, context.partition_key))


def _metadata(summary: ExecuteSummary) -> dict[str, dg.MetadataValue]:
    rows = [
        f"| {task_type} | {outcome.tasks} | {outcome.succeeded} | {outcome.success_rate:.0%} |"
        for task_type, outcome in summary.by_type.items()
        if outcome.tasks
    ]
    metadata: dict[str, dg.MetadataValue] = {
        "policy": dg.MetadataValue.text(summary.policy),
        "tasks": dg.MetadataValue.int(sum(o.tasks for o in summary.by_type.values())),
        "succeeded": dg.MetadataValue.int(sum(o.succeeded for o in summary.by_type.values())),
        "llm_calls": dg.MetadataValue.int(summary.llm_calls),
        "llm_retries": dg.MetadataValue.int(summary.llm_retries),
        "by_type": dg.MetadataValue.md("\n".join(["| type | tasks | succeeded | rate |", "|---|---|---|---|", *rows])),
    }
    if summary.error_types:
        metadata["error_types"] = dg.MetadataValue.json(summary.error_types)
    return metadata

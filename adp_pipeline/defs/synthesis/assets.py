"""Verified trajectories in, task essences out: the first stage of the synthesis loop."""

import dagster as dg

from adp_pipeline.defs.partitions import task_files
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.defs.trajectories.assets import trajectories
from adp_pipeline.essences import extract_batch_essences


@dg.asset(
    partitions_def=task_files,
    group_name="tasks",
    deps=[trajectories],
    kinds={"python", "parquet"},
    description="One essence per verified trajectory (seed 004): type, tools, steps, verifier, success pattern.",
)
def task_essences(context: dg.AssetExecutionContext, adp: AdpResource) -> dg.MaterializeResult:
    summary = extract_batch_essences(adp.lake(), context.partition_key, adp.settings())
    context.log.info(f"{len(summary.essences)} essences from {summary.trajectories} trajectories")
    if summary.model_failures:
        context.log.warning(f"the model gave no valid essence for {len(summary.model_failures)} tasks: structural")
    sample = summary.essences[0].model_dump(mode="json") if summary.essences else {}
    return dg.MaterializeResult(
        metadata={
            "trajectories": dg.MetadataValue.int(summary.trajectories),
            "essences": dg.MetadataValue.int(len(summary.essences)),
            "by_type": dg.MetadataValue.json(summary.by_type),
            "model_failures": dg.MetadataValue.int(len(summary.model_failures)),
            "sample": dg.MetadataValue.json(sample),
        }
    )

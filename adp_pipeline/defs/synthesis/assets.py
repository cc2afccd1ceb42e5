"""Verified trajectories in, essences, then verified new tasks out: the synthesis loop's assets."""

import dagster as dg

from adp_pipeline.defs.markdown import failures_redacted, for_people
from adp_pipeline.defs.partitions import task_files
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.defs.synthesis.checks import CHECK_SPECS, evaluate_checks
from adp_pipeline.defs.trajectories.assets import trajectories
from adp_pipeline.essences import extract_batch_essences
from adp_pipeline.synthesize import skipped_in_words, synthesize_batch
from adp_pipeline.view.links import view_links
from runtimes.core import redact
from synthesis.stages import Stage


@dg.asset(
    partitions_def=task_files,
    group_name="tasks",
    deps=[trajectories],
    kinds={"python", "parquet"},
    description="One essence per verified trajectory (seed 004): type, tools, steps, verifier, success pattern.",
)
@failures_redacted()
def task_essences(context: dg.AssetExecutionContext, adp: AdpResource) -> dg.MaterializeResult:
    summary = extract_batch_essences(adp.lake(), context.partition_key, adp.settings())
    context.log.info(f"{summary.essences} essences from {summary.trajectories} trajectories")
    if summary.model_failures:
        context.log.warning(f"the model gave no valid essence for {len(summary.model_failures)} tasks: structural")
    sample = summary.sample.model_dump(mode="json") if summary.sample else {}
    return dg.MaterializeResult(
        metadata=for_people(
            {
                "trajectories": dg.MetadataValue.int(summary.trajectories),
                "essences": dg.MetadataValue.int(summary.essences),
                "by_type": dg.MetadataValue.json(dict(summary.by_type)),
                "model_failures": dg.MetadataValue.int(len(summary.model_failures)),
                "sample": dg.MetadataValue.json(sample),
            }
        )
    )


@dg.asset(
    partitions_def=task_files,
    group_name="tasks",
    deps=[task_essences],
    kinds={"python", "parquet"},
    # The UI renders a description as Markdown and its sanitizer drops what looks like an HTML tag
    # (`<batch>` vanished): the file names are code spans, where their placeholders are text.
    description="New tasks mutated from the batch's essences, each verified by execution and deduplicated; "
    "written to TASKS_DIR as `synth-<batch>-g<N>.jsonl` (`synth-<batch>-g<N>-r<M>.jsonl` when materialised "
    "again: accepted tasks are kept), where the sensor runs them. When it makes no candidate, the metadata "
    "says why (`no_candidates_because`).",
    check_specs=CHECK_SPECS,
)
@failures_redacted()
def synthesized_tasks(context: dg.AssetExecutionContext, adp: AdpResource) -> dg.MaterializeResult:
    settings = adp.settings()
    summary = synthesize_batch(
        adp.lake(), context.partition_key, settings, log=lambda message: context.log.info(redact(message))
    )
    accepted = summary.accepted
    context.log.info(
        f"{len(summary.candidates)} candidates from {summary.essences} essences: {len(accepted)} accepted, "
        f"rejected by stage {summary.rejected or 'none'}"
    )
    for generation, path in sorted(summary.task_files.items()):
        context.log.info(redact(f"wrote generation {generation} to {path}"))
    for reason in summary.stopped:
        context.log.warning(redact(f"loop guard: {reason}"))
    if summary.no_candidates_because is not None and summary.no_candidates_because not in summary.stopped:
        context.log.warning(redact(f"no candidates: {summary.no_candidates_because}"))
    metadata: dict[str, dg.MetadataValue] = {
        "essences": dg.MetadataValue.int(summary.essences),
        "candidates": dg.MetadataValue.int(len(summary.candidates)),
        **{f"rejected_{stage}": dg.MetadataValue.int(summary.rejected.get(stage, 0)) for stage in Stage},
        "accepted": dg.MetadataValue.int(len(accepted)),
        "tokens": dg.MetadataValue.int(summary.tokens),
        # By generation (JSON keys are text): the file the sensor runs for each.
        "task_files": dg.MetadataValue.json({str(g): str(path) for g, path in sorted(summary.task_files.items())}),
        "stopped": dg.MetadataValue.json(summary.stopped),
        "skipped": dg.MetadataValue.json(skipped_in_words(summary.skipped, settings.synth_max_generation)),
        "seconds": dg.MetadataValue.json(summary.seconds),
        "sample": dg.MetadataValue.json(accepted[0].model_dump(mode="json", exclude_none=True) if accepted else {}),
    }
    if (links := view_links(settings.view_url)) is not None:
        metadata["view_rejects"] = dg.MetadataValue.url(links.rejects(context.partition_key))
    if summary.no_candidates_because is not None:
        metadata["no_candidates_because"] = dg.MetadataValue.text(summary.no_candidates_because)
    return dg.MaterializeResult(
        metadata=for_people(metadata), check_results=evaluate_checks(adp, context.partition_key)
    )

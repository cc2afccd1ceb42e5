import dagster as dg

from adp_pipeline.defs.markdown import for_people, markdown_table
from adp_pipeline.defs.partitions import task_files
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.defs.tasks.checks import CHECK_SPECS, evaluate_checks
from adp_pipeline.essences import extractor_endpoint
from adp_pipeline.ingest import IngestSummary, ingest_task_file
from adp_pipeline.storage import ensure_catalog
from adp_pipeline.task_files import registered_task_file
from runtimes.core import CatalogError, ConfigError, redact
from runtimes.settings import Settings

_REJECTS_SHOWN = 20


@dg.asset(
    partitions_def=task_files,
    group_name="tasks",
    kinds={"parquet", "duckdb"},
    description="The validated tasks of one task file; every rejected line is kept with its line number and reason.",
    check_specs=CHECK_SPECS,
)
def task_batch(context: dg.AssetExecutionContext, adp: AdpResource) -> dg.MaterializeResult:
    settings = adp.settings()
    if _runs_tasks(context):
        # Before anything is written: a policy that cannot act would end every task failed.
        refuse_unusable_policy(settings)
    registered = registered_task_file(adp.data_path, context.partition_key)
    summary = ingest_task_file(
        adp.lake(),
        registered,
        max_line_bytes=settings.max_task_line_bytes,
        max_lines=settings.max_task_lines,
        default_timeout=settings.task_timeout,
        max_memory_mb=settings.sandbox_max_memory_mb,
        shown=_REJECTS_SHOWN,
    )
    try:
        ensure_catalog(adp.data_path)
    except CatalogError as exc:  # the lake is written; only the convenience file is stale
        context.log.warning(redact(str(exc)))
    context.log.info(
        redact(
            f"{summary.source_file}: {summary.accepted} accepted ({summary.warning_count} warnings), "
            f"{summary.rejected} rejected of {summary.non_blank_lines} non-blank lines"
        )
    )
    checks = evaluate_checks(adp, context.partition_key)
    return dg.MaterializeResult(metadata=for_people(_metadata(summary)), check_results=checks)


def refuse_unusable_policy(settings: Settings) -> None:
    """Fail the run, saying why and how to fix it, when ``settings.policy`` cannot run here (the
    llm policy without a model, contradictory LLM settings), or the llm essence extractor has no model.

    In redis mode too: the workers run the tasks with their own LLM settings, but the deployment
    gives the Dagster processes the same ones (docker-compose.yml's ``x-adp-env``), and the run's
    resume identity is taken from these. A worker without a model still cannot pass unseen: its
    tasks are system failures, which fail the run (``not_all_system_failures``).

    Raises:
        dg.Failure: the reason, one line, with the policy and mode as metadata.
    """
    problem = settings.policy_config.problem(settings.policy)
    if problem is None:
        try:  # the essences step asks the model too, after every task ran: say it before
            extractor_endpoint(settings)
        except ConfigError as exc:
            problem = str(exc)
    if problem is None:
        return
    # The file is a partition now: dropping it again runs nothing, so say how to run it once fixed.
    again = "; once fixed, launch this partition again (the UI's Materialize, or `adp run FILE`)"
    raise dg.Failure(
        description=redact(problem + again),
        metadata=for_people({"policy": settings.policy, "mode": settings.mode}),
        allow_retries=False,
    )


def _runs_tasks(context: dg.AssetExecutionContext) -> bool:
    """Whether this run goes on to run the batch's tasks (its ``trajectories`` step): a run of
    ``task_batch`` alone only ingests, and needs no policy."""
    steps = context.run.step_keys_to_execute  # None: every step of the job
    if steps is not None:
        return "trajectories" in steps
    return any(node.name == "trajectories" for node in context.job_def.nodes)


def _metadata(summary: IngestSummary) -> dict[str, dg.MetadataValue]:
    metadata: dict[str, dg.MetadataValue] = {
        "source_file": dg.MetadataValue.path(summary.source_file),
        "non_blank_lines": dg.MetadataValue.int(summary.non_blank_lines),
        "accepted": dg.MetadataValue.int(summary.accepted),
        "rejected": dg.MetadataValue.int(summary.rejected),
    }
    for task_type, count in summary.by_type.items():
        metadata[f"accepted_{task_type}"] = dg.MetadataValue.int(count)
    metadata["warnings"] = dg.MetadataValue.int(summary.warning_count)
    # The summary keeps only the first warnings and rejects; the counts say how many more there are.
    if summary.warnings:
        rows = [(w.line_number, w.task_id, w.field, w.message) for w in summary.warnings]
        metadata["warning_lines"] = markdown_table(
            ("line", "task", "field", "warning"), rows, shown=_REJECTS_SHOWN, total=summary.warning_count
        )
    if summary.rejects:
        rejects = [(r.line_number, r.field or "", r.reason) for r in summary.rejects]
        metadata["rejects"] = markdown_table(
            ("line", "field", "reason"),
            rejects,
            shown=_REJECTS_SHOWN,
            where_the_rest_is=" (query `task_rejects`)",
            total=summary.rejected,
        )
    return metadata

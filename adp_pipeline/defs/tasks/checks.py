import dagster as dg

from adp_pipeline.defs.partitions import task_files
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.defs.tasks.assets import task_batch
from adp_pipeline.task_files import registered_task_file


@dg.asset_check(asset=task_batch, partitions_def=task_files, blocking=True)
def every_line_accounted_for(context: dg.AssetCheckExecutionContext, adp: AdpResource) -> dg.AssetCheckResult:
    """accepted + rejected in the lake equals the non-blank lines of the file: nothing was dropped."""
    batch = context.partition_key
    registered = registered_task_file(adp.data_path, batch)
    with registered.path.open("rb") as lines:
        # Counted without the parser, so a parser that loses lines fails this check.
        expected = sum(1 for line in lines if line.strip())
    with adp.lake().connect() as connection:
        row = connection.execute(
            "SELECT (SELECT count(*) FROM tasks WHERE batch = $1),"
            " (SELECT count(*) FROM task_rejects WHERE batch = $1)",
            [batch],
        ).fetchone()
    accepted, rejected = row if row else (0, 0)
    return dg.AssetCheckResult(
        passed=accepted + rejected == expected,
        metadata={"non_blank_lines": expected, "accepted": accepted, "rejected": rejected},
    )


@dg.asset_check(asset=task_batch, blocking=False)
def task_ids_unique(adp: AdpResource) -> dg.AssetCheckResult:
    """No task_id is accepted in two batches (two batches ingested at the same moment could race)."""
    with adp.lake().connect() as connection:
        duplicates = connection.execute(
            "SELECT task_id, list(batch ORDER BY batch) FROM tasks GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 20"
        ).fetchall()
    return dg.AssetCheckResult(
        passed=not duplicates,
        metadata={"duplicates": dg.MetadataValue.json({str(task_id): batches for task_id, batches in duplicates})},
    )

import dagster as dg

from adp_pipeline.defs.partitions import task_files

# Everything that is computed per task file, in dependency order; later assets join the group.
process_task_file = dg.define_asset_job(
    "process_task_file",
    selection=dg.AssetSelection.groups("tasks"),
    partitions_def=task_files,
    description="Materialise every per-file asset for one task file partition.",
)

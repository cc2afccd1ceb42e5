import dagster as dg

# Everything computed per task file (partitioned by task_files); later assets join the group.
process_task_file = dg.define_asset_job(
    "process_task_file",
    selection=dg.AssetSelection.groups("tasks"),
    description="Materialise every per-file asset for one task file partition.",
)

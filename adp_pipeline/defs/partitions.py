import warnings

import dagster as dg

# One partition per task file, keyed `<stem>-<sha256[:8]>` of its content (DESIGN.md §3).
task_files = dg.DynamicPartitionsDefinition(name="task_files")

# Partitioned asset checks are a Dagster preview feature; ours need their partition to be useful.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")

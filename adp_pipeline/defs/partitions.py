import dagster as dg

# One partition per task file, keyed `<stem>-<sha256[:8]>` of its content (DESIGN.md §3).
TASK_FILES = "task_files"
task_files = dg.DynamicPartitionsDefinition(name=TASK_FILES)

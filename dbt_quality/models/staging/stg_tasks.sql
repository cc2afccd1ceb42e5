select
    task_id,
    batch,
    task_type,
    description,
    max_steps,
    timeout,
    priority,
    len(expected_tools) as n_expected_tools,
    source_file,
    line_number,
    ingested_at
from {{ source('adp', 'tasks') }}

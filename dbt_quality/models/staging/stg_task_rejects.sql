select batch, source_file, line_number, field, reason, raw_bytes, ingested_at
from {{ source('adp', 'task_rejects') }}

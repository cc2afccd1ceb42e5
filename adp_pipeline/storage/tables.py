"""The lake's tables: one Arrow schema each, the single source of their columns.

The partition column ``batch`` is not stored in the files; it comes from the
``batch=<key>`` folder (hive partitioning), so a partition can never disagree with its path.
"""

from __future__ import annotations

import pyarrow as pa

_INGESTED_AT = pa.field("ingested_at", pa.timestamp("us", tz="UTC"))

TABLES: dict[str, pa.Schema] = {
    "tasks": pa.schema(
        [
            pa.field("task_id", pa.string(), nullable=False),
            pa.field("task_type", pa.string(), nullable=False),
            pa.field("description", pa.string(), nullable=False),
            pa.field("expected_tools", pa.list_(pa.string()), nullable=False),
            pa.field("max_steps", pa.int32(), nullable=False),
            pa.field("timeout", pa.int32(), nullable=False),
            pa.field("priority", pa.int32(), nullable=False),
            pa.field("constraints", pa.string(), nullable=False),  # JSON text
            pa.field("source_file", pa.string(), nullable=False),
            pa.field("line_number", pa.int64(), nullable=False),
            pa.field("schema_version", pa.int32(), nullable=False),
            _INGESTED_AT,
        ]
    ),
    "task_rejects": pa.schema(
        [
            pa.field("source_file", pa.string(), nullable=False),
            pa.field("line_number", pa.int64(), nullable=False),
            pa.field("field", pa.string()),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("raw", pa.string(), nullable=False),
            pa.field("raw_bytes", pa.int64(), nullable=False),
            pa.field("task_id", pa.string()),
            _INGESTED_AT,
        ]
    ),
}

"""Storage: the Parquet lake and the DuckDB catalog of views over it (DESIGN.md §4), and the
confined connections and read-only statements through which everything reads them (§11), and
the reports on batches that the CLI prints (``reports``)."""

from adp_pipeline.storage.catalog import catalog_path, ensure_catalog, open_catalog, quality_path
from adp_pipeline.storage.confine import (
    MAX_NESTING,
    QueryLimits,
    confine,
    confined_connection,
    outside_the_lake_refused,
    read_condition,
    read_statement,
    within_limits,
)
from adp_pipeline.storage.lake import Lake, unwritable_reason
from adp_pipeline.storage.reports import (
    BatchReport,
    FailureGroup,
    RejectedLine,
    RunReport,
    SynthesisReport,
    TypeTally,
    batch_reports,
    failures_by_error_type,
    lake_exists,
    rejected_lines,
    run_report,
    synthesis_reports,
)
from runtimes.core import RefusedError  # what confine's checks raise: callers catch it from here

__all__ = [
    "MAX_NESTING",
    "BatchReport",
    "FailureGroup",
    "Lake",
    "QueryLimits",
    "RefusedError",
    "RejectedLine",
    "RunReport",
    "SynthesisReport",
    "TypeTally",
    "batch_reports",
    "catalog_path",
    "confine",
    "confined_connection",
    "ensure_catalog",
    "failures_by_error_type",
    "lake_exists",
    "open_catalog",
    "outside_the_lake_refused",
    "quality_path",
    "read_condition",
    "read_statement",
    "rejected_lines",
    "run_report",
    "synthesis_reports",
    "unwritable_reason",
    "within_limits",
]

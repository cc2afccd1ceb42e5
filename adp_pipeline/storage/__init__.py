"""Storage: the Parquet lake and the DuckDB catalog of views over it (DESIGN.md §4)."""

from adp_pipeline.storage.catalog import catalog_path, ensure_catalog, open_catalog
from adp_pipeline.storage.lake import Lake, unwritable_reason

__all__ = ["Lake", "catalog_path", "ensure_catalog", "open_catalog", "unwritable_reason"]

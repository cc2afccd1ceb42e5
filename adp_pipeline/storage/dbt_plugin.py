"""The dbt-duckdb plugin that confines dbt's DuckDB connection like every other reader of the
lake (DESIGN.md §11); dbt_quality/profiles.yml names it.

dbt writes its own database (``quality.duckdb``) and reads adp's catalog, attached read-only,
whose views read the lake. So the connection may reach the lake and the catalog file, and
nothing else: a model or test that reads ``/etc/passwd``, writes a file with ``COPY``, or
attaches another database fails. dbt-duckdb calls ``configure_connection`` after opening its
database and before attaching the catalog, which is why the catalog is named here as a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
from dbt.adapters.duckdb.plugins import BasePlugin

from adp_pipeline.storage.catalog import catalog_path
from adp_pipeline.storage.confine import confine
from adp_pipeline.storage.lake import Lake


class Plugin(BasePlugin):
    """Profile config: ``data_dir``, the data dir whose lake and catalog dbt reads."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        if not plugin_config.get("data_dir"):
            raise ValueError("the adp dbt plugin needs data_dir in its config (profiles.yml)")
        self.data_dir = Path(plugin_config["data_dir"])

    def configure_connection(self, conn: duckdb.DuckDBPyConnection) -> None:
        catalog = catalog_path(self.data_dir)
        confine(conn, [Lake(self.data_dir).root], files=[catalog, catalog.with_name(f"{catalog.name}.wal")])

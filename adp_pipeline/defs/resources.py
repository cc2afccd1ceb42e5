"""The resource every adp asset, check and sensor reads its settings and storage through."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from adp_pipeline.storage import Lake
from runtimes.settings import Settings


class AdpResource(dg.ConfigurableResource):
    """Where adp keeps its data and how it ingests task files (env: see the README)."""

    data_dir: str = Field(description="ADP_DATA_DIR: the lake, the DuckDB catalog and registered task files.")
    tasks_dir: str = Field(description="TASKS_DIR: the folder the task file sensor watches.")
    tasks_settle_seconds: float = Field(description="A task file is picked up once unmodified this long.")
    max_task_line_bytes: int = Field(description="Longer task lines are rejected unread.")
    task_timeout: int = Field(description="Timeout in seconds for tasks whose line gives none.")

    @classmethod
    def from_settings(cls, settings: Settings) -> "AdpResource":
        return cls(
            data_dir=str(settings.data_dir.absolute()),
            tasks_dir=str(settings.tasks_dir.absolute()),
            tasks_settle_seconds=settings.tasks_settle_seconds,
            max_task_line_bytes=settings.max_task_line_bytes,
            task_timeout=settings.task_timeout,
        )

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def lake(self) -> Lake:
        return Lake(self.data_path)

"""The Dagster instance `adp run` and `adp dev` share, so CLI runs show up in the UI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from runtimes.settings import Settings

INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")


def dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME when set, else ``<data_dir>/dagster``."""
    explicit = os.environ.get("DAGSTER_HOME")
    return Path(explicit) if explicit else settings.dagster_home.absolute()


def prepare_dagster_home(settings: Settings) -> Path:
    """Create the instance folder, with adp's dagster.yaml when it has none."""
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(INSTANCE_TEMPLATE, config)
    return home


def open_instance(settings: Settings) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(prepare_dagster_home(settings)))

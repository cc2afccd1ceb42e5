"""The one Dagster code location of adp: ``dagster dev -m adp_pipeline.definitions``.

Loading it is the edge where a Dagster process (the webserver, the daemon, a run worker) reads
its settings: the environment and ``.env``, once.
"""

from __future__ import annotations

from adp_pipeline.builder import build_definitions
from runtimes.settings import Settings

__all__ = ["defs"]

defs = build_definitions(Settings())

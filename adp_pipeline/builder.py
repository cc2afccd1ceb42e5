"""How adp's Dagster ``Definitions`` are put together, for the code location and for `adp run`."""

from __future__ import annotations

import dagster as dg

from adp_pipeline.defs.jobs import process_task_file
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.defs.synthesis.assets import synthesized_tasks, task_essences
from adp_pipeline.defs.tasks.assets import task_batch
from adp_pipeline.defs.tasks.sensors import build_task_file_sensor
from adp_pipeline.defs.trajectories.assets import trajectories
from runtimes.settings import Settings


def build_definitions(settings: Settings, *, lake_wide: bool = True) -> dg.Definitions:
    """Definitions configured from ``settings``, built by the caller (the one place that reads the
    environment: the CLI, the code location module); every asset, check, sensor and schedule
    gets them whole through the ``adp`` resource.

    Args:
        lake_wide: with the assets computed over the whole lake (the dbt models, the training
            set), their ``nightly`` job and schedule. `adp run` leaves them out: it runs only
            per-file work, and dagster-dbt alone takes over a second to import.
    """
    # Each asset evaluates its own checks in its step.
    assets: list[dg.AssetsDefinition] = [task_batch, trajectories, task_essences, synthesized_tasks]
    resources: dict[str, object] = {"adp": AdpResource.from_settings(settings)}
    jobs = [process_task_file]
    schedules: list[dg.ScheduleDefinition] = []
    if lake_wide:
        from adp_pipeline.defs.delivery.assets import training_dataset
        from adp_pipeline.defs.jobs import nightly
        from adp_pipeline.defs.quality.assets import build_quality_assets
        from adp_pipeline.defs.schedules import build_nightly_schedule

        quality_models, resources["dbt"] = build_quality_assets(settings)
        assets += [quality_models, training_dataset]
        jobs.append(nightly)
        schedules.append(build_nightly_schedule(settings.nightly_cron, settings.timezone))
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        sensors=[build_task_file_sensor(settings.sensor_interval_seconds)],
        schedules=schedules,
        resources=resources,
    )

"""The resource every adp asset, check and sensor reads its settings and storage through."""

from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import ConfigDict, Field, ValidationError, create_model

from adp_pipeline.storage import Lake
from runtimes.core import ConfigError, PolicyName
from runtimes.settings import Settings


class AdpResource(dg.ConfigurableResource):
    """adp's settings, built once where the definitions are (`adp run`, the code location) and
    carried whole: nothing here reads the environment. The fields below are the settings a person
    may change for one run in the launchpad; the rest (paths, limits, LLM endpoints and keys)
    belong to the deployment and are not shown in the UI."""

    base: dg.ResourceDependency[Settings]
    policy: PolicyName = Field(description="ADP_POLICY: oracle, mock or llm (LLM endpoints are the deployment's).")
    mode: Literal["local", "redis"] = Field(
        description="ADP_MODE: local (run here) or redis (enqueue for `adp worker`s on REDIS_URL)."
    )
    task_timeout: int = Field(description="TASK_TIMEOUT: seconds for tasks whose line gives none.")
    max_concurrent_tasks: int = Field(description="MAX_CONCURRENT_TASKS: tasks (and sandboxes) running at once.")
    success_threshold: float = Field(description="ADP_SUCCESS_THRESHOLD: minimum verified success rate per type.")
    synth_max_generation: int = Field(description="ADP_SYNTH_MAX_GENERATION: the last generation made (0: off).")
    synth_candidates: int = Field(description="ADP_SYNTH_CANDIDATES: candidates made from one batch's essences.")
    synth_daily_tasks: int = Field(description="ADP_SYNTH_DAILY_TASKS: new tasks accepted per UTC day.")
    synth_min_success: float = Field(description="ADP_SYNTH_MIN_SUCCESS: minimum verified success per generation.")

    @classmethod
    def from_settings(cls, settings: Settings) -> "AdpResource":
        return cls(base=settings, **{name: getattr(settings, name) for name in _PER_RUN})

    def settings(self) -> Settings:
        """The settings the resource was built with, and this run's values of the fields above.

        Raises:
            ConfigError: a launchpad value breaks its setting's rule (a timeout of 0, a rate above 1).
        """
        updates = {name: getattr(self, name) for name in _PER_RUN}
        try:  # checked by Settings' own field rules, without building a Settings (that reads the environment)
            _PerRun.model_validate(updates)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"the adp resource's {field} = {first.get('input')!r}: {first['msg']}") from None
        return self.base.model_copy(update=updates)

    @property
    def data_path(self) -> Path:
        return self.base.data_dir.absolute()

    def lake(self) -> Lake:
        return Lake(self.data_path)


_PER_RUN = tuple(name for name in AdpResource.model_fields if name != "base")
# The per-run fields with Settings' own types and constraints: a launchpad value is as checked as an env var.
_PerRun = create_model(
    "_PerRun",
    __config__=ConfigDict(extra="forbid", strict=True, populate_by_name=True),
    **{name: (Settings.model_fields[name].annotation, Settings.model_fields[name]) for name in _PER_RUN},  # type: ignore[call-overload]
)

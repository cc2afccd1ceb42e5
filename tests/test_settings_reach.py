"""Settings enter once: a ``Settings`` object handed to the definitions is what every asset, check,
sensor and the dbt build use, whole, with no environment variable set, and a run leaves the
process's environment as it found it."""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from pydantic import SecretStr, ValidationError

from adp_pipeline.builder import build_definitions
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.materialize import run_nightly
from runtimes.core import ConfigError, TaskSpec
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript
from tests.helpers import Daemon, code_task, materialize_file, query, task_line


def _aliases() -> list[str]:
    names = []
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        names += [str(choice) for choice in getattr(alias, "choices", [])]
    return names


@pytest.fixture
def no_setting_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting's variable unset, but DAGSTER_HOME: a test's instance (``dg.instance_for_test``)
    owns it, and unsetting it under that instance would restore it after the instance is gone."""
    for name in _aliases():
        if name.upper() != "DAGSTER_HOME":
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.upper(), raising=False)
    assert not [name for name in os.environ if name in _aliases() and name != "DAGSTER_HOME"]


def _not_the_default(name: str, default: Any, annotation: Any, tmp_path: Path) -> Any:
    """A valid value of the field that differs from its default."""
    if name.endswith("_dir") or name.endswith("_override") or name in {"task_file", "chromium_path"}:
        return tmp_path / name
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return next(value for value in args if value != default)
    if args and typing.get_origin(args[0]) is typing.Literal:
        return next(value for value in typing.get_args(args[0]) if value != default)
    if annotation is bool:
        return not default
    if annotation is int or int in args:
        return (default or 64) + 1 if name != "metrics_port" else 9999
    if annotation is float or float in args:
        return round(((default or 0.5) / 2), 4)
    if SecretStr in args:
        return SecretStr(f"secret-{name}")
    return f"value-of-{name}"


def test_the_resource_hands_every_asset_the_settings_it_was_built_with_and_reads_no_environment(
    tmp_path: Path, no_setting_in_the_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        name: _not_the_default(name, field.default, field.annotation, tmp_path)
        for name, field in Settings.model_fields.items()
    }
    values.update(nightly_cron="0 3 * * *", timezone="Europe/Berlin", dbt_project_dir=None, redis_url="redis://x:1/0")
    values.update(view_url="http://viewer.example:8080")  # validated: an http(s) base
    settings = Settings(**values)
    differing = [
        name for name in Settings.model_fields if getattr(settings, name) == Settings.model_fields[name].default
    ]
    assert differing == ["dbt_project_dir"], "every other field is set to a value of its own"

    defs = build_definitions(settings)
    resource = defs.resources["adp"]
    assert isinstance(resource, AdpResource)
    assert resource.settings() == settings
    # Once built, the environment and a dotenv file are never read again: every variable set to a
    # value Settings would refuse changes nothing.
    dotenv = tmp_path / "bad.env"
    dotenv.write_text("".join(f"{name.upper()}=not-a-valid-value\n" for name in _aliases()))
    for name in _aliases():
        monkeypatch.setenv(name.upper(), "not-a-valid-value")
    monkeypatch.setenv("ADP_ENV_FILE", str(dotenv))
    with pytest.raises(ValidationError):
        Settings()  # what the edge would say
    assert resource.settings() == settings
    # A launchpad value replaces its field only, and is checked by the setting's own rule.
    run = resource.model_copy(update={"synth_candidates": 3})
    assert run.settings() == settings.model_copy(update={"synth_candidates": 3})
    with pytest.raises(ConfigError, match="max_concurrent_tasks = 0: Input should be greater than or equal to 1"):
        resource.model_copy(update={"max_concurrent_tasks": 0}).settings()
    schedule = defs.resolve_schedule_def("nightly_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 3 * * *", "Europe/Berlin")
    sensor = defs.resolve_sensor_def("task_file_sensor")
    assert sensor.minimum_interval_seconds == settings.sensor_interval_seconds


def test_non_default_settings_reach_their_use_in_a_run_the_sensor_and_the_nightly_build(
    tmp_path: Path, instance: dg.DagsterInstance, no_setting_in_the_environment: None
) -> None:
    lines = [
        code_task("right", "print(6 * 7)", "42"),  # no timeout: TASK_TIMEOUT's
        code_task("wrong", "print(1)", "2"),
        code_task("long", "x" * 5000, "1"),  # over ADP_MAX_TASK_LINE_BYTES
        task_line("big", constraints={"sandbox": {"memory_mb": 1024}}),  # over ADP_SANDBOX_MAX_MEMORY_MB
        code_task("unread", "print(1)", "1"),  # past ADP_MAX_TASK_LINES
    ]
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    tasks = [TaskSpec.model_validate_json(line) for line in lines[:2]]
    before = dict(os.environ)
    with MockLLMServer(MockScript.from_tasks(tasks)) as server:
        settings = Settings(
            data_dir=tmp_path / "lake",
            tasks_dir=tmp_path / "drop",
            output_dir_override=tmp_path / "out",
            tasks_settle_seconds=0,
            max_task_line_bytes=4096,
            max_task_lines=4,
            task_timeout=17,
            sandbox_max_memory_mb=512,
            commit_every_tasks=1,
            policy="llm",
            llm_base_url=server.base_url,
            llm_model="reach-model",
            llm_backoff_base=0.001,
            enable_cache=False,
            essence_extractor="llm",
            success_threshold=0.4,
            synth_max_generation=0,
            export_format="trl",
        )
        result = materialize_file(path, settings, instance)
        asked = server.stats.requests
    assert result.success
    assert dict(os.environ) == before, "a run changes nothing in the process's environment"

    # Ingest: the line, line-count and memory limits, the default timeout.
    assert query(settings, "SELECT task_id, timeout FROM tasks ORDER BY 1") == [("right", 17), ("wrong", 17)]
    reasons = [str(reason) for (reason,) in query(settings, "SELECT reason FROM task_rejects ORDER BY line_number")]
    assert len(reasons) == 3
    assert "4096" in reasons[0] and "512 MB" in reasons[1] and "ADP_MAX_TASK_LINES" in reasons[2]
    # The run: the model named in code, no cache, trajectories where ADP_OUTPUT_DIR says.
    assert query(settings, "SELECT DISTINCT policy, model FROM trajectories") == [("llm", "reach-model")]
    assert not (settings.data_dir / "llm_cache").exists()
    written = sorted(p.name.split("-")[0] for p in (tmp_path / "out" / "trajectories").glob("*.json"))
    assert written == ["right", "wrong"]
    # A commit per task (ADP_COMMIT_EVERY_TASKS=1): each chunk's progress is observed.
    observations = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    done = [e.asset_observation_data.asset_observation.metadata["done"].value for e in observations]
    assert done == [0, 1, 2, 2], done
    # The checks' threshold: 1 of 2 verified passes 40% (and would fail the default 80%).
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["success_rate_per_type"] is True
    # Essences asked the model (the agent alone makes 2 + 2 calls), synthesis is off.
    assert asked > 4
    (essences,) = result.asset_materializations_for_node("task_essences")
    # Each essence asked the model, which has no essence script: each fell back to structural.
    assert essences.metadata["model_failures"].value == essences.metadata["essences"].value > 0
    (synthesized,) = result.asset_materializations_for_node("synthesized_tasks")
    assert "ADP_SYNTH_MAX_GENERATION=0" in json.dumps(synthesized.metadata["stopped"].value)

    # The sensor watches TASKS_DIR as given in code.
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "more.jsonl").write_text(task_line("more") + "\n")
    (request,) = Daemon(settings, instance).tick()
    assert request.partition_key.startswith("more-")

    # The nightly build: dbt reads the data dir and the threshold as given (its own test passes at
    # 40%), and the training set is in ADP_EXPORT_FORMAT.
    nightly = run_nightly(settings)
    assert nightly.success
    dbt_checks = {e.check_name: e.passed for e in nightly.get_asset_check_evaluations()}
    assert dbt_checks["success_rate_above_threshold"] is True
    assert (settings.data_dir / "quality.duckdb").is_file()
    (training,) = nightly.asset_materializations_for_node("training_dataset")
    assert training.metadata["format"].value == "trl"
    assert dict(os.environ) == before

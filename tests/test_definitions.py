from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg

from adp_pipeline.builder import build_definitions
from runtimes.settings import Settings
from tests.helpers import REPO, clean_env


def test_definitions_wire_every_asset_check_job_and_sensor(settings: Settings) -> None:
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    per_file = {"task_batch", "trajectories", "task_essences", "synthesized_tasks"}
    marts = {"success_by_day", "success_by_type", "failures_by_error_type", "tool_usage", "step_count_distribution"}
    marts |= {"duration_distribution", "tokens_per_task", "task_intake_by_batch", "synthesis_by_generation"}
    marts |= {"essences_by_type"}
    staging = {"stg_tasks", "stg_task_rejects", "stg_trajectories", "stg_steps"}
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == per_file | marts | staging | {"training_dataset"}
    checks = {key.name for key in graph.asset_check_keys}
    assert checks >= {
        "every_line_accounted_for",
        "task_ids_unique",
        "one_trajectory_per_task",
        "success_rate_per_type",
        "step_budget_respected",
        "synthesized_success_per_generation",
        "accepted_near_duplicate_rate",
        "unique_stg_tasks_task_id",
        "success_rate_above_threshold",
        "relationships_stg_steps_task_id__task_id__ref_stg_trajectories_",
    }
    selected = defs.resolve_job_def("process_task_file").asset_layer.selected_asset_keys
    assert {key.to_user_string() for key in selected} == per_file
    nightly = defs.resolve_job_def("nightly").asset_layer.selected_asset_keys
    assert {key.to_user_string() for key in nightly} == marts | staging | {"training_dataset"}
    assert defs.resolve_schedule_def("nightly_schedule").job_name == "nightly"
    assert graph.get(dg.AssetKey("trajectories")).parent_keys == {dg.AssetKey("task_batch")}
    assert graph.get(dg.AssetKey("task_essences")).parent_keys == {dg.AssetKey("trajectories")}
    assert graph.get(dg.AssetKey("synthesized_tasks")).parent_keys == {dg.AssetKey("task_essences")}
    assert defs.resolve_job_def("process_task_file").partitions_def is not None
    assert defs.resolve_sensor_def("task_file_sensor").job_name == "process_task_file"
    assert defs.resources["adp"].data_path == settings.data_dir.absolute()


def test_dagster_definitions_validate_accepts_the_workspace(tmp_path: Path) -> None:
    env = clean_env(DAGSTER_HOME=str(tmp_path), ADP_DATA_DIR=str(tmp_path / "data"))
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    done = subprocess.run(
        [Path(sys.executable).with_name("dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


def test_only_adp_pipeline_imports_dagster() -> None:
    for package in ("runtimes", "synthesis"):
        for path in (REPO / package).rglob("*.py"):
            lines = path.read_text().splitlines()
            assert not [line for line in lines if line.startswith(("import dagster", "from dagster"))], path


def test_runtimes_import_neither_synthesis_nor_adp_pipeline() -> None:
    for path in (REPO / "runtimes").rglob("*.py"):
        lines = path.read_text().splitlines()
        above = ("import synthesis", "from synthesis", "import adp_pipeline", "from adp_pipeline")
        assert not [line for line in lines if line.startswith(above)], path

"""The dbt quality project inside Dagster: models downstream of the lake's assets, tests as asset
checks in a real materialisation, marts queryable with `adp query`, and the nightly schedule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from click.testing import CliRunner

from adp_pipeline.builder import build_definitions
from adp_pipeline.cli import main
from adp_pipeline.defs.jobs import nightly
from adp_pipeline.defs.schedules import BATCHES_TAG
from adp_pipeline.materialize import failure_reason
from adp_pipeline.storage import Lake, ensure_catalog
from runtimes.settings import Settings
from tests.helpers import code_task, materialize_file, task_line

CLAIMED_LINEAGE = {
    "parent_task_ids": ["nowhere"],
    "mutation": "breadth",
    "generation": 3,
    "created_at": "2026-01-01T00:00:00Z",
}


def run_nightly(settings: Settings, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def(nightly.name)
    return job.execute_in_process(instance=instance, raise_on_error=False)


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_a_duplicated_task_id_fails_its_dbt_check_and_the_marts_answer_adp_query(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    path = tmp_path / "a.jsonl"
    lines = [
        code_task("a", "print(2)", "2"),
        task_line("b", "web"),
        code_task("c", "print(3)", "3", tests="assert False"),
        "not json",
        # A person's lineage is a claim: its generation counts nowhere (only synthesis writes them).
        code_task("d", "print(4)", "4", lineage=CLAIMED_LINEAGE),
    ]
    path.write_text("\n".join(lines) + "\n")
    assert materialize_file(path, settings, instance).success

    clean = run_nightly(settings, instance)
    assert clean.success
    checks = checks_of(clean)
    assert (
        checks["unique_stg_tasks_task_id"] and checks["relationships_stg_steps_task_id__task_id__ref_stg_trajectories_"]
    )
    assert not checks["success_rate_above_threshold"]  # 1 of 2 code tasks verified, web unverified: a warning
    (export,) = clean.asset_materializations_for_node("training_dataset")
    assert export.metadata["records"].value == 2  # only "a" and "d" are verified and successful

    # Two batches that raced each other and both accepted task "a".
    lake = Lake(settings.data_dir)
    with lake.connect() as connection:
        rows = connection.sql("SELECT * EXCLUDE (batch) FROM tasks WHERE task_id = 'a'").to_arrow_table()
    lake.write_partition("tasks", "raced-00000000", rows.to_pylist())
    ensure_catalog(settings.data_dir)

    dirty = run_nightly(settings, instance)
    # dbt's tests are blocking checks: the dbt step fails, the export beside it still runs.
    assert not dirty.success
    assert "blocking asset check failed" in failure_reason(dirty)
    assert dirty.asset_materializations_for_node("training_dataset")
    evaluation = next(e for e in dirty.get_asset_check_evaluations() if e.check_name == "unique_stg_tasks_task_id")
    assert not evaluation.passed and evaluation.asset_key == dg.AssetKey("stg_tasks")
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert checks_of(dirty)["unique_stg_trajectories_task_id"]  # the trajectories themselves are fine

    # The marts, through the same read-only catalog as the lake's views.
    env = {"ADP_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(
        main, ["query", "select task_type, trajectories, verified_successes from success_by_type", "--format", "json"],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"task_type": "code", "trajectories": 3, "verified_successes": 2},
        {"task_type": "web", "trajectories": 1, "verified_successes": 0},
    ]
    generations = CliRunner().invoke(
        main, ["query", "select distinct generation from success_by_day", "--format", "json"], env=env
    )
    assert generations.exit_code == 0, generations.output
    assert json.loads(generations.stdout) == [{"generation": 0}]  # "d" claimed generation 3


def test_dbt_models_sit_downstream_of_the_lake_assets(settings: Settings) -> None:
    graph = build_definitions(settings).resolve_asset_graph()
    assert graph.get(dg.AssetKey("stg_trajectories")).parent_keys == {
        dg.AssetKey("trajectories"),
        dg.AssetKey("synthesized_tasks"),  # a generation counts only for a task synthesis wrote
    }
    assert graph.get(dg.AssetKey("stg_tasks")).parent_keys == {dg.AssetKey("task_batch")}
    assert graph.get(dg.AssetKey("synthesis_by_generation")).parent_keys == {dg.AssetKey("synthesized_tasks")}
    assert graph.get(dg.AssetKey("essences_by_type")).parent_keys == {dg.AssetKey("task_essences")}
    assert graph.get(dg.AssetKey("success_by_day")).parent_keys == {dg.AssetKey("stg_trajectories")}
    assert dg.AssetCheckKey(dg.AssetKey("stg_tasks"), "unique_stg_tasks_task_id") in graph.asset_check_keys


def test_the_nightly_schedule_runs_on_days_with_new_batches_only(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("nightly_schedule")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"

    def tick(day: datetime) -> dg.RunRequest | dg.SkipReason:
        # Entered and left, so that the context leaves nothing of the instance behind.
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=day, resources=defs.resources
        ) as context:
            data = schedule.evaluate_tick(context)
        (request,) = data.run_requests or [None]
        return request if request is not None else dg.SkipReason(data.skip_message)

    first = tmp_path / "first.jsonl"
    first.write_text(code_task("x", "print(1)", "1") + "\n")
    assert materialize_file(first, settings, instance).success
    monday = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0) + timedelta(days=1)
    request = tick(monday)
    assert isinstance(request, dg.RunRequest) and request.tags[BATCHES_TAG].startswith("first-")
    assert run_nightly(settings, instance).success

    quiet = tick(monday + timedelta(days=1))  # nothing arrived since that run
    assert isinstance(quiet, dg.SkipReason) and "no batch has new trajectories" in (quiet.skip_message or "")

    second = tmp_path / "second.jsonl"
    second.write_text(code_task("y", "print(2)", "2") + "\n")
    assert materialize_file(second, settings, instance).success
    request = tick(monday + timedelta(days=2))
    assert isinstance(request, dg.RunRequest) and request.tags[BATCHES_TAG].startswith("second-")
    assert "," not in request.tags[BATCHES_TAG]  # only the new batch

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb

from adp_pipeline.builder import build_definitions
from adp_pipeline.materialize import failure_reason
from adp_pipeline.storage import Lake, open_catalog
from runtimes.settings import Settings
from tests.helpers import MIXED, check_results, lake_task_row, materialize_file, query, task_line, write_mixed


def test_mixed_file_lands_every_line_in_tasks_or_task_rejects(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    result = materialize_file(write_mixed(tmp_path / "mixed.jsonl"), settings, instance)
    assert result.success
    checks = check_results(result)
    assert (checks["every_line_accounted_for"], checks["task_ids_unique"]) == (True, True)

    accepted = query(settings, "SELECT task_id, line_number FROM tasks ORDER BY line_number")
    assert accepted == [
        ("good_code", 1),
        ("good_web", 8),
        ("研究框架对比", 13),
        ("good_crlf", 18),
        ("free_constraint", 22),
        ("good_last", 24),
    ]
    kept = query(settings, "SELECT constraints FROM tasks WHERE task_id = 'free_constraint'")[0][0]
    assert json.loads(kept) == {"verfy": {}, "language": "python"}  # unknown keys are kept
    rejects = query(settings, "SELECT line_number, field, reason FROM task_rejects ORDER BY line_number")
    expected = {n: outcome for n, (_, outcome) in enumerate(MIXED, 1) if outcome is not None}
    assert [line for line, _, _ in rejects] == sorted(expected)
    for line, field, reason in rejects:
        assert field == expected[line][0]
        assert expected[line][1] in reason
    non_blank = sum(1 for line, _ in MIXED if line.strip())
    assert len(accepted) + len(rejects) == non_blank

    materialization = result.asset_materializations_for_node("task_batch")[0]
    assert materialization.metadata["accepted"].value == 6
    assert materialization.metadata["warnings"].value == 2
    assert "constraints.language" in materialization.metadata["warning_lines"].value
    assert materialization.metadata["rejected"].value == len(rejects)
    assert "over the limit" in materialization.metadata["rejects"].value


def test_columns_keep_their_types_and_the_batch_comes_from_the_partition(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    path = tmp_path / "typed.jsonl"
    path.write_text(task_line("t1", "web", timeout=60, priority=3, constraints={"start_url": "file:///x"}) + "\n")
    result = materialize_file(path, settings, instance)
    (row,) = query(
        settings,
        "SELECT batch, task_type, expected_tools, max_steps, timeout, priority, constraints->>'start_url', "
        "schema_version, source_file FROM tasks",
    )
    assert row == (
        result.dagster_run.tags["dagster/partition"],
        "web",
        ["browser"],
        5,
        60,
        3,
        "file:///x",
        1,
        str(path),
    )
    assert row[0].startswith("typed-")


def test_a_task_id_from_an_earlier_batch_is_a_duplicate_and_rerunning_a_batch_is_not(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    first = tmp_path / "first.jsonl"
    first.write_text(task_line("shared") + "\n" + task_line("only_first") + "\n")
    second = tmp_path / "second.jsonl"
    second.write_text(task_line("shared", description="again") + "\n" + task_line("only_second") + "\n")

    assert materialize_file(first, settings, instance).success
    again = materialize_file(first, settings, instance)  # same content: same partition, replaced
    assert again.success and check_results(again)["task_ids_unique"]
    assert materialize_file(second, settings, instance).success

    tasks = query(settings, "SELECT task_id, split_part(batch, '-', 1) FROM tasks ORDER BY task_id")
    assert tasks == [("only_first", "first"), ("only_second", "second"), ("shared", "first")]
    (reject,) = query(settings, "SELECT line_number, field, reason FROM task_rejects")
    assert reject[:2] == (1, "task_id")
    assert "already accepted in batch first-" in reject[2]


def test_task_ids_unique_check_fails_when_two_batches_hold_one_id(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    # Two batches ingested at the same moment can both accept an id; the check must notice.
    row = lake_task_row("twice")
    lake = Lake(settings.data_dir)
    lake.write_partition("tasks", "raced-00000000", [row])
    lake.write_partition("tasks", "raced-11111111", [row])
    path = tmp_path / "a.jsonl"
    path.write_text(task_line("other") + "\n")

    result = materialize_file(path, settings, instance)

    checks = check_results(result)
    assert (checks["every_line_accounted_for"], checks["task_ids_unique"]) == (True, False)
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "task_ids_unique"]
    assert evaluation.metadata["duplicates"].value == {"twice": ["raced-00000000", "raced-11111111"]}


def test_a_partition_without_a_registered_file_fails_with_a_clear_error(
    settings: Settings, instance: dg.DagsterInstance
) -> None:
    instance.add_dynamic_partitions("task_files", ["ghost-deadbeef"])
    job = build_definitions(settings).resolve_job_def("process_task_file")
    result = job.execute_in_process(partition_key="ghost-deadbeef", instance=instance, raise_on_error=False)
    assert not result.success
    reason = failure_reason(result)
    assert reason.startswith("task_batch: runtimes.core.TaskFileError: partition 'ghost-deadbeef' has no registered")
    assert "\n" not in reason


def test_the_catalog_is_read_only_for_readers(tmp_path: Path, settings: Settings, instance: dg.DagsterInstance) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(task_line("a") + "\n")
    materialize_file(path, settings, instance)
    with open_catalog(settings.data_dir) as connection:
        try:
            connection.execute("CREATE TABLE oops AS SELECT 1")
        except duckdb.Error as error:
            assert "read-only" in str(error).lower()
        else:
            raise AssertionError("a reader could write to the catalog")

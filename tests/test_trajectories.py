"""The trajectories asset: one trajectory per task in the lake and on disk, checks, cache, retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from adp_pipeline.storage import open_catalog
from adp_pipeline.storage.names import task_file_stem
from runtimes.core import TaskSpec
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript
from tests.helpers import check_results, code_task, materialize_file, query, task_line


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def batch(tmp_path: Path, good: int, wrong: int) -> Path:
    lines = [code_task(f"good_{i}", f"print({i} * 2)", str(i * 2)) for i in range(good)]
    lines += [
        task_line(
            f"wrong_{i}",
            constraints={
                "reference_tool_calls": [
                    {"name": "python_executor", "arguments": {"code": "print(1)"}},
                    {"name": "complete_task", "arguments": {"answer": "1"}},
                ],
                "verify": {"expected_answer": "2"},
            },
        )
        for i in range(wrong)
    ]
    return write(tmp_path / "batch.jsonl", *lines)


def test_every_task_gets_one_trajectory_in_the_lake_and_as_json(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    path = write(
        tmp_path / "mixed.jsonl",
        code_task("adds", "print(1 + 1)", "2"),
        code_task("crashes", "1/0", "x", tests="pass"),  # the tests need code that ran
        task_line("web_task", "web"),
        task_line("no_reference"),
    )
    result = materialize_file(path, settings, instance)
    assert result.success
    checks = check_results(result)
    assert checks["one_trajectory_per_task"] and checks["step_budget_respected"]
    assert checks["success_rate_per_type"] is False  # 1 of 3 code tasks succeeded

    rows = query(settings, "SELECT task_id, success, error_type, policy, n_steps FROM trajectories ORDER BY task_id")
    assert rows == [
        ("adds", True, None, "oracle", 2),
        ("crashes", False, "runtime_error", "oracle", 2),
        ("no_reference", False, "system_error", "oracle", 0),  # the oracle has nothing to replay
        ("web_task", False, "system_error", "oracle", 0),
    ]
    steps = query(settings, "SELECT step_id, tool, success, error_type FROM steps WHERE task_id = 'crashes' ORDER BY 1")
    assert steps == [(1, "python_executor", False, "runtime_error"), (2, "complete_task", True, None)]

    record = json.loads((settings.output_dir / "trajectories" / f"{task_file_stem('adds')}.json").read_text())
    seed_fields = {"task_id", "runtime_id", "success", "steps", "final_result", "error_type", "error_message"}
    assert seed_fields | {"total_duration", "metadata", "created_at", "schema_version", "messages", "tools"} <= set(
        record
    )
    assert set(record["steps"][0]) >= {
        "step_id",
        "action_type",
        "action_params",
        "observation",
        "success",
        "error_type",
        "error_message",
        "timestamp",
        "duration",
    }
    assert record["steps"][0]["action_params"] == {"code": "print(1 + 1)"}
    assert sorted(p.name for p in (settings.output_dir / "trajectories").iterdir()) == sorted(
        f"{task_file_stem(task_id)}.json" for task_id in ("adds", "crashes", "no_reference", "web_task")
    )


@pytest.mark.parametrize(("good", "wrong", "passes"), [(4, 1, True), (3, 2, False)])
def test_the_success_rate_check_fails_under_the_threshold(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance, good: int, wrong: int, passes: bool
) -> None:
    result = materialize_file(batch(tmp_path, good, wrong), settings, instance)
    assert result.success  # a low success rate is reported, not a failed run
    assert check_results(result)["success_rate_per_type"] is passes
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "success_rate_per_type"]
    assert f"| code | {good + wrong} | {good} |" in evaluation.metadata["rates"].value
    # The UI's charts (SVG in markdown, with the numbers as a table beside them).
    (materialization,) = result.asset_materializations_for_node("trajectories")
    over_batches = materialization.metadata["success_over_batches"].value
    assert "](data:image/png;base64," in over_batches
    assert f"| {good / (good + wrong):.0%} |" in over_batches
    assert f"| 2 steps | {good + wrong} |" in materialization.metadata["step_counts"].value


@pytest.fixture
def mock_server() -> Iterator[MockLLMServer]:
    with MockLLMServer(MockScript()) as server:
        yield server


def scripted(server: MockLLMServer, path: Path) -> None:
    server.script = MockScript.from_tasks(TaskSpec.model_validate_json(line) for line in path.read_text().splitlines())


def test_rerunning_a_batch_answers_every_llm_call_from_the_cache(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance, mock_server: MockLLMServer
) -> None:
    settings = settings.model_copy(update={"policy": "mock", "mock_llm_url": mock_server.base_url})
    path = batch(tmp_path, good=6, wrong=0)
    scripted(mock_server, path)

    assert materialize_file(path, settings, instance).success
    first = mock_server.stats.requests
    assert first == 12  # two turns per task
    assert materialize_file(path, settings, instance).success  # the batch is in the lake: nothing runs again
    assert mock_server.stats.requests == first
    assert materialize_file(path, settings, instance, fresh=True).success  # every task again, from the cache
    assert mock_server.stats.requests == first  # not one more call

    assert query(settings, "SELECT count(*), sum(llm_calls), sum(llm_cached_calls) FROM trajectories") == [(6, 0, 12)]
    assert query(settings, "SELECT count(*) FILTER (WHERE success) FROM trajectories") == [(6,)]


def test_with_30_percent_of_llm_calls_failing_every_task_still_gets_one_trajectory_and_retries_are_recorded(
    tmp_path: Path,
    settings: Settings,
    instance: dg.DagsterInstance,
    mock_server: MockLLMServer,
) -> None:
    settings = settings.model_copy(
        update={"policy": "mock", "mock_llm_url": mock_server.base_url, "enable_cache": False}
    )
    path = batch(tmp_path, good=20, wrong=0)
    scripted(mock_server, path)
    mock_server.error_rate = 0.3

    result = materialize_file(path, settings, instance)

    assert result.success and check_results(result)["one_trajectory_per_task"]
    assert mock_server.stats.injected_errors > 0
    (count, retries) = query(settings, "SELECT count(DISTINCT task_id), sum(llm_retries) FROM trajectories")[0]
    assert count == 20
    assert retries == mock_server.stats.injected_errors  # each injected failure is one recorded retry
    statuses = set()
    for record in (settings.output_dir / "trajectories").glob("*.json"):
        for call in json.loads(record.read_text())["llm_calls"]:
            statuses |= {attempt["status"] for attempt in call["attempts"]}
    assert {429, 500, 200} <= statuses
    with open_catalog(settings.data_dir) as connection:
        failed = connection.execute("SELECT count(*) FROM trajectories WHERE NOT success").fetchone()
    # A task fails only if one call failed 5 times in a row; its failure is classified, not lost.
    assert failed == (0,) or query(settings, "SELECT DISTINCT error_type FROM trajectories WHERE NOT success") == [
        ("llm_error",)
    ]


def test_any_valid_task_id_is_stored_and_a_failed_write_leaves_the_batch_untouched(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    # 200 CJK characters are 600 bytes of UTF-8, over a file name's 255; these ids are all valid.
    ids = ["计" * 200, "a" * 200, 'x:y*z?<>|"', "ü" * 150, "-leading", "  inner  space"]
    ids = [task_id.strip() for task_id in ids]
    path = write(tmp_path / "ids.jsonl", *(code_task(task_id, "print(2)", "2") for task_id in ids))
    result = materialize_file(path, settings, instance)
    assert result.success
    assert query(settings, "SELECT count(*) FILTER (WHERE success) FROM trajectories")[0][0] == len(ids)
    files = sorted((settings.output_dir / "trajectories").iterdir())
    assert len(files) == len(ids) and all(len(f.name.encode()) <= 80 for f in files)
    assert {json.loads(f.read_text())["task_id"] for f in files} == set(ids)
    assert (settings.output_dir / "trajectories" / f"{task_file_stem(ids[0])}.json").exists()

    # Where the per-task files cannot be written, the run fails and the lake holds no part of it.
    blocked = settings.model_copy(update={"output_dir_override": tmp_path / "not_a_dir"})
    (tmp_path / "not_a_dir").mkdir()
    (tmp_path / "not_a_dir" / "trajectories").write_text("a file where the folder should be")
    other = write(tmp_path / "other.jsonl", code_task("other", "print(3)", "3"))
    assert not materialize_file(other, blocked, instance).success
    assert query(settings, "SELECT count(*) FROM trajectories WHERE task_id = 'other'")[0][0] == 0
    assert query(settings, "SELECT count(*) FROM steps WHERE task_id = 'other'")[0][0] == 0


LINEAGE = {
    "parent_task_ids": ["adds"],
    "essence_ids": ["e1"],
    "mutation": "parameter",
    "generation": 1,
    "model": "mock",
    "prompt_hash": "abc",
    "created_at": "2026-11-23T10:00:00+00:00",
}


def test_lineage_is_carried_from_the_task_line_into_its_trajectory_and_queryable(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    seed = write(tmp_path / "seed.jsonl", code_task("adds", "print(1 + 1)", "2"))
    assert materialize_file(seed, settings, instance).success
    child = json.loads(code_task("adds_more", "print(2 + 2)", "4"))
    bad = [
        {**child, "task_id": "bad_generation", "lineage": {**LINEAGE, "generation": 0}},
        {**child, "task_id": "bad_mutation", "lineage": {**LINEAGE, "mutation": "magic"}},
        {**child, "task_id": "no_parents", "lineage": {**LINEAGE, "parent_task_ids": []}},
        {**child, "task_id": "extra_key", "lineage": {**LINEAGE, "why": "because"}},
    ]
    path = write(
        tmp_path / "synth.jsonl", json.dumps({**child, "lineage": LINEAGE}), *(json.dumps(line) for line in bad)
    )
    assert materialize_file(path, settings, instance).success
    rejects = query(settings, "SELECT task_id, field FROM task_rejects ORDER BY line_number")
    assert rejects == [
        ("bad_generation", "lineage.generation"),
        ("bad_mutation", "lineage.mutation"),
        ("no_parents", "lineage.parent_task_ids"),
        ("extra_key", "lineage.why"),
    ]
    assert query(settings, "SELECT task_id, generation FROM tasks ORDER BY generation, task_id") == [
        ("adds", 0),
        ("adds_more", 1),
    ]
    # A generation-1 task's parents resolve to the tasks they name, through its trajectory.
    parents = query(
        settings,
        "SELECT r.task_id, r.generation, p.task_id, p.generation FROM trajectories r "
        "JOIN tasks p ON p.task_id IN (SELECT unnest(CAST(r.lineage->'parent_task_ids' AS VARCHAR[]))) "
        "WHERE r.generation = 1",
    )
    assert parents == [("adds_more", 1, "adds", 0)]
    record = json.loads((settings.output_dir / "trajectories" / f"{task_file_stem('adds_more')}.json").read_text())
    assert record["lineage"]["mutation"] == "parameter" and record["lineage"]["generation"] == 1

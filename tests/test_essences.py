"""Task essences: the structural extractor, and the task_essences asset over a real batch."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from runtimes.protocol import ActionType, Step, TaskSpec, VerifierResult
from runtimes.settings import Settings
from synthesis.essence import extract_structural
from tests.conftest import code_task, materialize_file, task_line
from tests.test_task_batch import query


def step(step_id: int, tool: str, success: bool = True, **params: object) -> Step:
    kind = {"browser": ActionType.BROWSER_ACTION, "python_executor": ActionType.CODE_EXECUTION}
    return Step(
        step_id=step_id,
        action_type=kind.get(tool, ActionType.TOOL_CALL),
        tool=tool,
        action_params=params,
        observation="",
        success=success,
    )


def test_the_structural_essence_reads_the_recorded_tool_calls() -> None:
    task = TaskSpec.model_validate_json(task_line("shop", "reasoning"))
    steps = [
        step(1, "browser", action="goto", url="http://adp.local/prices.html"),
        step(2, "browser", action="extract_text", selector="table"),
        step(3, "python_executor", success=False, code="1/0"),
        step(4, "python_executor", code="print(sum([1, 2]))\nprint('done')"),
        step(5, "complete_task", answer="3"),
    ]
    verifier = VerifierResult(passed=True, checks={"expected_answer": True, "page_contains": True})
    essence = extract_structural(task, "batch-1", steps, verifier)
    assert essence.tools == ["browser", "python_executor", "complete_task"]
    assert essence.success_pattern.execution_pattern == "browser*2 → python_executor → complete_task"
    assert essence.success_pattern.key_steps[0] == 'browser.goto {"url": "http://adp.local/prices.html"}'
    assert essence.success_pattern.key_steps[2] == "python_executor: 2 lines of Python"
    assert essence.success_pattern.success_indicators == ["expected_answer", "page_contains"]
    assert (essence.verifier_kind, essence.n_steps, essence.complexity) == ("expected_answer+page_contains", 5, 3)
    assert (essence.generation, essence.extractor, essence.query) == (0, "structural", task.description)
    assert extract_structural(task, "batch-1", steps, verifier).essence_id == essence.essence_id  # stable
    assert extract_structural(task, "batch-2", steps, verifier).essence_id != essence.essence_id
    with pytest.raises(ValueError, match="verified"):
        extract_structural(task, "batch-1", steps, VerifierResult(passed=False))


def test_the_asset_keeps_one_essence_per_verified_trajectory(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    unverified = task_line(
        "no_verifier", constraints={"reference_tool_calls": [{"name": "complete_task", "arguments": {"answer": "x"}}]}
    )
    lines = [
        code_task("double", "print(2 * 21)", "42"),
        code_task("square", "x = 7\nprint(x * x)", "49", tests="assert True"),
        task_line(  # verification fails: no essence
            "wrong",
            constraints={
                "reference_tool_calls": [{"name": "complete_task", "arguments": {"answer": "1"}}],
                "verify": {"expected_answer": "2"},
            },
        ),
        unverified,  # succeeded, but nothing verified it: no essence
    ]
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    result = materialize_file(path, settings, instance)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("task_essences")
    assert materialization.metadata["essences"].value == 2
    rows = query(
        settings,
        "SELECT task_id, generation, complexity, tools, verifier_kind, success_pattern FROM essences ORDER BY 1",
    )
    assert [row[:5] for row in rows] == [
        ("double", 0, 2, ["python_executor", "complete_task"], "expected_answer"),
        ("square", 0, 2, ["python_executor", "complete_task"], "expected_answer+python_tests"),
    ]
    assert json.loads(rows[0][5])["execution_pattern"] == "python_executor → complete_task"
    assert materialize_file(path, settings, instance).success  # re-running the batch replaces its essences
    assert query(settings, "SELECT count(*) FROM essences")[0][0] == 2

"""Task essences: the structural extractor, and the task_essences asset over a real batch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import dagster as dg
import pytest

from runtimes.core import EssenceExtractionError, TaskSpec, VerifierResult
from runtimes.llm import FileResponseCache, LLMClient, LLMEndpoint
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript, ScriptedTurn, ScriptRule
from synthesis.essence import Essence, extract_structural, extract_with_model
from tests.helpers import code_task, materialize_file, query, step, task_line


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


def _model_answer(**overrides: object) -> str:
    answer = {
        "domain": "math_algorithms",
        "query": "Compute an arithmetic expression with Python and answer with its value.",
        "complexity": 1,
        "success_pattern": {
            "key_steps": ["run the expression", "answer"],
            "execution_pattern": "compute then answer",
            "success_indicators": ["the expected value"],
        },
    }
    return json.dumps({**answer, **overrides})


def test_the_model_extractor_validates_retries_on_invalid_json_and_is_cached(tmp_path: Path) -> None:
    task = TaskSpec.model_validate_json(code_task("double", "print(2 * 21)", "42"))
    steps = [step(1, "python_executor", code="print(2 * 21)"), step(2, "complete_task", answer="42")]
    verifier = VerifierResult(passed=True, checks={"expected_answer": True})
    script = MockScript(
        rules=[
            ScriptRule(
                match="id double",
                turns=[
                    ScriptedTurn(content="Sure! Here is the essence you asked for."),  # not JSON
                    ScriptedTurn(content=_model_answer(complexity=9)),  # out of range
                    ScriptedTurn(content="```json\n" + _model_answer() + "\n```"),
                ],
            ),
            ScriptRule(match="id never", turns=[ScriptedTurn(content="{}")] * 3),
        ]
    )
    with MockLLMServer(script) as server:
        endpoint = LLMEndpoint(provider="mock", base_url=server.base_url, model="mock-model", api_key="x")

        async def extract(the_task: TaskSpec) -> Essence:
            client = LLMClient(endpoint, cache=FileResponseCache(tmp_path / "cache", ttl=3600))
            try:
                return await extract_with_model(client, the_task, "b1", steps, verifier)
            finally:
                await client.aclose()

        essence = asyncio.run(extract(task))
        assert server.stats.completions == 3
        assert (essence.domain, essence.complexity, essence.extractor) == ("math_algorithms", 1, "mock-model")
        assert essence.query.startswith("Compute an arithmetic expression")
        assert essence.tools == ["python_executor", "complete_task"]  # the record's facts, not the model's
        assert essence.prompt_hash and essence.essence_id != extract_structural(task, "b1", steps, verifier).essence_id
        assert asyncio.run(extract(task)) == essence and server.stats.completions == 3  # all from the cache

        never = TaskSpec.model_validate_json(code_task("never", "print(1)", "1"))
        with pytest.raises(EssenceExtractionError, match="no valid essence: no valid answer in 3"):
            asyncio.run(extract(never))


def test_the_asset_uses_the_configured_model_and_keeps_structural_essences_where_it_fails(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    script = MockScript(
        rules=[
            ScriptRule(match="id double", turns=[ScriptedTurn(content=_model_answer())]),
            ScriptRule(match="id square", turns=[ScriptedTurn(content="no idea")] * 3),
        ]
    )
    path = tmp_path / "batch.jsonl"
    path.write_text(code_task("double", "print(2 * 21)", "42") + "\n" + code_task("square", "print(49)", "49") + "\n")
    with MockLLMServer(script) as server:
        settings = settings.model_copy(
            update={"essence_extractor": "llm", "llm_base_url": server.base_url, "llm_model": "mock-model"}
        )
        result = materialize_file(path, settings, instance)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("task_essences")
    assert (materialization.metadata["essences"].value, materialization.metadata["model_failures"].value) == (2, 1)
    rows = query(settings, "SELECT task_id, extractor, domain FROM essences ORDER BY 1")
    assert rows == [("double", "mock-model", "math_algorithms"), ("square", "structural", None)]

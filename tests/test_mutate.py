"""Mutation operators against the mock model over HTTP: candidates with their own check, gold
solution and lineage; answers that are not tasks rejected with their stage."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from runtimes.agent import run_task
from runtimes.core import CandidateError, TaskSpec, VerifierResult
from runtimes.llm import LLMClient, LLMEndpoint, OraclePolicy
from runtimes.sandbox import BwrapSandbox
from runtimes.testing import MockLLMServer, MockScript, ScriptedTurn, ScriptRule
from synthesis.essence import Essence, extract_structural
from synthesis.mutate import mutate
from tests.helpers import code_task, step, task_line

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def seed(task_id: str, description: str) -> tuple[TaskSpec, Essence]:
    line = {**json.loads(code_task(task_id, "print(6 * 7)", "42")), "description": description}
    task = TaskSpec.model_validate(line, strict=False)
    steps = [step(1, "python_executor", code="print(6 * 7)"), step(2, "complete_task", answer="42")]
    return task, extract_structural(task, "b1", steps, VerifierResult(passed=True, checks={"expected_answer": True}))


CANDIDATE = {
    "description": "Compute 12 times 13 with Python and answer with the product.",
    "solution_code": "print(12 * 13)",
    "answer": "156",
    "python_tests": None,
    "expected_answer": "156",
    "max_steps": 4,
}


def run_mutations(script: MockScript, *calls: tuple[str, list[tuple[TaskSpec, Essence]]]) -> list[object]:
    async def go(server: MockLLMServer) -> list[object]:
        endpoint = LLMEndpoint(provider="mock", base_url=server.base_url, model="mock-model", api_key="x")
        client = LLMClient(endpoint, backoff_base=0.001)
        results: list[object] = []
        try:
            for operator, seeds in calls:
                try:
                    results.append(
                        await mutate(
                            client,
                            operator,
                            [e for _, e in seeds],
                            [t for t, _ in seeds],
                            created_at=NOW,  # type: ignore[arg-type]
                        )
                    )
                except (CandidateError, ValueError) as exc:
                    results.append(exc)
        finally:
            await client.aclose()
        return results

    with MockLLMServer(script) as server:
        return asyncio.run(go(server))


def test_a_parameter_mutation_is_a_valid_task_with_lineage_whose_gold_solution_passes() -> None:
    multiply = seed("multiply", "Compute 6 times 7 with Python and answer with the product.")
    script = MockScript(
        rules=[ScriptRule(match="Compute 6 times 7", turns=[ScriptedTurn(content=json.dumps(CANDIDATE))])]
    )
    (candidate,) = run_mutations(script, ("parameter", [multiply]))
    assert isinstance(candidate, TaskSpec)
    assert candidate.task_id.startswith("multiply-parameter-g1-") and candidate.task_type.value == "code"
    assert candidate.lineage is not None
    assert candidate.lineage.parent_task_ids == ["multiply"] and candidate.lineage.essence_ids == [
        multiply[1].essence_id
    ]
    assert (candidate.lineage.mutation, candidate.lineage.generation, candidate.lineage.model) == (
        "parameter",
        1,
        "mock-model",
    )
    assert candidate.lineage.prompt_hash and candidate.lineage.created_at == NOW
    assert candidate.constraints.verify is not None and candidate.constraints.verify.expected_answer == "156"
    # The gold solution passes the candidate's own check in the real sandbox.
    trajectory = asyncio.run(run_task(candidate, OraclePolicy(), BwrapSandbox(1)))
    assert trajectory.success and trajectory.lineage == candidate.lineage


def test_composition_chains_two_parents_and_answers_that_are_not_tasks_are_rejected_with_their_stage() -> None:
    first = seed("first", "Compute 6 times 7 with Python and answer with the product.")
    second = seed("second", "Reverse the digits of a number with Python and answer with the result.")
    unchecked = {**CANDIDATE, "expected_answer": None, "python_tests": None}
    script = MockScript(
        rules=[
            ScriptRule(match="Compute 6 times 7", turns=[ScriptedTurn(content=json.dumps(CANDIDATE))]),
            ScriptRule(match="Reverse the digits", turns=[ScriptedTurn(content=json.dumps(unchecked))]),
            ScriptRule(match="Add two numbers", turns=[ScriptedTurn(content="I would rather not.")] * 3),
        ]
    )
    broken = seed("broken", "Add two numbers with Python and answer with the sum.")
    web = TaskSpec.model_validate_json(task_line("web_parent", "web"))
    composed, no_check, no_answer, web_error = run_mutations(
        script,
        ("composition", [first, second]),
        ("parameter", [second]),
        ("parameter", [broken]),
        ("parameter", [(web, first[1])]),
    )
    assert isinstance(composed, TaskSpec) and composed.lineage is not None
    assert composed.lineage.parent_task_ids == ["first", "second"] and composed.lineage.mutation == "composition"
    assert isinstance(no_check, CandidateError) and no_check.stage == "validation" and "no check" in no_check.reason
    assert isinstance(no_answer, CandidateError) and no_answer.stage == "model"
    assert isinstance(web_error, ValueError) and "only on http://adp.local/" in str(web_error)
    (one_for_two,) = run_mutations(MockScript(), ("composition", [first]))
    assert isinstance(one_for_two, ValueError) and "takes 2" in str(one_for_two)

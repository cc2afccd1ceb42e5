"""All 164 HumanEval problems of examples/humaneval.jsonl (written by scripts/export_humaneval.py),
run by the oracle in the real sandbox and verified by their tests; their null solutions fail."""

from __future__ import annotations

import asyncio
from collections import Counter

from runtimes.agent import run_tasks
from runtimes.core import ErrorType, TaskSpec, Trajectory, parse_task_file
from runtimes.llm import OraclePolicy
from runtimes.sandbox import WarmSandbox
from synthesis.selfcheck import null_variant
from tests.helpers import REPO


def run_all(tasks: list[TaskSpec]) -> list[Trajectory]:
    async def go() -> list[Trajectory]:
        sandbox = WarmSandbox(4)
        try:
            return await run_tasks(tasks, OraclePolicy(), sandbox, max_concurrent=4)
        finally:
            await sandbox.aclose()

    return asyncio.run(go())


def test_the_canonical_solutions_pass_all_164_and_return_none_passes_none() -> None:
    parsed = parse_task_file(REPO / "examples" / "humaneval.jsonl")
    assert parsed.rejected == []
    tasks = [item.task for item in parsed.accepted]
    gold = run_all(tasks)
    assert len(gold) == 164
    assert [t.task_id for t in gold if not t.success] == []
    assert all(t.verifier is not None and t.verifier.checks == {"python_tests": True} for t in gold)
    assert {len(t.steps) for t in gold} == {2}

    # The null solution: every function kept, every body `return None`.
    broken = run_all([null_variant(task) for task in tasks])
    assert len(broken) == 164
    assert sum(t.success for t in broken) == 0
    assert Counter(t.error_type for t in broken) == {ErrorType.RUNTIME_ERROR: 164}
    # The code itself ran; it is the tests that fail it.
    assert all(t.steps[0].success and t.verifier and not t.verifier.passed for t in broken)

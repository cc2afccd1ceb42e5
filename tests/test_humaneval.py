"""All 164 HumanEval problems, run by the oracle in the real sandbox and verified by their tests."""

from __future__ import annotations

import asyncio
from collections import Counter

from runtimes.datasets import humaneval_tasks
from runtimes.policies import OraclePolicy
from runtimes.protocol import ErrorType, Trajectory
from runtimes.runner import run_tasks
from runtimes.sandbox import WarmSandbox


def run_all(*, broken: bool) -> list[Trajectory]:
    async def go() -> list[Trajectory]:
        sandbox = WarmSandbox(4)
        try:
            return await run_tasks(humaneval_tasks(broken=broken), OraclePolicy(), sandbox, max_concurrent=4)
        finally:
            await sandbox.aclose()

    return asyncio.run(go())


def test_the_canonical_solutions_pass_all_164_and_return_none_passes_none() -> None:
    gold = run_all(broken=False)
    assert len(gold) == 164
    assert [t.task_id for t in gold if not t.success] == []
    assert all(t.verifier is not None and t.verifier.checks == {"python_tests": True} for t in gold)
    assert {len(t.steps) for t in gold} == {2}

    broken = run_all(broken=True)
    assert len(broken) == 164
    assert sum(t.success for t in broken) == 0
    assert Counter(t.error_type for t in broken) == {ErrorType.RUNTIME_ERROR: 164}
    # The code itself ran; it is the tests that fail it.
    assert all(t.steps[0].success and t.verifier and not t.verifier.passed for t in broken)

"""Verifiers: how success is checked when a task carries ``constraints.verify``."""

from __future__ import annotations

from runtimes.protocol import TaskSpec, VerifierResult
from runtimes.sandbox import Sandbox, SandboxLimits

_DETAIL_CHARS = 2000


def normalise_answer(text: str) -> str:
    return " ".join(text.split())


async def verify_code_task(
    task: TaskSpec, answer: str | None, last_good_code: str | None, sandbox: Sandbox, limits: SandboxLimits
) -> VerifierResult | None:
    """Check ``answer`` and the last successfully executed code against the task's verifier.

    ``python_tests`` runs in the sandbox after the code of the last successful
    ``python_executor`` call, in one process, as HumanEval's harness does. Returns None when
    the task has no verifier (success then means complete_task was called without error).
    """
    spec = task.constraints.verify
    if spec is None:
        return None
    checks: dict[str, bool] = {}
    details: list[str] = []
    if spec.expected_answer is not None:
        checks["expected_answer"] = answer is not None and normalise_answer(answer) == normalise_answer(
            spec.expected_answer
        )
        if not checks["expected_answer"]:
            details.append(f"expected answer {spec.expected_answer!r}, got {answer!r}")
    if spec.python_tests is not None:
        if last_good_code is None:
            checks["python_tests"] = False
            details.append("no python_executor call succeeded, so there is no code to test")
        else:
            result = await sandbox.exec_python(f"{last_good_code}\n\n{spec.python_tests}\n", limits)
            checks["python_tests"] = result.ok
            if not result.ok:
                details.append(f"python_tests: {result.status}: {result.stderr.strip()[-_DETAIL_CHARS:]}")
    for key in ("page_contains", "url_contains", "miniwob_reward"):
        if getattr(spec, key) is not None:
            checks[key] = False
            details.append(f"{key} needs a browser page; a {task.task_type} task has none")
    return VerifierResult(passed=all(checks.values()), checks=checks, details="; ".join(details))

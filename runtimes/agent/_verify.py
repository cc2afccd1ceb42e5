"""Verifiers: how success is checked when a task carries ``constraints.verify``."""

from __future__ import annotations

from runtimes.core import SandboxError, TaskSpec, VerifierResult, redact
from runtimes.sandbox import ExecResult, ExecStatus, Sandbox, SandboxLimits
from runtimes.web import BrowserSession

_DETAIL_CHARS = 2000


def normalise_answer(text: str) -> str:
    return " ".join(text.split())


def sandbox_failure(result: ExecResult) -> str | None:
    """Why the sandbox could not run an execution's code, or None when the code ran.

    The sandbox says SYSTEM_ERROR only of its own failures: the code never started (a program
    of its launch missing, bwrap refused, the runner could not isolate the execution, its
    memory limit could not be set) or the warm runner stopped answering. Whatever the code does
    once started ends otherwise: its own limits (memory, processes, time), its crash, killing
    its processes or bringing its sandbox down are ``runtime_error`` or ``timeout``; so task
    code cannot make its own failure adp's (tests/test_no_silent_failure.py tries).
    """
    if result.status is not ExecStatus.SYSTEM_ERROR:
        return None
    return " ".join(result.stderr.replace("[adp] ", "").split())[:_DETAIL_CHARS] or "the sandbox failed silently"


async def verify_task(
    task: TaskSpec,
    answer: str | None,
    last_good_code: str | None,
    sandbox: Sandbox,
    limits: SandboxLimits,
    session: BrowserSession | None,
) -> VerifierResult | None:
    """Check the run's answer, code and page against the task's verifier.

    ``python_tests`` runs against the code of the last successful ``python_executor`` call
    in an execution of its own (:meth:`Sandbox.check_python`), which passes only on the
    harness's evidence that every test ran, never on how the code exited; ``page_contains``,
    ``url_contains`` and ``miniwob_reward`` read the task's page as the run left it. Returns
    None when the task has no verifier (success then means complete_task was called).

    Raises:
        SandboxError: the sandbox could not run ``python_tests`` (no verdict: the tests never ran).
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
            check = await sandbox.check_python(last_good_code, spec.python_tests, limits)
            if (failure := sandbox_failure(check.execution)) is not None:
                raise SandboxError(f"{failure}; python_tests could not be run")
            checks["python_tests"] = check.passed
            if not check.passed:
                # Redacted before the cut, which could leave a secret's tail that no rule knows.
                details.append(f"python_tests: {redact(check.reason)[-_DETAIL_CHARS:]}")
    page_checks = [key for key in ("page_contains", "url_contains", "miniwob_reward") if getattr(spec, key) is not None]
    if page_checks and session is None:
        for key in page_checks:
            checks[key] = False
        details.append(f"{', '.join(page_checks)} need a browser page; a {task.task_type} task has none")
    elif session is not None:
        if spec.page_contains is not None:
            checks["page_contains"] = spec.page_contains in await session.page_text()
            if not checks["page_contains"]:
                details.append(f"the page does not contain {spec.page_contains!r}")
        if spec.url_contains is not None:
            checks["url_contains"] = spec.url_contains in session.page.url
            if not checks["url_contains"]:
                details.append(f"the URL {session.page.url!r} does not contain {spec.url_contains!r}")
        if spec.miniwob_reward is not None:
            episode = await session.miniwob_result()
            checks["miniwob_reward"] = bool(episode["done"]) and episode["raw_reward"] >= spec.miniwob_reward
            if not checks["miniwob_reward"]:
                details.append(f"MiniWoB episode done={episode['done']} raw reward {episode['raw_reward']}")
    return VerifierResult(passed=all(checks.values()), checks=checks, details="; ".join(details))

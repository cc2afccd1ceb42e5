"""The sandbox interface: execute Python source, get a classified result."""

from __future__ import annotations

import abc
import secrets
from enum import StrEnum

from pydantic import BaseModel, Field

from runtimes.core import ErrorType


class SandboxLimits(BaseModel):
    """Per-execution limits; a task's ``constraints.sandbox`` overrides timeout and memory."""

    timeout: float = Field(10.0, gt=0, description="Wall-clock seconds; CPU seconds are capped at the same.")
    memory_mb: int = Field(
        512,
        ge=64,
        description="All the memory of the execution: /tmp and /dev/shm are tmpfs of an eighth of it each, the "
        "address space of each process the rest (a cgroup's memory.max, where one is delegated, holds all of it).",
    )
    max_processes: int = Field(32, ge=1, description="Processes and threads the sandbox user may have.")
    max_file_mb: int = Field(16, ge=1, description="Largest file the code may write (in its private /tmp).")
    max_open_files: int = Field(64, ge=8)
    max_output_bytes: int = Field(64 * 1024, ge=1024, description="Kept of stdout and of stderr, each.")

    @property
    def scratch_bytes(self) -> int:
        """Size of each of the execution's tmpfs mounts (/tmp, /dev/shm): an eighth of ``memory_mb``.

        Files in tmpfs are RAM, so they come out of the task's memory rather than on top of it.
        """
        return self.memory_mb * 1024 * 1024 // 8

    @property
    def address_space_bytes(self) -> int:
        """RLIMIT_AS of the code's processes: what ``memory_mb`` leaves after both tmpfs mounts
        (at the default 512 MB, 384 MB: enough to import the standard library and allocate
        a few hundred MB)."""
        return self.memory_mb * 1024 * 1024 - 2 * self.scratch_bytes


class ExecStatus(StrEnum):
    OK = "ok"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    SYSTEM_ERROR = "system_error"

    @property
    def error_type(self) -> ErrorType | None:
        return None if self is ExecStatus.OK else ErrorType(self.value)


class ExecResult(BaseModel):
    status: ExecStatus
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    duration: float = 0.0
    stdout_truncated_from: int | None = Field(None, description="Original size in bytes when stdout was cut.")
    stderr_truncated_from: int | None = None
    evidence: tuple[str, ...] = Field((), description="What a check's harness wrote as evidence (see check_python).")

    @property
    def ok(self) -> bool:
        return self.status is ExecStatus.OK


class CheckResult(BaseModel):
    """A check's verdict: passed only on the harness's evidence, never on an exit status."""

    passed: bool
    execution: ExecResult
    reason: str = Field("", description="Why it failed, for a person; empty when it passed.")


class Sandbox(abc.ABC):
    """Executes untrusted Python source; implementations register in ``runtimes.sandbox``."""

    async def exec_python(self, code: str, limits: SandboxLimits | None = None) -> ExecResult:
        """Run ``code`` as a fresh ``__main__`` and classify how it ended.

        Never raises for anything the code does; a sandbox that cannot start gives SYSTEM_ERROR.
        """
        return await self._execute(code, limits, None)

    async def check_python(self, solution: str, tests: str, limits: SandboxLimits | None = None) -> CheckResult:
        """Run ``tests`` against ``solution`` in an execution of their own and judge them.

        The solution is loaded as the module ``solution``; the tests then run in its namespace,
        and the check passes only on evidence the harness writes after the last test: a fresh
        nonce on the status channel. Any exit, a closed stream, patched builtins or modules,
        tracing, or a value whose ``__eq__`` is the solution's code meeting native data all
        fail it (the harness is ``run_check`` in the sandbox's runner, documented in
        docs/pipeline.md). Never raises for anything the code does.
        """
        nonce = secrets.token_hex(16)
        result = await self._execute(solution, limits, {"tests": tests, "nonce": nonce})
        if result.ok and result.evidence == (nonce,):
            return CheckResult(passed=True, execution=result)
        if result.ok:
            reason = "the tests ended without the harness's evidence that they all ran"
        else:
            reason = f"{result.status}: {result.stderr.strip()}"
        return CheckResult(passed=False, execution=result, reason=reason)

    @abc.abstractmethod
    async def _execute(self, code: str, limits: SandboxLimits | None, check: dict[str, str] | None) -> ExecResult:
        """Run ``code`` (a check's solution when ``check`` carries its tests and nonce)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the sandbox holds (warm processes); the default holds nothing."""

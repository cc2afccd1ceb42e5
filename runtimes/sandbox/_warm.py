"""A pool of warm bubblewrap sandboxes that fork per execution.

Launching bwrap + Python costs ~25-30 ms of CPU per execution on this class of machine; a
resident process inside each sandbox (``_zygote.py``) forks a fresh child per execution in ~1-2
ms instead. Isolation is that of :class:`BwrapSandbox` (same namespaces, the same uid per slot,
the same limits set as hard limits in the child); between executions the zygote kills every
other process; each execution had its own /tmp, /dev/shm and IPC namespace, which the kernel
frees with its last process. A slot is relaunched after any timeout, after ``recycle_after``
executions, and whenever it stops answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Any

from runtimes.core import SandboxError
from runtimes.sandbox._base import ExecResult, ExecStatus, Sandbox, SandboxLimits
from runtimes.sandbox._bwrap import (
    DEFAULT_UID_BASE,
    ZYGOTE_IN_SANDBOX,
    classify,
    exec_result,
    isolate,
    kill_sandbox,
    not_run,
    sandbox_python,
    slot_uids,
    zygote_fd,
)
from runtimes.sandbox._memory import MemoryControlError, SandboxMemory

_ANSWER_GRACE = 10.0  # seconds past an execution's own timeout before the zygote is presumed hung
_START_TIMEOUT = 30.0


@dataclass
class _Slot:
    uid: int
    process: asyncio.subprocess.Process | None = None
    executions: int = 0


class WarmSandbox(Sandbox):
    """Executes code in warm, recycled sandboxes; same interface and guarantees as BwrapSandbox.

    Args:
        slots: sandboxes (and so executions at once); each has its own uid when run as root.
        uid_base: first uid of the slots.
        python: the interpreter inside the sandbox.
        default_limits: limits of executions that pass none.
        memory: the ceiling, the budget and the cgroups of its executions (default: 1024 MB
            each at most, half the RAM in all).
        recycle_after: executions before a slot is relaunched.
    """

    def __init__(
        self,
        slots: int = 4,
        *,
        uid_base: int = DEFAULT_UID_BASE,
        python: str = "/usr/bin/python3",
        default_limits: SandboxLimits | None = None,
        memory: SandboxMemory | None = None,
        recycle_after: int = 200,
    ) -> None:
        self._python = sandbox_python(python)
        self._default_limits = default_limits or SandboxLimits()
        self._memory = memory or SandboxMemory()
        self._recycle_after = recycle_after
        self._as_root = os.geteuid() == 0
        self._all = [_Slot(uid=uid) for uid in slot_uids(slots, uid_base)]
        self._free: asyncio.Queue[_Slot] = asyncio.Queue()
        for slot in self._all:
            self._free.put_nowait(slot)

    async def _execute(self, code: str, limits: SandboxLimits | None, check: dict[str, str] | None) -> ExecResult:
        limits = self._memory.limit(limits or self._default_limits)
        slot = await self._free.get()
        try:
            async with self._memory.execution(limits, self._cgroup(slot)):
                return await self._exec(slot, code, limits, check)
        except MemoryControlError as exc:
            return ExecResult(status=ExecStatus.SYSTEM_ERROR, stderr=f"[adp] {exc}")
        finally:
            self._free.put_nowait(slot)

    async def aclose(self) -> None:
        for slot in self._all:
            await self._discard(slot)
        self._memory.close()

    def _cgroup(self, slot: _Slot) -> str:
        return f"slot-{self._all.index(slot)}"

    async def _exec(self, slot: _Slot, code: str, limits: SandboxLimits, check: dict[str, str] | None) -> ExecResult:
        sent = False
        try:
            process = slot.process if slot.process and slot.process.returncode is None else await self._launch(slot)
            request = {
                "code": code,
                "timeout": limits.timeout,
                "cpu_seconds": max(1, math.ceil(limits.timeout)),
                "memory_bytes": limits.address_space_bytes,
                "file_bytes": limits.max_file_mb * 1024 * 1024,
                "open_files": limits.max_open_files,
                "output_bytes": limits.max_output_bytes,
                "scratch_bytes": limits.scratch_bytes,
                "check": check,
            }
            _write_frame(process, request)
            sent = True
            answer = await asyncio.wait_for(_read_frame(process), timeout=limits.timeout + _ANSWER_GRACE)
        except asyncio.CancelledError:  # the task's own timeout: leave nothing running
            await asyncio.shield(self._discard(slot))
            raise
        except (OSError, EOFError, SandboxError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            await self._discard(slot)
            if sent and isinstance(exc, asyncio.IncompleteReadError):
                # The sandbox's init ended while this code ran: the code brought its sandbox down,
                # which is its own error (the next execution gets a fresh sandbox).
                message = "[adp] the sandbox's init died while this code ran (the code brought its sandbox down)"
                return ExecResult(status=ExecStatus.RUNTIME_ERROR, stderr=message)
            said = f"[adp] {exc}" if isinstance(exc, SandboxError) else f"[adp] the warm sandbox failed: {exc!r}"
            return ExecResult(status=ExecStatus.SYSTEM_ERROR, stderr=said)
        slot.executions += 1
        if answer["timed_out"] or slot.executions >= self._recycle_after:
            await self._discard(slot)
        status = classify(answer["statuses"], answer["returncode"], answer["timed_out"], answer["duration"], limits)
        return exec_result(
            answer["statuses"],
            status,
            answer["stdout"],
            answer["stderr"],
            answer["returncode"],
            answer["duration"],
            (answer["stdout_size"], answer["stderr_size"]),
            limits,
            answer["timed_out"],
        )

    async def _launch(self, slot: _Slot) -> asyncio.subprocess.Process:
        # The zygote's own limits: the processes of the slot's uid (children set the rest).
        # Where cgroups are in force the zygote lives in its slot's: memory.max is set per execution.
        command = [*self._memory.enter(self._cgroup(slot))]
        command += ["prlimit", f"--nproc={self._default_limits.max_processes}", "--"]
        with zygote_fd() as runner_fd:
            command += isolate(slot.uid if self._as_root else None, runner_fd)
            command += [self._python, "-I", "-S", ZYGOTE_IN_SANDBOX]
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,  # what the launch says when it fails (the zygote writes none)
                pass_fds=(runner_fd,),
                start_new_session=True,
            )
        slot.process, slot.executions = process, 0
        try:
            ready = await asyncio.wait_for(_read_frame(process), timeout=_START_TIMEOUT)
        except (asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            await self._discard(slot)
            assert process.stderr is not None
            said = ""
            with contextlib.suppress(TimeoutError):  # killed, so its end of the pipe is closed
                said = (await asyncio.wait_for(process.stderr.read(4096), 5)).decode("utf-8", "replace")
            raise SandboxError(not_run(said or repr(exc)).removeprefix("[adp] ")) from exc
        if not ready.get("ready"):
            raise SandboxError(f"the zygote did not start: {ready}")
        return process

    async def _discard(self, slot: _Slot) -> None:
        process, slot.process = slot.process, None
        if process is not None and process.returncode is None:
            if process.stdin is not None:
                process.stdin.close()
            await kill_sandbox(process)


def _write_frame(process: asyncio.subprocess.Process, message: dict[str, Any]) -> None:
    assert process.stdin is not None
    payload = json.dumps(message).encode()
    process.stdin.write(struct.pack(">I", len(payload)) + payload)


async def _read_frame(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    header = await process.stdout.readexactly(4)
    answer = json.loads(await process.stdout.readexactly(struct.unpack(">I", header)[0]))
    if not isinstance(answer, dict):
        raise ValueError("the zygote answered something other than an object")
    return answer

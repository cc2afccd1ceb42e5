"""Code that goes after its own sandbox (the init that runs it, the channels it reports on)
fails as its own error, and never reaches the execution after it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from runtimes.sandbox import SANDBOXES, ExecResult, ExecStatus, WarmSandbox
from tests.helpers import sandbox_processes, wait_for

AFTER = "print('next')"


def run_in_order(kind: str, *codes: str) -> list[ExecResult]:
    async def go() -> list[ExecResult]:
        sandbox = SANDBOXES[kind](1)  # one slot: the second execution reuses what the first left
        try:
            return [await sandbox.exec_python(code) for code in codes]
        finally:
            await sandbox.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
@pytest.mark.parametrize(
    "attack",
    [
        "resource.prlimit(1, resource.RLIMIT_AS, (1 << 20, 1 << 20))",
        "resource.prlimit(1, resource.RLIMIT_NOFILE, (3, 3))",
        "resource.prlimit(1, resource.RLIMIT_CPU, (0, 0))",
        "os.setpriority(os.PRIO_PROCESS, 1, 19)",
        "os.sched_setaffinity(1, {0})",
    ],
)
def test_code_cannot_change_its_sandboxs_init(kind: str, attack: str) -> None:
    tampered, after = run_in_order(kind, f"import os, resource\n{attack}\nprint('changed')", AFTER)
    assert tampered.status is ExecStatus.RUNTIME_ERROR
    assert "PermissionError" in tampered.stderr and tampered.stdout == ""
    assert (after.status, after.stdout) == (ExecStatus.OK, "next\n")


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_code_may_still_change_its_own_limits_and_priority(kind: str) -> None:
    (own,) = run_in_order(
        kind,
        "import os, resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))\n"
        "resource.prlimit(0, resource.RLIMIT_CPU, (5, 5))\nos.setpriority(os.PRIO_PROCESS, 0, 5)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE), os.getpriority(os.PRIO_PROCESS, 0))",
    )
    assert (own.status, own.stdout) == (ExecStatus.OK, "(32, 32) 5\n")


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_garbage_on_every_descriptor_breaks_neither_the_sandbox_nor_the_host(kind: str) -> None:
    scribble = (
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'\\xff\\xfe\\x00 \\xc3')\n"
        "    except OSError:\n        pass\nprint('wrote')\n"
    )
    scribbled, after = run_in_order(kind, scribble, AFTER)
    assert scribbled.status is ExecStatus.RUNTIME_ERROR and scribbled.stdout == "wrote\n"
    assert (after.status, after.stdout) == (ExecStatus.OK, "next\n")


def _python_processes() -> dict[int, int]:
    """The sandbox's python processes: pid -> parent pid."""
    found = {}
    for pid, name in sandbox_processes():
        if name.startswith("python"):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            found[pid] = int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="finding the slot's processes by uid needs root; CI runs as root")
def test_an_init_that_dies_under_the_code_is_the_codes_error_and_the_next_execution_gets_a_new_one() -> None:
    async def go() -> tuple[ExecResult, ExecResult]:
        sandbox = WarmSandbox(1)
        try:
            running = asyncio.ensure_future(sandbox.exec_python("import time\ntime.sleep(60)", None))
            # The warm sandbox's init and the child it forked for this execution.
            await asyncio.to_thread(wait_for, lambda: len(_python_processes()) == 2, 20, "the code to run")
            tree = _python_processes()
            (init,) = [pid for pid, parent in tree.items() if parent not in tree]
            os.kill(init, signal.SIGKILL)
            return await asyncio.wait_for(running, 30), await sandbox.exec_python(AFTER)
        finally:
            await sandbox.aclose()

    died, after = asyncio.run(go())
    assert died.status is ExecStatus.RUNTIME_ERROR and died.status.error_type is not None
    assert "the sandbox's init died while this code ran" in died.stderr
    assert (after.status, after.stdout) == (ExecStatus.OK, "next\n")

"""A bubblewrap sandbox launched per execution.

``prlimit`` sets the resource limits, ``setpriv`` drops to a non-root uid of the slot (as root
RLIMIT_NPROC is not enforced and root-owned files are readable), and ``bwrap`` builds an empty
world: ``/usr`` read-only, no network, IPC, PID or UTS sharing, no nested user namespaces, an
empty environment. The code runner (``_zygote.py``) is copied in from a pipe, so no host path
shows inside; it gives each execution fresh tmpfs mounts and IPC, drops the last capability
and installs a seccomp filter before the code runs. The code runs as PID 1 of its namespace,
so when it ends every process it started ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from runtimes.core import SandboxError
from runtimes.sandbox._base import ExecResult, ExecStatus, Sandbox, SandboxLimits
from runtimes.sandbox._memory import MemoryControlError, SandboxMemory

DEFAULT_UID_BASE = 61000
_KILLED_BY_SIGKILL = 128 + signal.SIGKILL

# The programs a sandbox is launched with (looked up on PATH) and the Debian package of each.
_LAUNCH_TOOLS = {"prlimit": "util-linux", "setpriv": "util-linux", "bwrap": "bubblewrap"}
# The code runner, copied read-only into every sandbox (see zygote.py).
ZYGOTE_IN_SANDBOX = "/opt/adp/zygote.py"
EVIDENCE_PREFIX = "checked:"  # the status word of a check's evidence (_zygote.EVIDENCE_PREFIX)
# The sandbox's own /tmp and /dev/shm, under each execution's fresh ones: nothing writes there.
_BASE_SCRATCH_BYTES = 1024 * 1024


@functools.cache
def _zygote_source() -> bytes:
    source = Path(__file__).with_name("_zygote.py").read_bytes()
    if len(source) >= 65536:  # written into a pipe before bwrap reads it: must fit its buffer
        raise SandboxError("the code runner (_zygote.py) outgrew a pipe buffer")
    return source


@contextlib.contextmanager
def zygote_fd() -> Iterator[int]:
    """A pipe holding the code runner's source, for ``bwrap --ro-bind-data``.

    bwrap copies it into the sandbox, so the runner is readable by the slot uid wherever adp
    is installed (a checkout under /root, say) and no host path of it shows inside.
    """
    read, write = os.pipe()
    try:
        os.write(write, _zygote_source())
    finally:
        os.close(write)
    try:
        yield read
    finally:
        os.close(read)


class BwrapSandbox(Sandbox):
    """Executes each piece of code in a new bubblewrap sandbox.

    Args:
        slots: how many executions may run at once; each gets its own uid when adp runs as root.
        uid_base: first uid of the slots (``uid_base .. uid_base + slots - 1``); unused by anyone.
        python: the interpreter inside the sandbox (the system one, under ``/usr``).
        default_limits: limits of executions that pass none.
        memory: the ceiling, the budget and the cgroups of its executions (default: 1024 MB
            each at most, half the RAM in all).
    """

    def __init__(
        self,
        slots: int = 4,
        *,
        uid_base: int = DEFAULT_UID_BASE,
        python: str = "/usr/bin/python3",
        default_limits: SandboxLimits | None = None,
        memory: SandboxMemory | None = None,
    ) -> None:
        self._python = sandbox_python(python)
        self._default_limits = default_limits or SandboxLimits()
        self._memory = memory or SandboxMemory()
        self._as_root = os.geteuid() == 0
        self._uids: asyncio.Queue[int] = asyncio.Queue()
        for uid in slot_uids(slots, uid_base):
            self._uids.put_nowait(uid)

    async def _execute(self, code: str, limits: SandboxLimits | None, check: dict[str, str] | None) -> ExecResult:
        limits = self._memory.limit(limits or self._default_limits)
        uid = await self._uids.get()
        try:
            async with self._memory.execution(limits) as enter_cgroup:
                return await self._run(code, limits, uid, check, enter_cgroup)
        except MemoryControlError as exc:
            return ExecResult(status=ExecStatus.SYSTEM_ERROR, stderr=f"[adp] {exc}")
        finally:
            self._uids.put_nowait(uid)

    async def aclose(self) -> None:
        self._memory.close()

    def command(self, limits: SandboxLimits, uid: int, status_fd: int, runner_fd: int) -> list[str]:
        """The full command line of one execution (exposed for the benchmark and for debugging)."""
        cpu_seconds = max(1, math.ceil(limits.timeout))
        command = [
            "prlimit",
            f"--as={limits.address_space_bytes}",
            f"--cpu={cpu_seconds}",  # soft = hard: PID 1 ignores SIGXCPU, the hard limit kills
            f"--nproc={limits.max_processes}",
            f"--fsize={limits.max_file_mb * 1024 * 1024}",
            f"--nofile={limits.max_open_files}",
            "--",
        ]
        command += isolate(uid if self._as_root else None, runner_fd)
        command += [self._python, "-I", "-S", ZYGOTE_IN_SANDBOX, "once", str(status_fd), str(limits.scratch_bytes)]
        return command

    async def _run(
        self, code: str, limits: SandboxLimits, uid: int, check: dict[str, str] | None, enter_cgroup: Sequence[str] = ()
    ) -> ExecResult:
        status_read, status_write = os.pipe()
        started = time.monotonic()
        try:
            try:
                with zygote_fd() as runner_fd:
                    process = await asyncio.create_subprocess_exec(
                        *enter_cgroup,  # empty unless cgroups are in force (see _memory.py)
                        *self.command(limits, uid, status_write, runner_fd),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                        pass_fds=(status_write, runner_fd),
                        start_new_session=True,
                    )
            except OSError as exc:
                return ExecResult(status=ExecStatus.SYSTEM_ERROR, stderr=not_run(str(exc)))
            finally:
                os.close(status_write)
            assert process.stdin and process.stdout and process.stderr
            outputs = asyncio.gather(
                _feed(process.stdin, json.dumps({"code": code, "check": check}).encode()),
                _read_capped(process.stdout, limits.max_output_bytes),
                _read_capped(process.stderr, limits.max_output_bytes),
            )
            timed_out = False
            try:
                await asyncio.wait_for(process.wait(), timeout=limits.timeout)
            except TimeoutError:
                timed_out = True
                await kill_sandbox(process)
            except asyncio.CancelledError:  # the task's own timeout: leave nothing running
                await asyncio.shield(kill_sandbox(process))
                outputs.cancel()
                raise
            _, (stdout, stdout_size), (stderr, stderr_size) = await outputs
            duration = time.monotonic() - started
            statuses = _read_all(status_read).decode("utf-8", "replace").split()  # the code can write there too
        finally:
            os.close(status_read)

        return exec_result(
            statuses,
            classify(statuses, process.returncode, timed_out, duration, limits),
            stdout.decode("utf-8", "replace"),
            stderr.decode("utf-8", "replace"),
            process.returncode,
            duration,
            (stdout_size, stderr_size),
            limits,
            timed_out,
        )


def slot_uids(slots: int, uid_base: int) -> list[int]:
    """One uid per slot as root (so RLIMIT_NPROC counts each slot apart); else the caller's own."""
    if os.geteuid() != 0:
        return [os.geteuid()] * slots
    return [uid_base + slot for slot in range(slots)]


def sandbox_python(python: str) -> str:
    if not Path(python).is_relative_to("/usr"):
        raise ValueError(f"the sandbox sees only /usr; {python} is outside it")
    return python


def isolate(uid: int | None, runner_fd: int) -> list[str]:
    """``setpriv`` to ``uid`` (when given) and ``bwrap`` with adp's isolation, up to the command.

    ``runner_fd`` is :func:`zygote_fd`'s pipe. The sandbox keeps CAP_SYS_ADMIN of its own user
    namespace (which maps the slot uid alone, and can create no further user namespace) so that
    the runner can mount each execution's scratch; the runner drops it before any code runs.
    """
    command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid is not None else []
    command += [
        "bwrap",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin",
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(_BASE_SCRATCH_BYTES), "--tmpfs", "/dev/shm",  # the rest of /dev is read-only
        "--remount-ro", "/dev",
        "--size", str(_BASE_SCRATCH_BYTES), "--tmpfs", "/tmp",
        "--ro-bind-data", str(runner_fd), ZYGOTE_IN_SANDBOX,
        "--remount-ro", "/",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-add", "CAP_SYS_ADMIN",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin",
        "--setenv", "HOME", "/tmp",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--chdir", "/tmp",
        "--as-pid-1",
    ]  # fmt: skip
    return command


_CPU_KILLS = {_KILLED_BY_SIGKILL, -signal.SIGKILL, 128 + signal.SIGXCPU, -signal.SIGXCPU}


def classify(
    statuses: Sequence[str], returncode: int | None, timed_out: bool, duration: float, limits: SandboxLimits
) -> ExecStatus:
    """How an execution ended, from what the wrapper reported and how the process exited."""
    if timed_out:
        return ExecStatus.TIMEOUT
    if "started" not in statuses:
        return ExecStatus.SYSTEM_ERROR  # bwrap or the interpreter never got to the code
    if "compile_error" in statuses:
        return ExecStatus.COMPILE_ERROR
    if list(statuses[-1:]) == ["ok"] and returncode == 0:
        return ExecStatus.OK
    if returncode in _CPU_KILLS and duration >= math.ceil(limits.timeout) * 0.9:
        return ExecStatus.TIMEOUT  # the CPU limit's signal: busy for as long as allowed
    return ExecStatus.RUNTIME_ERROR


def not_run(said: str) -> str:
    """The stderr of an execution whose code never ran (SYSTEM_ERROR): why, for a person.

    A program of the launch missing from PATH leaves only "No such file or directory" (or, in
    the warm pool, a closed pipe): it is named, with its package. Otherwise what the launch or
    the runner said (bwrap refused namespaces, the runner could not isolate the execution).
    """
    missing = [
        tool for tool in _LAUNCH_TOOLS if shutil.which(tool) is None and (tool != "setpriv" or os.geteuid() == 0)
    ]
    if missing:
        packages = " and ".join(sorted({_LAUNCH_TOOLS[tool] for tool in missing}))
        why = f"{' and '.join(missing)} not found on PATH: install {packages} (`make setup` as root)"
    else:
        why = " ".join(said.replace("[adp] ", "").split())[-500:] or "its launch ended without saying why"
    return f"[adp] the sandbox could not run the code: {why}"


def exec_result(
    statuses: Sequence[str],
    status: ExecStatus,
    stdout: str,
    stderr: str,
    returncode: int | None,
    duration: float,
    sizes: tuple[int, int],
    limits: SandboxLimits,
    timed_out: bool,
) -> ExecResult:
    if status is ExecStatus.TIMEOUT:
        which = (
            f"wall-clock limit of {limits.timeout:g} s" if timed_out else f"CPU limit of {math.ceil(limits.timeout)} s"
        )
        stderr += f"\n[adp] {which} reached"
    elif status is ExecStatus.SYSTEM_ERROR:
        stderr = not_run(stderr)
    return ExecResult(
        status=status,
        stdout=stdout,
        stderr=stderr,
        exit_code=returncode,
        duration=duration,
        stdout_truncated_from=sizes[0] if sizes[0] > len(stdout.encode()) else None,
        stderr_truncated_from=sizes[1] if sizes[1] > len(stderr.encode()) else None,
        evidence=tuple(word.removeprefix(EVIDENCE_PREFIX) for word in statuses if word.startswith(EVIDENCE_PREFIX)),
    )


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stream.write(data)
        await stream.drain()
        stream.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the sandbox died before reading its code; its status says why


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, int]:
    kept = bytearray()
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
    return bytes(kept), total


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


async def kill_sandbox(process: asyncio.subprocess.Process) -> None:
    """Kill the sandbox so that every process is reaped.

    Killing bwrap itself would orphan the sandbox's PID 1 to the host's init, which in a
    container may never reap it: a zombie that counts against the slot's process limit until
    launches fail. Killing PID 1 instead lets bwrap reap it and exit; the kernel ends the rest
    of the namespace with it.
    """
    for pid in _children(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        await asyncio.wait_for(process.wait(), timeout=5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []

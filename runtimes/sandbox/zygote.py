"""The code runner inside every sandbox, stdlib only; runs INSIDE bubblewrap as PID 1.

``zygote.py once FD`` runs one piece of code from stdin (the launch-per-execution sandbox).
``zygote.py`` alone is the warm sandbox's resident process:

it reads one request per frame from fd 0 (4-byte big-endian length + JSON), forks a child per
execution that sets its own hard limits and runs the code as ``__main__``, and answers one
frame on fd 1. After every execution it kills every other process in the namespace, reaps
them, and empties /tmp and /dev/shm, so the next execution starts from the same state as a
fresh sandbox. As PID 1 it cannot be killed from inside the namespace, and it marks itself
non-dumpable so the code (same uid) cannot ptrace it or read its memory.
"""

import contextlib
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time
import traceback
from typing import Any, NoReturn

PR_SET_DUMPABLE = 4
CONTROL_IN, CONTROL_OUT = 100, 101
SCRATCH = ("/tmp", "/dev/shm")


def read_frame() -> dict[str, Any] | None:
    header = _read_exactly(CONTROL_IN, 4)
    body = None if header is None else _read_exactly(CONTROL_IN, struct.unpack(">I", header)[0])
    return None if body is None else json.loads(body)


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def write_frame(message: dict[str, Any]) -> None:
    payload = json.dumps(message).encode()
    os.write(CONTROL_OUT, struct.pack(">I", len(payload)) + payload)


def run_child(request: dict[str, Any], out_w: int, err_w: int, status_w: int) -> NoReturn:
    """In the forked child: limits, fresh stdio, then the code. Never returns."""
    os.setsid()
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # only the zygote must stay untraceable
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in (devnull, out_w, err_w, CONTROL_IN, CONTROL_OUT):
        os.close(fd)
    memory = request["memory_bytes"]
    cpu = request["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (request["file_bytes"], request["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (request["open_files"], request["open_files"]))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.chdir("/tmp")
    sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115

    run_code(request["code"], status_w)


def run_code(source: str, status_fd: int) -> NoReturn:
    """Run ``source`` as ``__main__`` and say on ``status_fd`` how it ended. Never returns.

    The protocol both sandboxes share: "started", then "compile_error", "runtime_error" or
    "ok", one per line; the host classifies from these and the exit status, not from stderr.
    """

    def report(word: str) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(status_fd, word.encode() + b"\n")

    report("started")
    try:
        code = compile(source, "<code>", "exec")
    except (SyntaxError, ValueError) as error:
        sys.stderr.write("".join(traceback.format_exception_only(type(error), error)))
        report("compile_error")
        os._exit(1)
    del source
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as exit:
        ok = exit.code in (None, 0)
        if not ok and exit.code is not None and not isinstance(exit.code, int):
            sys.stderr.write(f"{exit.code}\n")
        report("ok" if ok else "runtime_error")
        os._exit(0 if ok else exit.code if isinstance(exit.code, int) else 1)
    except BaseException as error:
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        report("runtime_error")
        os._exit(1)
    report("ok")
    os._exit(0)


def run_once(status_fd: int) -> NoReturn:
    """The one-shot mode of the launch-per-execution sandbox: the code comes on stdin."""
    source = sys.stdin.buffer.read().decode("utf-8", "replace")
    os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    run_code(source, status_fd)


def execute(request: dict[str, Any]) -> dict[str, Any]:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    status_r, status_w = os.pipe()
    sys.stdout.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        for fd in (out_r, err_r, status_r):
            os.close(fd)
        try:
            run_child(request, out_w, err_w, status_w)
        finally:
            os._exit(70)
    for fd in (out_w, err_w, status_w):
        os.close(fd)
    cap = request["output_bytes"]
    buffers = {out_r: bytearray(), err_r: bytearray(), status_r: bytearray()}
    sizes = {out_r: 0, err_r: 0, status_r: 0}
    open_fds = set(buffers)
    deadline = started + request["timeout"]
    timed_out = False
    exit_status = None
    while True:
        if exit_status is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exit_status = status
        remaining = deadline - time.monotonic()
        if remaining <= 0 and exit_status is None:
            timed_out = True
            break
        if exit_status is not None and not open_fds:
            break
        if exit_status is not None:
            remaining = min(remaining, 0.05)  # the child is gone; only stray holders of its pipes remain
        readable, _, _ = select.select(list(open_fds), [], [], max(0.0, min(remaining, 0.05)))
        if exit_status is not None and not readable:
            break
        for fd in readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                continue
            sizes[fd] += len(chunk)
            if len(buffers[fd]) < cap:
                buffers[fd] += chunk[: cap - len(buffers[fd])]
    duration = time.monotonic() - started
    if exit_status is None:
        exit_status = kill_and_reap(pid)
    kill_everything_else()
    for fd in buffers:
        os.close(fd)
    wipe_scratch()
    returncode = os.waitstatus_to_exitcode(exit_status) if exit_status is not None else None
    return {
        "statuses": buffers[status_r].decode().split(),
        "timed_out": timed_out,
        "returncode": returncode,
        "duration": duration,
        "stdout": buffers[out_r].decode("utf-8", "replace"),
        "stderr": buffers[err_r].decode("utf-8", "replace"),
        "stdout_size": sizes[out_r],
        "stderr_size": sizes[err_r],
    }


def kill_and_reap(pid: int) -> int:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def kill_everything_else() -> None:
    """Kill every process of the namespace but this one (PID 1) and reap them all."""
    while True:
        others = [int(name) for name in os.listdir("/proc") if name.isdigit() and name != "1"]
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        reaped = False
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped = True
        if not others and not reaped:
            return
        if others and not reaped:
            time.sleep(0.001)


def wipe_scratch() -> None:
    for root in SCRATCH:
        try:
            entries = os.listdir(root)
        except OSError:
            continue
        for name in entries:
            path = os.path.join(root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)


def main() -> None:
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    os.dup2(0, CONTROL_IN)
    os.dup2(1, CONTROL_OUT)
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    write_frame({"ready": True})
    while (request := read_frame()) is not None:
        write_frame(execute(request))


if __name__ == "__main__":
    if sys.argv[1:2] == ["once"]:
        run_once(int(sys.argv[2]))
    main()

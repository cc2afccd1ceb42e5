"""The code runner inside every sandbox, stdlib only; runs INSIDE bubblewrap.

``zygote.py once FD SCRATCH_BYTES`` runs one piece of code from stdin as PID 1 (the
launch-per-execution sandbox). ``zygote.py`` alone is the warm sandbox's resident process:
it reads one request per frame from fd 0 (4-byte big-endian length + JSON), forks a child per
execution, and answers one frame on fd 1. After every execution it kills every other process
in the namespace and reaps them. As PID 1 it cannot be killed from inside the namespace, and
it marks itself non-dumpable so the code (same uid) cannot ptrace it or read its memory.

Every execution, in both modes, first enters namespaces of its own (:func:`enter_execution`):
a mount namespace with fresh, size-limited tmpfs mounts on /tmp and /dev/shm, and a fresh
IPC namespace (System V and POSIX message queues, shared memory, semaphores). When the
execution's processes are gone the kernel frees all of it, so nothing one execution leaves
can be seen by the next and there is nothing to wipe. Then it drops every capability (the
sandbox keeps CAP_SYS_ADMIN in its user namespace only to make those mounts) and installs a
seccomp filter (:data:`DENIED_SYSCALLS`) before the code runs.
"""

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback
from typing import Any, NoReturn

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
CONTROL_IN, CONTROL_OUT = 100, 101
SCRATCH = ("/tmp", "/dev/shm")
SCRATCH_INODES = 32768  # per tmpfs: bounds the kernel memory a tree of empty files or folders can take
_SYSTEM_ERROR_EXIT = 71  # the code never started: the host classifies this as system_error

# What untrusted code never needs, denied with EPERM: debugging and reading other processes,
# the kernel keyring, BPF, every way to change the mount table, namespaces, or the machine
# (modules, reboot, clocks, swap, host names), io_uring (a large kernel surface), perf, and
# handle-based opens. clone() is refused when it asks for a new namespace; clone3 answers
# ENOSYS so that the C library falls back to clone(), whose flags the filter can read.
# Everything else is allowed; the capabilities are gone anyway, so this bounds the kernel
# code that is reachable, not what the code may do.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "mount", "umount2", "pivot_root", "chroot", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "open_tree", "mount_setattr", "unshare", "setns", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct",
    "quotactl", "quotactl_fd", "syslog", "open_by_handle_at", "name_to_handle_at", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "lookup_dcookie", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "sethostname", "setdomainname", "iopl", "ioperm", "modify_ldt", "vhangup", "uselib", "ustat",
    "sysfs", "_sysctl", "fanotify_init", "personality",
)  # fmt: skip
# Syscall numbers (from the kernel's unistd headers); a name an architecture lacks is absent.
_SYSCALL_NUMBERS = {
    "x86_64": dict(
        ptrace=101,
        process_vm_readv=310,
        process_vm_writev=311,
        kcmp=312,
        keyctl=250,
        add_key=248,
        request_key=249,
        bpf=321,
        perf_event_open=298,
        userfaultfd=323,
        mount=165,
        umount2=166,
        pivot_root=155,
        chroot=161,
        move_mount=429,
        fsopen=430,
        fsconfig=431,
        fsmount=432,
        fspick=433,
        open_tree=428,
        mount_setattr=442,
        unshare=272,
        setns=308,
        kexec_load=246,
        kexec_file_load=320,
        init_module=175,
        finit_module=313,
        delete_module=176,
        reboot=169,
        swapon=167,
        swapoff=168,
        acct=163,
        quotactl=179,
        quotactl_fd=443,
        syslog=103,
        open_by_handle_at=304,
        name_to_handle_at=303,
        io_uring_setup=425,
        io_uring_enter=426,
        io_uring_register=427,
        lookup_dcookie=212,
        settimeofday=164,
        clock_settime=227,
        clock_adjtime=305,
        adjtimex=159,
        sethostname=170,
        setdomainname=171,
        iopl=172,
        ioperm=173,
        modify_ldt=154,
        vhangup=153,
        uselib=134,
        ustat=136,
        sysfs=139,
        _sysctl=156,
        fanotify_init=300,
        personality=135,
        clone=56,
        clone3=435,
    ),
    "aarch64": dict(
        ptrace=117,
        process_vm_readv=270,
        process_vm_writev=271,
        kcmp=272,
        keyctl=219,
        add_key=217,
        request_key=218,
        bpf=280,
        perf_event_open=241,
        userfaultfd=282,
        mount=40,
        umount2=39,
        pivot_root=41,
        chroot=51,
        move_mount=429,
        fsopen=430,
        fsconfig=431,
        fsmount=432,
        fspick=433,
        open_tree=428,
        mount_setattr=442,
        unshare=97,
        setns=268,
        kexec_load=104,
        kexec_file_load=294,
        init_module=105,
        finit_module=273,
        delete_module=106,
        reboot=142,
        swapon=224,
        swapoff=225,
        acct=89,
        quotactl=60,
        quotactl_fd=443,
        syslog=116,
        open_by_handle_at=265,
        name_to_handle_at=264,
        io_uring_setup=425,
        io_uring_enter=426,
        io_uring_register=427,
        lookup_dcookie=18,
        settimeofday=170,
        clock_settime=112,
        clock_adjtime=266,
        adjtimex=171,
        sethostname=161,
        setdomainname=162,
        vhangup=58,
        fanotify_init=262,
        personality=92,
        clone=220,
        clone3=435,
    ),
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000
_CLONE_NEW_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_CLONE_NEWNS, _CLONE_NEWIPC = 0x00020000, 0x08000000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 2, 4, 0x4000, 0x40000
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_libc = ctypes.CDLL(None, use_errno=True)


def seccomp_program(machine: str) -> bytes:
    """The classic-BPF seccomp filter for ``machine`` (``os.uname().machine``).

    Raises:
        OSError: no syscall table for this architecture (the sandbox refuses to run code).
    """
    if machine not in _SYSCALL_NUMBERS:
        raise OSError(f"no seccomp syscall table for {machine}")
    numbers = _SYSCALL_NUMBERS[machine]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, deny, enosys = "allow", "deny", "enosys"
    # (code, jump-if-true, jump-if-false, k); jumps name a label, resolved to offsets below.
    program: list[tuple[int, object, object, int]] = [(ld, 0, 0, 4), (jeq, 1, 0, _AUDIT_ARCH[machine])]
    program.append((ret, 0, 0, 0x80000000))  # another ABI (i386, x32 entry): kill the process
    program.append((ld, 0, 0, 0))
    if machine == "x86_64":
        program.append((jge, deny, 0, _X32_SYSCALL_BIT))
    program += [(jeq, deny, 0, numbers[name]) for name in DENIED_SYSCALLS if name in numbers]
    program.append((jeq, enosys, 0, numbers["clone3"]))
    program.append((jeq, 0, allow, numbers["clone"]))
    program.append((ld, 0, 0, 16))  # clone's flags: the low 32 bits of args[0]
    program.append((jset, deny, allow, _CLONE_NEW_NAMESPACES))
    labels = {allow: len(program), deny: len(program) + 1, enosys: len(program) + 2}
    program += [(ret, 0, 0, 0x7FFF0000), (ret, 0, 0, 0x00050000 | 1), (ret, 0, 0, 0x00050000 | 38)]

    def offset(index: int, target: object) -> int:
        return labels[target] - index - 1 if isinstance(target, str) else int(target)  # type: ignore[call-overload]

    return b"".join(
        struct.pack("<HBBI", code, offset(i, yes), offset(i, no), k) for i, (code, yes, no, k) in enumerate(program)
    )


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def install_seccomp(program: bytes) -> None:
    """Apply ``program`` to this process and every process it starts; it cannot be removed."""
    fprog = _SockFprog(len(program) // 8, program)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _raise_errno("prctl(NO_NEW_PRIVS)")
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        _raise_errno("prctl(SECCOMP)")


def enter_execution(scratch_bytes: int) -> None:
    """Namespaces of this execution's own: fresh /tmp and /dev/shm, fresh IPC; then no capabilities."""
    if _libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC) != 0:
        _raise_errno("unshare")
    if _libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        _raise_errno("mount --make-rprivate /")
    options = f"size={scratch_bytes},nr_inodes={SCRATCH_INODES},mode=0700".encode()
    for target in SCRATCH:
        if _libc.mount(b"tmpfs", target.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
            _raise_errno(f"mount tmpfs on {target}")
    header = struct.pack("<Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    if _libc.capset(header, bytes(24)) != 0:  # effective, permitted, inheritable: all empty
        _raise_errno("capset")


def _raise_errno(what: str) -> NoReturn:
    errno = ctypes.get_errno()
    raise OSError(errno, f"{what}: {os.strerror(errno)}")


def isolated_or_exit(scratch_bytes: int) -> bytes:
    """Enter this execution's namespaces and return the seccomp program, or end as system_error."""
    try:
        enter_execution(scratch_bytes)
        return seccomp_program(os.uname().machine)
    except OSError as error:
        os.write(2, f"[adp] the sandbox could not isolate this execution: {error}\n".encode())
        os._exit(_SYSTEM_ERROR_EXIT)


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
    seccomp = isolated_or_exit(request["scratch_bytes"])
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

    run_code(request["code"], status_w, seccomp)


def run_code(source: str, status_fd: int, seccomp: bytes) -> NoReturn:
    """Install ``seccomp``, run ``source`` as ``__main__`` and say on ``status_fd`` how it ended.
    Never returns.

    The protocol both sandboxes share: "started", then "compile_error", "runtime_error" or
    "ok", one per line; the host classifies from these and the exit status, not from stderr.
    """

    def report(word: str) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(status_fd, word.encode() + b"\n")

    try:
        install_seccomp(seccomp)
    except OSError as error:
        os.write(2, f"[adp] cannot install the seccomp filter: {error}\n".encode())
        os._exit(_SYSTEM_ERROR_EXIT)
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
        traceback.print_exception(type(error), error, error.__traceback__.tb_next if error.__traceback__ else None)
        report("runtime_error")
        os._exit(1)
    report("ok")
    os._exit(0)


def run_once(status_fd: int, scratch_bytes: int) -> NoReturn:
    """The one-shot mode of the launch-per-execution sandbox: the code comes on stdin."""
    source = sys.stdin.buffer.read().decode("utf-8", "replace")
    os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    run_code(source, status_fd, isolated_or_exit(scratch_bytes))


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
    kill_everything_else()  # with the last of them, the kernel frees the execution's tmpfs and IPC
    for fd in buffers:
        os.close(fd)
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
        run_once(int(sys.argv[2]), int(sys.argv[3]))
    main()

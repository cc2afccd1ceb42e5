"""The code runner inside every sandbox, stdlib only; runs INSIDE bubblewrap.

``zygote.py once FD SCRATCH_BYTES`` runs one piece of code from stdin as PID 1 (the
launch-per-execution sandbox). ``zygote.py`` alone is the warm sandbox's resident process:
it reads one request per frame from fd 0 (4-byte big-endian length + JSON), forks a child per
execution, and answers one frame on fd 1. After every execution it kills every other process
in the namespace and reaps them. As PID 1 it cannot be killed from inside the namespace, and
it marks itself non-dumpable so the code (same uid) cannot ptrace it or read its memory.

An execution may be a *check* (verification): the request carries the task's tests and a
nonce, the code is the solution, and :func:`run_check` runs the solution, then the tests, and
writes ``checked:<nonce>`` on the status channel only after the last test. The host counts a
check as passed on that evidence alone, never on an exit status (see :func:`run_check`).

Every execution, in both modes, first enters namespaces of its own (:func:`enter_execution`):
a mount namespace with fresh, size-limited tmpfs mounts on /tmp and /dev/shm, and a fresh
IPC namespace (System V and POSIX message queues, shared memory, semaphores). When the
execution's processes are gone the kernel frees all of it, so nothing one execution leaves
can be seen by the next and there is nothing to wipe. Then it drops every capability (the
sandbox keeps CAP_SYS_ADMIN in its user namespace only to make those mounts) and installs a
seccomp filter (:data:`DENIED_SYSCALLS`) before the code runs.
"""

import ast
import builtins
import contextlib
import ctypes
import gc
import json
import linecache
import operator
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from types import CodeType
from typing import Any, NoReturn

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
CONTROL_IN, CONTROL_OUT = 100, 101
SCRATCH = ("/tmp", "/dev/shm")
SCRATCH_INODES = 32768  # per tmpfs: bounds the kernel memory a tree of empty files or folders can take
_SYSTEM_ERROR_EXIT = 71  # the code never started: the host classifies this as system_error
EVIDENCE_PREFIX = "checked:"
# Imported before a check's solution runs, so that what it does to them is undone before the
# tests run (see run_check); the modules tests commonly use.
CHECK_MODULES = (
    "math", "cmath", "re", "string", "collections", "itertools", "functools", "operator", "heapq", "bisect",
    "copy", "fractions", "decimal", "statistics", "random", "typing", "json", "datetime", "enum", "dataclasses",
    "unittest",
)  # fmt: skip
_ARITHMETIC_METHODS = (
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__matmul__", "__rmatmul__",
    "__truediv__", "__rtruediv__", "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__", "__rpow__",
    "__lshift__", "__rlshift__", "__rshift__", "__rrshift__", "__or__", "__ror__", "__xor__", "__rxor__",
    "__and__", "__rand__", "__abs__", "__neg__", "__pos__", "__round__", "__int__", "__float__", "__index__",
)  # fmt: skip
_OPERATOR_NAMES = {
    "==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "is": "is_", "is not": "is_not",
    "+": "add", "-": "sub", "*": "mul", "@": "matmul", "/": "truediv", "//": "floordiv", "%": "mod", "**": "pow",
    "<<": "lshift", ">>": "rshift", "|": "or_", "^": "xor", "&": "and_",
}  # fmt: skip
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by Python code, whose methods can be replaced
# The methods a comparison or a truth test calls on its operands.
_COMPARED_METHODS = (
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__len__", "__contains__", "__hash__",
)  # fmt: skip

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
# Calls that may change another process of the same uid (its limits, priority, scheduling): the
# code may apply them to itself only (a pid of 0), never to the sandbox's init, whose lowered
# limits would kill it or break the executions after this one. (name, index of the pid argument)
_OWN_PROCESS_ONLY = (
    ("prlimit64", 0), ("setpriority", 1), ("sched_setaffinity", 0), ("sched_setscheduler", 0),
    ("sched_setparam", 0), ("sched_setattr", 0), ("ioprio_set", 1),
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
        prlimit64=302,
        setpriority=141,
        sched_setaffinity=203,
        sched_setscheduler=144,
        sched_setparam=142,
        sched_setattr=314,
        ioprio_set=251,
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
        prlimit64=261,
        setpriority=140,
        sched_setaffinity=122,
        sched_setscheduler=119,
        sched_setparam=118,
        sched_setattr=274,
        ioprio_set=30,
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
    for name, argument in _OWN_PROCESS_ONLY:  # the syscall's pid argument must be 0: this process
        program += [(jeq, 0, 2, numbers[name]), (ld, 0, 0, 16 + 8 * argument), (jeq, allow, deny, 0)]
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
    check = take_check(request)
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

    run_code(request.pop("code"), status_w, seccomp, check)


def take_check(request: dict[str, Any]) -> tuple[str, int] | None:
    """The check's tests, and a pipe holding its nonce; the nonce leaves the request.

    The harness reads the nonce from the pipe only after the last test, so while the checked
    code runs the nonce is in no Python object it could find.
    """
    check = request.pop("check", None)
    if check is None:
        return None
    read_end, write_end = os.pipe()
    os.write(write_end, check.pop("nonce").encode())
    os.close(write_end)
    return check["tests"], read_end


def run_code(source: str, status_fd: int, seccomp: bytes, check: tuple[str, int] | None = None) -> NoReturn:
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
        code = compile(source, "<code>" if check is None else "<solution>", "exec")
    except (SyntaxError, ValueError) as error:
        sys.stderr.write("".join(traceback.format_exception_only(type(error), error)))
        report("compile_error")
        os._exit(1)
    if check is not None:
        remember_source("<solution>", source)
    del source
    if check is not None:
        run_check(code, check[0], check[1], status_fd)
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


def run_check(solution: CodeType, tests: str, nonce_fd: int, status_fd: int) -> NoReturn:
    """Run ``solution`` as the module ``solution``, then ``tests`` in its namespace; write the
    evidence only once the last test has run. Never returns.

    The solution shares this process, so the verdict rests on what it cannot reach: everything
    the harness calls is bound before the solution runs; what the solution did to the
    interpreter while loading is undone before the tests (modules it imported or replaced, the
    dicts of the modules and classes loaded before it, builtins, tracing); the tests get
    builtins of their own and refuse a solution that rebinds a builtin or module name they use;
    every exit (SystemExit of any code, ``os._exit``, a signal, an exec) ends without evidence;
    and the evidence needs the nonce, read from its pipe only after the tests. The tests'
    comparisons, truth tests, arithmetic and reducing builtins refuse a value whose methods are
    the solution's Python code where it meets native data (:class:`_Guards`), and tests that run
    no assert and no unittest test prove nothing. Code written against this harness that reads
    its memory or descriptors (ctypes, frames, the nonce's pipe) is beyond any in-process check.
    """
    read, write, exit_now, run, suppressed = os.read, os.write, os._exit, exec, BaseException
    extract_tb, format_list, format_exception_only = (
        traceback.extract_tb,
        traceback.format_list,
        traceback.format_exception_only,
    )
    stdout, stderr, harness_file = sys.stdout, sys.stderr, __file__  # a failure shows the tests' and code's frames
    evidence = EVIDENCE_PREFIX.encode()
    tests_source = tests

    def flush() -> None:
        for stream in (stdout, stderr):
            try:  # noqa: SIM105 - not contextlib.suppress: a class of Python code, which the solution can patch
                stream.flush()
            except suppressed:
                pass

    def fail(message: str) -> NoReturn:
        flush()
        try:
            write(2, message.encode("utf-8", "backslashreplace"))
            write(status_fd, b"runtime_error\n")
        finally:
            exit_now(1)

    def fail_with(error: BaseException) -> NoReturn:
        # The tests' lines enter linecache only now: the solution must not read their expectations.
        remember_source("<tests>", tests_source)
        frames = [frame for frame in extract_tb(error.__traceback__) if frame.filename != harness_file]
        fail("".join(["Traceback (most recent call last):\n", *format_list(frames), *format_exception_only(error)]))

    try:
        for name in CHECK_MODULES:
            with contextlib.suppress(ImportError):
                __import__(name)
        tree, names_used, module_names, test_functions = strict_tests(tests)
        tests_code = compile(tree, "<tests>", "exec")
    except (SyntaxError, ValueError) as error:
        fail("[adp] the task's python_tests do not compile: " + "".join(traceback.format_exception_only(error)))
    del tests
    sys.settrace = sys.setprofile = _refuse_tracing
    gc.callbacks.clear()
    before = _Interpreter(_ZYGOTE_CLASSES)
    module = type(sys)("solution")
    namespace = vars(module)
    namespace["__builtins__"] = builtins
    sys.modules["solution"] = module  # `from solution import f` works, and pickling its classes
    try:
        run(solution, namespace)
        before.restore(keep=module)
        rebound = [
            name
            for name in names_used
            if name in namespace and not name.startswith("__") and before.rebinds(name, namespace[name], module_names)
        ]
        if rebound:
            fail(
                f"[adp] the solution rebinds {', '.join(sorted(rebound))}, which the tests use as a builtin or "
                "module: the check cannot tell whose code it would run\n"
            )
        guards = _Guards(before, namespace, names_used)
        namespace["__builtins__"] = {**before.builtins, **guards.names()}
        namespace["__name__"] = "__main__"  # the tests as the script they were written as
        sys.modules["__main__"] = module
        run(tests_code, namespace)
        if not guards.activity:
            for name in test_functions:  # pytest-style tests the file never called
                guards.test_function(namespace[name])
            guards.run_unittests()
        if not guards.activity:
            fail("[adp] the tests ran no assert and no unittest test: they check nothing\n")
    except SystemExit as exit:
        fail(f"[adp] the check ended with SystemExit({exit.code!r}) before its last test: an exit proves nothing\n")
    except BaseException as error:
        fail_with(error)
    flush()
    try:
        write(status_fd, evidence + read(nonce_fd, 256) + b"\nok\n")
    finally:
        exit_now(0)


def remember_source(name: str, source: str) -> None:
    """Let a failure's traceback show the line of the solution or test that failed."""
    linecache.cache[name] = (len(source), None, source.splitlines(keepends=True), name)


def _refuse_tracing(*_: object) -> NoReturn:
    raise RuntimeError("[adp] tracing and profiling are off while a check runs")


_type_dict = type.__dict__["__dict__"].__get__
_type_flags = type.__dict__["__flags__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_subclasses = type.__dict__["__subclasses__"]
_FunctionType = type(_refuse_tracing)
_MISSING = object()


def known_classes() -> dict[int, tuple[type, dict[str, Any]]]:
    """Every class there is now (by id), with its own dict if Python code made it."""
    classes: dict[int, tuple[type, dict[str, Any]]] = {}
    pending: list[type] = [object]
    while pending:
        cls = pending.pop()
        if id(cls) in classes:
            continue
        classes[id(cls)] = (cls, dict(_type_dict(cls)) if _type_flags(cls) & _HEAPTYPE else {})
        pending.extend(_type_subclasses(cls))
    return classes


# The warm sandbox's zygote takes this once, after loading CHECK_MODULES: a forked check needs
# not walk every class again (nothing between the fork and the check makes or changes one).
_ZYGOTE_CLASSES: dict[int, tuple[type, dict[str, Any]]] | None = None


class _Interpreter:
    """What the interpreter held before the solution ran, to undo what it changes and to tell
    the classes whose methods are trusted (built in, or Python code loaded before it, unchanged)."""

    def __init__(self, classes: dict[int, tuple[type, dict[str, Any]]] | None = None) -> None:
        self._is = operator.is_  # bound now: the solution may patch the operator module
        self.modules = dict(sys.modules)
        self.module_dicts = {
            name: (vars(module), dict(vars(module)))
            for name, module in self.modules.items()
            if type(vars(module)) is dict
        }
        self.builtins = dict(vars(builtins))
        self.classes = known_classes() if classes is None else classes
        self.path, self.meta_path = list(sys.path), list(sys.meta_path)

    def restore(self, keep: object) -> None:
        """Undo the solution's changes to modules, classes, builtins and the import system."""
        for name in [name for name in sys.modules if name not in self.modules]:
            if sys.modules[name] is not keep:
                del sys.modules[name]
        sys.modules.update(self.modules)
        for current, saved in self.module_dicts.values():
            if self._unchanged(current, saved):
                continue
            for name in [name for name in current if name not in saved]:
                del current[name]
            current.update(saved)
        for cls, saved in self.classes.values():
            if saved and not self._unchanged(current := _type_dict(cls), saved):
                for name in [name for name in current if name not in saved]:
                    type.__delattr__(cls, name)
                for name, value in saved.items():
                    if current.get(name, _MISSING) is not value:
                        type.__setattr__(cls, name, value)
        sys.path[:], sys.meta_path[:] = self.path, self.meta_path
        gc.callbacks.clear()

    def _unchanged(self, current: Mapping[str, object], saved: dict[str, object]) -> bool:
        """Whether ``current`` holds ``saved``'s keys and values in order, by identity: quick
        (C-level), and it asks no ``==`` or hash of what the solution may have put there."""
        same = self._is
        return (
            len(current) == len(saved)
            and all(map(same, current, saved))
            and all(map(same, current.values(), saved.values()))
        )

    def rebinds(self, name: str, value: object, module_names: set[str]) -> bool:
        """Whether the solution bound ``name``, a builtin's name or (in ``module_names``) a loaded
        module's name, to something else."""
        if name in self.builtins and value is not self.builtins[name]:
            return True
        return name in module_names and name in self.modules and value is not self.modules[name]

    def trusted(self, cls: type, method: str) -> bool:
        """Whether ``cls`` finds ``method`` in a built-in class, or in a class loaded before the
        solution whose method is unchanged."""
        for klass in _type_mro(cls):
            own = _type_dict(klass)
            if method in own:
                if not _type_flags(klass) & _HEAPTYPE:
                    return True
                known = self.classes.get(id(klass))
                return known is not None and known[0] is klass and known[1].get(method, _MISSING) is own[method]
        return True


_COMPARISONS = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}  # fmt: skip
_ARITHMETIC = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.MatMult: "@", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
}  # fmt: skip
# Builtins that compare, add or test the truth of what they are given: in the tests they are
# the guarded versions (see _Guards).
_GUARDED_BUILTINS = ("all", "any", "bool", "filter", "sum", "min", "max", "sorted", "abs", "round", "int", "float")


class _StrictTests(ast.NodeTransformer):
    """Routes the tests through the guards (``__adp_*__`` names): their comparisons, truth
    tests, arithmetic and reducing builtins; the names they take from the solution (by
    ``__adp_get__``, at each use); and their imports, which bind private copies of the modules
    as they were before the solution ran, under names the solution does not use."""

    def __init__(self, used: set[str], imported: set[str]) -> None:
        self.used, self.imported = used, imported

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        ops = ast.Tuple([ast.Constant(_COMPARISONS[type(op)]) for op in node.ops], ast.Load())
        return _call("__adp_compare__", ops, node.left, *node.comparators, like=node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        return _call("__adp_arithmetic__", ast.Constant(_ARITHMETIC[type(node.op)]), node.left, node.right, like=node)

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        self.generic_visit(node)
        node.test = _call("__adp_asserted__", node.test, like=node.test)
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            node.operand = _call("__adp_truth__", node.operand, like=node.operand)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        node.values = [_call("__adp_truth__", value, like=value) for value in node.values]
        return node

    def _test(self, node: ast.If | ast.While | ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        node.test = _call("__adp_truth__", node.test, like=node.test)
        return node

    visit_If = visit_While = visit_IfExp = _test

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.imported:
            return ast.copy_location(ast.Name(_private_name(node.id), node.ctx), node)
        if isinstance(node.ctx, ast.Load) and node.id in self.used:
            return _call("__adp_get__", ast.Constant(node.id), like=node)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        if node.arg in self.imported:
            node.arg = _private_name(node.arg)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "main" and _named(func.value, "unittest"):
            return _call("__adp_unittest__", like=node)  # run by the harness, which counts them
        if isinstance(func, ast.Name) and func.id in _GUARDED_BUILTINS and func.id in self.used:
            node.func = ast.copy_location(ast.Name(f"__adp_{func.id}__", ast.Load()), func)
            node.args = [self.visit(arg) for arg in node.args]
            node.keywords = [self.visit(keyword) for keyword in node.keywords]
            return node
        self.generic_visit(node)
        return node

    def visit_Import(self, node: ast.Import) -> list[ast.stmt]:
        statements: list[ast.stmt] = []
        for alias in node.names:
            target, whole = (alias.asname, True) if alias.asname else (alias.name.split(".")[0], False)
            module = _call("__adp_import__", ast.Constant(alias.name), ast.Constant(whole), like=node)
            statements.append(ast.Assign([ast.Name(_private_name(target), ast.Store())], module))
        return [ast.copy_location(statement, node) for statement in statements]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | list[ast.stmt]:
        if node.level or node.module is None or any(alias.name == "*" for alias in node.names):
            return node
        return [
            ast.copy_location(
                ast.Assign(
                    [ast.Name(_private_name(alias.asname or alias.name), ast.Store())],
                    _call("__adp_from__", ast.Constant(node.module), ast.Constant(alias.name), like=node),
                ),
                node,
            )
            for alias in node.names
        ]


def _private_name(name: str) -> str:
    return f"__adp_tests_{name}__"


def _named(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _call(name: str, *args: ast.expr, like: ast.AST) -> ast.expr:
    return ast.copy_location(ast.Call(ast.Name(name, ast.Load()), list(args), []), like)


def strict_tests(tests: str) -> tuple[ast.Module, set[str], set[str], list[str]]:
    """``tests`` rewritten by :class:`_StrictTests`; the names they use without binding them,
    those of these they use as a module (``name.attribute``), and their ``test*`` functions."""
    tree = ast.parse(tests, "<tests>")
    bound: set[str] = set()
    loaded: set[str] = set()
    imported: set[str] = set()
    attribute_bases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import):
            imported.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module is not None:
            imported.update(alias.asname or alias.name for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            attribute_bases.add(node.value.id)
    tests_functions = [
        node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test")
    ]
    used = loaded - bound - imported
    _StrictTests(used, imported).visit(tree)
    return ast.fix_missing_locations(tree), used, used & attribute_bases, tests_functions


class _Guards:
    """What the rewritten tests call. Where a value meets native data — compared with it, in
    arithmetic with it, asserted, or reduced by a builtin — its comparison, truth and
    arithmetic methods must be trusted (built in, or Python code loaded before the solution
    and unchanged), or it must be an object of a class the tests name (what they test). So an
    object whose ``__eq__`` says yes to anything fails where a test compares it with 9, while
    ``Stack() == Stack()`` still asks the solution's ``Stack``. Everything is bound now, before
    the solution's code runs again."""

    def __init__(self, before: _Interpreter, namespace: dict[str, Any], names_used: set[str]) -> None:
        self.activity = 0
        self._before = before
        self._unittest = before.modules.get("unittest")
        self._namespace = namespace
        # ids of the solution's classes the tests name (by identity: a metaclass could answer any
        # issubclass() or == it is asked)
        self._tested = {id(v) for n, v in namespace.items() if n in names_used and isinstance(v, type)}
        self._ran_unittests = False

    def names(self) -> dict[str, Any]:
        """The tests' ``__adp_*__`` builtins, closures over the originals."""
        trusted, type_of, is_subclass, identity, type_mro = self._before.trusted, type, issubclass, id, _type_mro
        tested, guards, error = self._tested, self, AssertionError
        compared, arithmetic_methods = _COMPARED_METHODS, _ARITHMETIC_METHODS
        containers: list[tuple[type, Callable[[Any], Iterable[object]]]] = [
            (list, list.__iter__), (tuple, tuple.__iter__), (set, set.__iter__), (frozenset, frozenset.__iter__),
            (dict, dict.items),
        ]  # fmt: skip
        real = {name: self._before.builtins[name] for name in _GUARDED_BUILTINS}
        contains = operator.contains
        operations: dict[str, Callable[[Any, Any], Any]] = {
            op: getattr(operator, name) for op, name in _OPERATOR_NAMES.items() if name
        }
        operations["in"] = lambda item, container: contains(container, item)
        operations["not in"] = lambda item, container: not contains(container, item)
        scalars = {id(cls) for cls in (int, float, complex, str, bytes, bool, type(None))}  # ids: no hash or == asked

        def walk(value: object, methods: tuple[str, ...], allow_tested: bool) -> type | None:
            """The first class met in ``value`` (and what it holds) with an untrusted method."""
            pending, seen, verdicts = [value], set(), dict[int, bool]()
            while pending:
                item = pending.pop()
                cls = type_of(item)
                if identity(cls) in scalars:
                    continue
                if allow_tested and any(identity(klass) in tested for klass in type_mro(cls)):
                    continue
                verdict = verdicts.get(identity(cls))
                if verdict is None:
                    verdict = verdicts[identity(cls)] = all([trusted(cls, method) for method in methods])
                if not verdict:
                    return cls
                for container, items in containers:
                    if is_subclass(cls, container) and identity(item) not in seen:
                        seen.add(identity(item))
                        pending.extend(items(item))
            return None

        def refuse(cls: type, where: str) -> None:
            raise error(
                f"[adp] {where} a {cls.__qualname__} whose methods are the solution's code, not native data: "
                "the check cannot trust what it answers"
            )

        def meet(left: object, right: object, methods: tuple[str, ...], where: str) -> None:
            for one, other in ((left, right), (right, left)):
                if walk(one, methods, False) is None and (cls := walk(other, methods, True)) is not None:
                    refuse(cls, where)

        def compare(ops: tuple[str, ...], *operands: object) -> object:
            result: object = True
            for op, left, right in zip(ops, operands, operands[1:], strict=False):
                if op in ("in", "not in"):
                    if walk(right, compared, False) is None and (cls := walk(left, compared, True)) is not None:
                        refuse(cls, "a test looks for")
                elif op not in ("is", "is not"):  # identity asks no method
                    meet(left, right, compared, "a test compares native data with")
                result = operations[op](left, right)
                if not truth(result):
                    return result
            return result

        def arithmetic(op: str, left: object, right: object) -> object:
            meet(left, right, arithmetic_methods, "a test does arithmetic of native data with")
            return operations[op](left, right)

        def truth(value: object) -> object:
            cls = type_of(value)
            if identity(cls) in scalars or (tested and any(identity(klass) in tested for klass in type_mro(cls))):
                return value
            if not (trusted(cls, "__bool__") and trusted(cls, "__len__")):
                refuse(cls, "a test asks the truth of")
            return value

        def asserted(value: object) -> object:
            guards.activity += 1
            return truth(value)

        def checked(value: object) -> object:
            if (cls := walk(value, compared + arithmetic_methods, True)) is not None:
                refuse(cls, "a test reduces")
            return value

        def each(iterable: Iterable[object], check: Callable[[object], object]) -> Iterable[object]:
            return (check(item) for item in iterable)

        def guarded(name: str) -> Callable[..., object]:
            builtin = real[name]
            if name in ("all", "any"):
                return lambda iterable: builtin(each(iterable, truth))
            if name == "bool":
                return lambda *args: builtin(*(truth(a) for a in args))
            if name == "filter":
                return lambda f, it: builtin(lambda x: truth(x if f is None else f(x)), it)
            if name in ("sum", "sorted"):
                return lambda iterable, *a, **k: builtin(each(iterable, checked), *a, **k)
            if name in ("min", "max"):
                return lambda *a, **k: builtin(*(each(a[0], checked) if len(a) == 1 else map(checked, a)), **k)
            return lambda value, *a, **k: builtin(checked(value), *a, **k)  # abs, round, int, float

        namespace, builtins_before, function_type = self._namespace, self._before.builtins, _FunctionType
        module_dicts, modules, module_type, load = self._before.module_dicts, sys.modules, type(sys), __import__
        wrappers: dict[int, tuple[object, Callable[..., Any]]] = {}
        private: dict[str, Any] = {}
        name_error, wrap = NameError, self.function

        def get(name: str) -> object:
            """The solution's ``name`` now (its functions guarded), else the builtin."""
            if name in namespace:
                value = namespace[name]
            elif name in builtins_before:
                return builtins_before[name]
            else:
                raise name_error(f"name {name!r} is not defined")
            if type_of(value) is function_type and value.__globals__ is namespace:
                known = wrappers.get(identity(value))
                if known is None or known[0] is not value:
                    known = wrappers[identity(value)] = (value, wrap(value))
                return known[1]
            return value

        def private_module(name: str) -> Any:
            """A module of the tests' own: a copy of the module as it was before the solution ran."""
            if name == "solution":
                return modules[name]
            if name not in private:
                copy = private[name] = module_type(name)
                saved = module_dicts.get(name)
                vars(copy).update(saved[1] if saved is not None else vars(modules[name]))
            return private[name]

        def import_module(name: str, whole: bool) -> Any:
            load(name)
            return private_module(name if whole else name.split(".")[0])

        def import_from(module: str, name: str) -> object:
            load(module, None, None, [name])
            if module == "solution":
                return get(name)
            attributes = vars(private_module(module))
            return attributes[name] if name in attributes else getattr(modules[module], name)

        names: dict[str, Any] = {f"__adp_{name}__": guarded(name) for name in _GUARDED_BUILTINS}
        names.update(__adp_get__=get, __adp_import__=import_module, __adp_from__=import_from)
        names.update(
            __adp_compare__=compare,
            __adp_arithmetic__=arithmetic,
            __adp_truth__=truth,
            __adp_asserted__=asserted,
            __adp_unittest__=self.run_unittests,
        )
        return names

    def function(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` with a StopIteration it raises turned into a failure (as PEP 479 does
        for generators): map(), zip() and for-loops would take it for the end of their data."""
        runtime_error = RuntimeError

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except StopIteration as stop:
                raise runtime_error(f"[adp] {function.__name__} raised StopIteration") from stop

        guarded.__name__, guarded.__qualname__, guarded.__doc__ = (
            function.__name__,
            function.__qualname__,
            function.__doc__,
        )
        guarded.__wrapped__ = function  # type: ignore[attr-defined]
        return guarded

    def test_function(self, function: Callable[[], object]) -> None:
        function()

    def run_unittests(self, *_: object, **__: object) -> None:
        """Run the tests' unittest.TestCase classes once, counting them; a failure fails the check."""
        if self._ran_unittests or self._unittest is None:
            return
        self._ran_unittests = True
        unittest = self._unittest
        cases = [v for v in self._namespace.values() if isinstance(v, type) and issubclass(v, unittest.TestCase)]
        loader, suite = unittest.TestLoader(), unittest.TestSuite()
        for case in cases:
            suite.addTests(loader.loadTestsFromTestCase(case))
        result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1).run(suite)
        self.activity += result.testsRun
        if not result.wasSuccessful():
            raise AssertionError(f"[adp] unittest: {len(result.failures)} failed, {len(result.errors)} errors")


def run_once(status_fd: int, scratch_bytes: int) -> NoReturn:
    """The one-shot mode of the launch-per-execution sandbox: the request (JSON) comes on stdin."""
    request = json.loads(sys.stdin.buffer.read().decode("utf-8", "replace"))
    os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    check = take_check(request)
    run_code(request.pop("code"), status_fd, isolated_or_exit(scratch_bytes), check)


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
        "statuses": buffers[status_r].decode("utf-8", "replace").split(),  # the code can write there too
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
    global _ZYGOTE_CLASSES
    for name in CHECK_MODULES:  # once here, not in every check's child
        with contextlib.suppress(ImportError):
            __import__(name)
    _ZYGOTE_CLASSES = known_classes()
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

"""The sandbox's guarantees, each shown against the real bubblewrap."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import runtimes.sandbox
from runtimes.sandbox import DEFAULT_UID_BASE, SANDBOXES, ExecResult, ExecStatus, SandboxLimits, WarmSandbox
from tests.helpers import REPO, boot_seconds, sandbox_processes, wait_for

SLOTS = 2
SLOT_UIDS = set(range(DEFAULT_UID_BASE, DEFAULT_UID_BASE + SLOTS)) if os.geteuid() == 0 else {os.geteuid()}


Run = Callable[..., ExecResult]


@pytest.fixture(params=sorted(SANDBOXES))
def run(request: pytest.FixtureRequest) -> Run:
    """Execute code in a new sandbox of each kind, closed afterwards (so leftovers would show)."""

    def execute(code: str, **limits: float) -> ExecResult:
        async def go() -> ExecResult:
            sandbox = SANDBOXES[request.param](SLOTS)
            try:
                return await sandbox.exec_python(code, SandboxLimits(**limits))
            finally:
                await sandbox.aclose()

        return asyncio.run(go())

    return execute


# Another adp on the machine, as another checkout or a benchmark would be: it builds its sandboxes
# as every adp does (the default slot uids, the same as this module's) and keeps code running in
# them. Its launcher exits at once, so it is no descendant of the test process.
_ANOTHER_ADP = """
import asyncio, os, sys
if os.fork():
    os._exit(0)
from runtimes.sandbox import SandboxConfig, SandboxLimits
CODE = "import subprocess, time\\nsubprocess.Popen(['/usr/bin/sleep', '3600'])\\ntime.sleep(3600)"
async def main():
    sandbox = SandboxConfig().build(2)
    running = [asyncio.ensure_future(sandbox.exec_python(CODE, SandboxLimits(timeout=3600))) for _ in range(2)]
    print(os.getpid(), flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the test closes it, or ends
    for execution in running:
        execution.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    await sandbox.aclose()
asyncio.run(main())
"""


@dataclass(frozen=True)
class OtherAdp:
    pid: int
    processes: frozenset[tuple[int, str]]  # its sandboxes' processes, all running since it was ready

    def still_running(self) -> bool:
        return self.processes <= set(sandbox_processes(of=self.pid))


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the name: state, parent, group, ..., start time at [19]."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def _running(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


@pytest.fixture(scope="module")
def another_adp() -> Iterator[OtherAdp]:
    launcher = subprocess.Popen(
        [sys.executable, "-c", _ANOTHER_ADP], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert launcher.stdin and launcher.stdout
    with launcher.stdout:
        try:
            launcher.wait(timeout=30)
            line = launcher.stdout.readline()
            assert line, "the other adp did not start (its stderr is above)"
            pid = int(line)

            def code_runs() -> bool:
                return [name for _, name in sandbox_processes(of=pid)].count("sleep") == 2

            wait_for(code_runs, 60, "the other adp's sandboxes to run its code")
            yield OtherAdp(pid, frozenset(sandbox_processes(of=pid)))
        finally:
            launcher.stdin.close()  # it closes its sandboxes and ends
    wait_for(lambda: not _running(pid), 30, "the other adp to end")


@pytest.fixture
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """No process of this test's sandboxes outlives it, checked while another adp keeps sandboxes
    on the same slot uids running (they are not this test's: the check must not count them)."""
    if os.geteuid() != 0:
        pytest.skip("slot uids (and so this leak check) need root; CI runs as root")
    other: OtherAdp = request.getfixturevalue("another_adp")
    started = boot_seconds()
    assert sandbox_processes(since=started) == []
    yield
    assert sandbox_processes(since=started) == []
    assert other.still_running(), "the other adp's sandboxes ended: the check ran alone"


@pytest.mark.skipif(os.geteuid() != 0, reason="slot uids (and so this leak check) need root; CI runs as root")
def test_the_leftover_check_reports_this_tests_leaked_sandboxes_and_not_another_adps(another_adp: OtherAdp) -> None:
    # A pool left open is a leak: its sandboxes (a bwrap and its resident zygote each) outlive
    # their executions. The other adp's run on the same slot uids all along.
    async def go() -> tuple[list[tuple[int, str]], set[int], list[tuple[int, str]]]:
        sandbox = WarmSandbox(SLOTS)
        try:
            warmed = await asyncio.gather(*(sandbox.exec_python("print('warm')") for _ in range(SLOTS)))
            assert all(result.ok for result in warmed), warmed
            leaked = sandbox_processes()
            uids = {_uid(pid) for pid, _ in leaked}
        finally:
            await sandbox.aclose()
        return leaked, uids, sandbox_processes()

    leaked, uids, closed = asyncio.run(go())
    assert sorted(name for _, name in leaked) == ["bwrap", "bwrap", "python3", "python3"], leaked
    assert uids == SLOT_UIDS == {_uid(pid) for pid, _ in another_adp.processes}
    assert not another_adp.processes & set(leaked)
    assert closed == []
    assert another_adp.still_running()


@pytest.mark.skipif(os.geteuid() != 0, reason="slot uids (and so this leak check) need root; CI runs as root")
def test_the_leftover_check_reports_a_sandbox_whose_launcher_died(another_adp: OtherAdp) -> None:
    # Were bwrap to outlive the process that launched it (as without --die-with-parent), the leak
    # would hang under init, where nothing names its launcher: the check counts one that started
    # after the check's own start, not an older one (another adp's, say).
    uid = DEFAULT_UID_BASE
    sandbox = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "bwrap", "--ro-bind", "/usr", "/usr",
               "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev",
               "--unshare-all", "--unshare-user", "--as-pid-1", "/usr/bin/sleep", "600"]  # fmt: skip
    started = boot_seconds()
    launched = subprocess.run(
        ["/bin/sh", "-c", '"$@" >/dev/null 2>&1 & echo $!', "sh", *sandbox],
        capture_output=True, text=True, check=True, timeout=30, start_new_session=True,
    )  # fmt: skip
    bwrap = int(launched.stdout)
    group = os.getpgid(bwrap)
    assert group != os.getpgrp()
    try:

        def leaked() -> list[str]:
            return sorted(name for _, name in sandbox_processes(since=started))

        wait_for(lambda: leaked() == ["bwrap", "sleep"], 30, "the orphaned sandbox to run")
        orphans = sandbox_processes(since=started)
        assert bwrap in dict(orphans) and int(_stat(bwrap)[1]) != os.getpid()
        tick_started = int(_stat(bwrap)[19])
        ticks = os.sysconf("SC_CLK_TCK")
        assert sorted(sandbox_processes(since=(tick_started + 0.5) / ticks)) == sorted(orphans)
        assert sandbox_processes(since=(tick_started + 1.5) / ticks) == []
    finally:
        os.killpg(group, signal.SIGKILL)
    wait_for(lambda: not any(_running(pid) for pid, _ in orphans), 30, "the orphaned sandbox to end")


def test_code_runs_and_its_output_comes_back(run: Run) -> None:
    result = run("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert (result.status, result.stdout, result.stderr, result.exit_code) == (ExecStatus.OK, "out\n", "err\n", 0)


@pytest.mark.parametrize(
    ("code", "status", "stderr_ends"),
    [
        ("def f(:\n  pass", ExecStatus.COMPILE_ERROR, "SyntaxError: invalid syntax"),
        ("1/0", ExecStatus.RUNTIME_ERROR, "ZeroDivisionError: division by zero"),
        ("raise SystemExit(3)", ExecStatus.RUNTIME_ERROR, ""),
        ("raise SystemExit(0)", ExecStatus.OK, ""),
        # Words in the output do not change the classification.
        ("print('SyntaxError Timeout Traceback', file=__import__('sys').stderr)", ExecStatus.OK, "Traceback"),
    ],
)
def test_how_code_ended_is_classified_from_structured_signals(
    run: Run, code: str, status: ExecStatus, stderr_ends: str
) -> None:
    result = run(code)
    assert result.status is status
    assert result.stderr.strip().endswith(stderr_ends)


def test_no_network_a_host_server_gets_no_connection(run: Run) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        code = (
            "import socket\n"
            "for host in ('127.0.0.1', 'localhost', '10.0.2.2'):\n"
            "    try:\n"
            f"        socket.create_connection((host, {port}), timeout=1)\n"
            "        print('connected', host)\n"
            "    except OSError as error:\n"
            "        print('refused', host, type(error).__name__)\n"
        )
        result = run(code)
        # Make sure the client attempt (if any got through) has been accepted before judging.
        with socket.create_connection(("127.0.0.1", port)):
            deadline = time.monotonic() + 5
            while len(accepted) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert result.status is ExecStatus.OK
    assert "connected" not in result.stdout
    assert result.stdout.count("refused") == 3
    assert len(accepted) == 1  # only our own probe from the host


def test_no_host_files_are_visible(run: Run) -> None:
    home = os.path.expanduser("~")
    paths = ["/etc/shadow", "/etc/passwd", str(REPO / "README.md"), home, "/root", "/work", "/var/lib"]
    code = "import os\n" + "".join(
        f"try:\n    print({path!r}, 'GOT-IT', len(open({path!r}, 'rb').read()) if os.path.isfile({path!r}) "
        f"else os.listdir({path!r}))\nexcept OSError as e:\n    print({path!r}, type(e).__name__)\n"
        for path in paths
    )
    result = run(code)
    assert result.status is ExecStatus.OK, result.stderr
    assert "GOT-IT" not in result.stdout, result.stdout
    assert result.stdout.count("\n") == len(paths)


def test_host_environment_variables_are_invisible(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    result = run("import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ','rb').read())")
    assert result.status is ExecStatus.OK
    assert "sk-host-secret" not in result.stdout
    assert "OPENAI_API_KEY" not in result.stdout


def test_writes_outside_tmp_fail_and_tmp_is_private(run: Run) -> None:
    code = (
        "import os\n"
        "for path in ('/x', '/usr/x', '/bin/x', '/dev/shm/../x'):\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('WROTE', path)\n"
        "    except OSError as e:\n"
        "        print('denied', path, e.errno)\n"
        "open('/tmp/mine', 'w').write('ok')\n"
        "print(open('/tmp/mine').read())\n"
    )
    result = run(code)
    assert "WROTE" not in result.stdout, result.stdout
    assert result.stdout.count("denied") == 4
    assert result.stdout.endswith("ok\n")
    assert "No such file" in run("open('/tmp/mine')").stderr  # a fresh /tmp each time


def test_a_fork_bomb_is_contained(run: Run, no_leftovers: None) -> None:
    result = run("import os\nwhile True:\n    os.fork()", timeout=5)
    assert result.status in {ExecStatus.RUNTIME_ERROR, ExecStatus.TIMEOUT}
    assert "BlockingIOError" in result.stderr or result.status is ExecStatus.TIMEOUT


def test_a_4gb_allocation_fails_inside_the_sandbox(run: Run, no_leftovers: None) -> None:
    result = run("x = bytearray(4 * 1024 ** 3)\nprint(len(x))", memory_mb=256)
    assert result.status is ExecStatus.RUNTIME_ERROR
    assert result.stderr.strip().endswith("MemoryError")


def test_an_infinite_loop_times_out(run: Run, no_leftovers: None) -> None:
    started = time.monotonic()
    result = run("while True:\n    pass", timeout=1.5)
    assert result.status is ExecStatus.TIMEOUT
    assert time.monotonic() - started < 10
    assert "limit" in result.stderr


def test_a_sleeping_orphan_dies_with_the_execution(run: Run, no_leftovers: None) -> None:
    code = (
        "import os, subprocess\n"
        "subprocess.Popen(['/usr/bin/sleep', '1000'], start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    import time; time.sleep(1000)\n"
        "print('spawned')\n"
    )
    result = run(code)
    assert result.status is ExecStatus.OK and result.stdout == "spawned\n"


def test_output_is_capped_with_its_true_size_recorded(run: Run) -> None:
    result = run("print('x' * 200_000)", max_output_bytes=1024)
    assert result.status is ExecStatus.OK
    assert len(result.stdout) == 1024
    assert result.stdout_truncated_from == 200_001


def test_the_host_path_of_the_code_runner_is_not_visible(run: Run) -> None:
    # bwrap copies the runner in from a pipe, so it is readable by the slot uid wherever adp is
    # installed (a checkout under /root is 0700) and the mount table names no host folder.
    result = run(
        "for path in ('/proc/self/mountinfo', '/proc/1/mountinfo', '/proc/1/cmdline', '/proc/1/environ'):\n"
        "    try:\n"
        "        print(open(path, 'rb').read().decode(errors='replace'))\n"
        "    except OSError as error:\n"
        "        print(path, error.strerror)\n"
    )
    assert result.status is ExecStatus.OK, result.stderr
    host_folder = str(Path(runtimes.sandbox.__file__).parent)
    assert "/opt/adp/zygote.py" in result.stdout
    assert host_folder not in result.stdout and str(REPO) not in result.stdout and "adp-sandbox" not in result.stdout


_LEAVE_BEHIND = """
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs('/tmp/locked/inner')
open('/tmp/locked/inner/secret', 'w').write('x')
os.chmod('/tmp/locked/inner', 0)
os.chmod('/tmp/locked', 0)
open('/dev/shm/secret', 'w').write('x')
os.chmod('/dev/shm/secret', 0)
assert libc.msgget(4242, 0o1600) >= 0, ctypes.get_errno()  # IPC_CREAT | 0600
msgid = libc.msgget(4242, 0)
assert libc.msgsnd(msgid, ctypes.c_char_p(b'\\1\\0\\0\\0\\0\\0\\0\\0secret'), 6, 0) == 0, ctypes.get_errno()
assert libc.shmget(4243, 4096, 0o1600) >= 0, ctypes.get_errno()
assert libc.semget(4244, 1, 0o1600) >= 0, ctypes.get_errno()
assert libc.mq_open(b'/adp-left', os.O_CREAT | os.O_RDWR, 0o600, None) >= 0, ctypes.get_errno()
subprocess.Popen(['/usr/bin/sleep', '1000'], start_new_session=True)
import builtins; builtins.LEFT = 1
print('left')
"""
_LOOK_FOR_IT = """
import ctypes, os, builtins
libc = ctypes.CDLL(None, use_errno=True)
found = os.listdir('/tmp') + os.listdir('/dev/shm')
for kind in ('msg', 'shm', 'sem'):
    found += open(f'/proc/sysvipc/{kind}').read().splitlines()[1:]
for name, probe in [('msg', lambda: libc.msgget(4242, 0)), ('shm', lambda: libc.shmget(4243, 0, 0)),
                    ('sem', lambda: libc.semget(4244, 0, 0)), ('mq', lambda: libc.mq_open(b'/adp-left', os.O_RDWR))]:
    if probe() >= 0:
        found.append(name)
if hasattr(builtins, 'LEFT'):
    found.append('builtins')
print(found)
print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
"""


def test_nothing_of_one_warm_execution_is_visible_to_the_next() -> None:
    # Files in folders their owner locked (chmod 000), System V message queues, shared memory
    # and semaphores, POSIX message queues, processes: each execution has its own.
    async def go() -> list[ExecResult]:
        sandbox = WarmSandbox(1)
        try:
            return [await sandbox.exec_python(code) for code in (_LEAVE_BEHIND, _LOOK_FOR_IT, "import os, signal\n"
                    "os.kill(1, signal.SIGKILL)\nprint('still here')", "print('next')")]  # fmt: skip
        finally:
            await sandbox.aclose()

    left, look, killer, after = asyncio.run(go())
    assert left.ok and left.stdout == "left\n", left.stderr
    lines = look.stdout.splitlines()
    assert lines[0] == "[]", look.stdout
    assert len(eval(lines[1])) == 2  # the zygote (PID 1) and the code itself: no sleeping leftover
    assert killer.ok and after.stdout == "next\n"  # PID 1 cannot be killed from inside


def test_a_deep_directory_tree_costs_only_its_own_execution(run: Run) -> None:
    deep = "import os\nfor _ in range(5000):\n    os.mkdir('d')\n    os.chdir('d')\nprint('deep')\n"

    async def go(kind: str) -> list[ExecResult]:
        sandbox = SANDBOXES[kind](1)
        try:
            return [await sandbox.exec_python(code) for code in (deep, "import os\nprint(os.listdir('/tmp'))")]
        finally:
            await sandbox.aclose()

    for kind in sorted(SANDBOXES):
        made, after = asyncio.run(go(kind))
        assert made.ok and made.stdout == "deep\n", (kind, made.stderr)
        assert after.ok and after.stdout == "[]\n", (kind, after)


def test_files_in_ram_are_bounded_by_memory_mb(run: Run) -> None:
    # /tmp and /dev/shm are tmpfs of memory_mb / 2 each: writing more fails with ENOSPC.
    code = (
        "import os\n"
        "written = 0\n"
        "for folder in ('/tmp', '/dev/shm'):\n"
        "    for i in range(64):\n"
        "        try:\n"
        "            with open(f'{folder}/f{i}', 'wb') as f:\n"
        "                f.write(b'x' * (8 << 20))\n"
        "            written += 8 << 20\n"
        "        except OSError as e:\n"
        "            print(folder, 'errno', e.errno)\n"
        "            break\n"
        "print(written >> 20)\n"
    )
    result = run(code, memory_mb=64)
    assert result.status is ExecStatus.OK, result.stderr
    assert "/tmp errno 28" in result.stdout and "/dev/shm errno 28" in result.stdout
    assert int(result.stdout.split()[-1]) <= 64


def test_the_kernel_surface_is_reduced(run: Run) -> None:
    # No capabilities, no nested user namespaces, and a seccomp filter over what code never needs;
    # ordinary work (threads, subprocesses, multiprocessing) still runs.
    code = (
        "import ctypes, os, subprocess, threading, multiprocessing\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines())\n"
        "print('caps', status['CapEff'].strip(), status['CapPrm'].strip(), status['CapAmb'].strip())\n"
        "print('seccomp', status['Seccomp'].strip(), 'nnp', status['NoNewPrivs'].strip())\n"
        "def refused(name, call):\n"
        "    ctypes.set_errno(0)\n"
        "    print(name, call(), ctypes.get_errno())\n"
        "refused('unshare_user', lambda: libc.unshare(0x10000000))\n"
        "refused('unshare_net', lambda: libc.unshare(0x40000000))\n"
        "refused('ptrace', lambda: libc.ptrace(0, 0, 0, 0))\n"
        "refused('keyctl', lambda: libc.syscall(250, 0, 0, 0, 0))\n"
        "refused('bpf', lambda: libc.syscall(321, 0, 0, 0))\n"
        "refused('mount', lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))\n"
        "refused('clone_newuser', lambda: libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0))\n"
        "print('unshare_cmd', subprocess.run(['/usr/bin/unshare', '-U', 'true'], capture_output=True).returncode)\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "print('sub', subprocess.run(['/usr/bin/echo', 'ok'], capture_output=True, text=True).stdout.strip())\n"
        "if __name__ == '__main__':\n"
        "    with multiprocessing.get_context('fork').Pool(2) as pool:\n"
        "        print('pool', sum(pool.map(abs, [-1, -2])))\n"
    )
    if os.uname().machine != "x86_64":
        pytest.skip("the raw syscall numbers in this test are x86_64's")
    result = run(code)
    assert result.status is ExecStatus.OK, result.stderr
    out = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert out["caps"] == "0000000000000000 0000000000000000 0000000000000000"
    assert out["seccomp"] == "2 nnp 1"
    for name in ("unshare_user", "unshare_net", "ptrace", "keyctl", "bpf", "mount", "clone_newuser"):
        assert out[name] == "-1 1", (name, out[name])  # EPERM
    assert out["unshare_cmd"] != "0"
    assert (out["sub"], out["pool"]) == ("ok", "3")

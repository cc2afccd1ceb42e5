"""The sandbox's guarantees, each shown against the real bubblewrap."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtimes.sandbox import SANDBOXES, ExecResult, ExecStatus, SandboxLimits, WarmSandbox
from runtimes.sandbox.bwrap import DEFAULT_UID_BASE, zygote_path
from tests.conftest import REPO

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


def sandbox_processes() -> list[tuple[int, str]]:
    """Processes owned by a sandbox slot uid (none may outlive an execution)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue  # exited while we looked
        if int(fields["Uid"].split()[0]) in SLOT_UIDS and int(status.parent.name) != os.getpid():
            found.append((int(status.parent.name), fields["Name"].strip()))
    return found


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("slot uids (and so this leak check) need root; CI runs as root")
    assert sandbox_processes() == []
    yield
    assert sandbox_processes() == []


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


def test_a_warm_sandbox_leaves_no_trace_for_the_next_execution() -> None:
    async def go() -> list[ExecResult]:
        sandbox = WarmSandbox(1)
        try:
            first = await sandbox.exec_python(
                "import os, subprocess\n"
                "open('/tmp/left', 'w').write('x')\n"
                "open('/dev/shm/left', 'w').write('x')\n"
                "subprocess.Popen(['/usr/bin/sleep', '1000'], start_new_session=True)\n"
                "import builtins; builtins.LEFT = 1\n"
            )
            second = await sandbox.exec_python(
                "import os, builtins\n"
                "print(os.listdir('/tmp'), os.listdir('/dev/shm'), hasattr(builtins, 'LEFT'))\n"
                "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
            )
            killer = await sandbox.exec_python("import os, signal\nos.kill(1, signal.SIGKILL)\nprint('still here')")
            after = await sandbox.exec_python("print('next')")
            return [first, second, killer, after]
        finally:
            await sandbox.aclose()

    first, second, killer, after = asyncio.run(go())
    assert first.ok
    lines = second.stdout.splitlines()
    assert lines[0] == "[] [] False"
    assert len(eval(lines[1])) == 2  # the zygote (PID 1) and the code itself: no sleeping leftover
    assert killer.ok and after.stdout == "next\n"  # PID 1 cannot be killed from inside


def test_the_code_runner_is_reachable_by_the_sandbox_uid_wherever_adp_is_installed() -> None:
    # bwrap runs as the slot's uid and must open what it binds; a checkout under /root (0700)
    # is not reachable to that uid, so the runner is bound from a world-readable copy.
    path = Path(zygote_path())
    assert path.stat().st_mode & 0o004
    for folder in path.parents:
        assert folder.stat().st_mode & 0o001, folder
    assert path.read_bytes() == (REPO / "runtimes" / "sandbox" / "zygote.py").read_bytes()

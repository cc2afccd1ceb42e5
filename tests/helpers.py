"""What the tests share: paths, task lines, running the pipeline in-process, the `adp` entry
point in a clean environment, and reading results back. Fixtures live in conftest.py; no test
module imports another."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import dagster as dg
import pytest
from playwright.sync_api import Browser, Dialog, Page, sync_playwright

from adp_pipeline.builder import build_definitions
from adp_pipeline.defs.jobs import process_task_file
from adp_pipeline.defs.partitions import task_files
from adp_pipeline.defs.trajectories.assets import FRESH_TAG
from adp_pipeline.storage import open_catalog
from adp_pipeline.task_files import register_task_file
from runtimes.core import ActionType, Step
from runtimes.sandbox import DEFAULT_UID_BASE
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript, free_port, http_ok, wait_for
from runtimes.web import CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[1]
# (what was checked, records): printed at the end of the run by tests/conftest.py
CONSUMER_CHECKS: list[tuple[str, int]] = []
EXAMPLES = REPO / "examples" / "tasks.jsonl"
ONE_MB = 1024 * 1024
SANDBOX_UIDS = set(range(DEFAULT_UID_BASE, DEFAULT_UID_BASE + 64)) if os.geteuid() == 0 else {os.geteuid()}
__all__ = ["free_port", "http_ok", "wait_for"]


def code_task(task_id: str, code: str, answer: str, *, tests: str | None = None, **fields: object) -> str:
    """A code task line whose oracle runs ``code`` and answers ``answer``, verified by ``answer`` and ``tests``."""
    verify: dict[str, str] = {"expected_answer": answer}
    if tests is not None:
        verify["python_tests"] = tests
    constraints = {
        "reference_tool_calls": [
            {"name": "python_executor", "arguments": {"code": code}},
            {"name": "complete_task", "arguments": {"answer": answer}},
        ],
        "verify": verify,
    }
    return task_line(task_id, "code", constraints=constraints, **fields)


def task_line(task_id: str, task_type: str = "code", **fields: object) -> str:
    """A valid task line, with ``fields`` overriding or adding keys."""
    tools = {"code": ["python_executor"], "web": ["browser"], "reasoning": ["browser", "python_executor"]}
    task = {
        "task_id": task_id,
        "task_type": task_type,
        "description": f"do {task_id}",
        "expected_tools": tools.get(task_type, ["browser"]),
        "max_steps": 5,
        **fields,
    }
    return json.dumps(task, ensure_ascii=False)


def materialize_file(
    path: Path, settings: Settings, instance: dg.DagsterInstance, *, fresh: bool = False
) -> dg.ExecuteInProcessResult:
    """Register ``path`` and run the per-file job for its partition in-process, as `adp run` does
    (``fresh``: as `adp run --fresh`, every task again rather than what the lake lacks)."""
    key = register_task_file(path, settings.data_dir, max_line_bytes=settings.max_task_line_bytes).key
    instance.add_dynamic_partitions(task_files.name, [key])
    job = build_definitions(settings).resolve_job_def(process_task_file.name)
    tags = {FRESH_TAG: "true"} if fresh else None
    return job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False, tags=tags)


class Daemon:
    """Evaluates the sensor the way the Dagster daemon does: cursor carried over, partitions added."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance) -> None:
        self.defs = build_definitions(settings)
        self.sensor = self.defs.resolve_sensor_def("task_file_sensor")
        self.instance = instance
        self.cursor: str | None = None
        self.last_skip_reason: str | None = None

    def tick(self) -> list[dg.RunRequest]:
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, definitions=self.defs, resources=self.defs.resources
        ) as context:
            result = self.sensor(context)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        reason = result.skip_reason
        self.last_skip_reason = reason.skip_message if isinstance(reason, dg.SkipReason) else reason
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return list(result.run_requests or [])


def step(step_id: int, tool: str, success: bool = True, **params: object) -> Step:
    """A recorded step of ``tool`` with these parameters (observation empty)."""
    kind = {"browser": ActionType.BROWSER_ACTION, "python_executor": ActionType.CODE_EXECUTION}
    return Step(
        step_id=step_id,
        action_type=kind.get(tool, ActionType.TOOL_CALL),
        tool=tool,
        action_params=params,
        observation="",
        success=success,
    )


class _Process(NamedTuple):
    parent: int
    uid: int
    name: str
    started: int  # clock ticks after boot


def _process_table() -> dict[int, _Process]:
    table = {}
    for folder in Path("/proc").glob("[0-9]*"):
        try:
            status, stat = (folder / "status").read_text(), (folder / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        after_name = stat[stat.rindex(")") + 2 :].split()  # the name, in parentheses, may hold anything
        table[int(folder.name)] = _Process(
            int(fields["PPid"]), int(fields["Uid"].split()[0]), fields["Name"].strip(), int(after_name[19])
        )
    return table


def _sandbox_top(pid: int, table: dict[int, _Process]) -> int | None:
    """The outermost process of the sandbox ``pid`` is in (its bwrap, while that lives), or None."""
    if os.geteuid() == 0:  # each slot has its own uid, and setpriv switches to it just before bwrap
        if table[pid].uid not in SANDBOX_UIDS:
            return None
        top = pid
        while (parent := table[top].parent) in table and table[parent].uid in SANDBOX_UIDS:
            top = parent
        return top
    outermost = None  # sandboxes run as the caller: a sandbox is a bwrap and what runs under it
    while pid in table:
        outermost, pid = pid if table[pid].name == "bwrap" else outermost, table[pid].parent
    return outermost


def boot_seconds() -> float:
    """Now on the clock of the processes' start times (for :func:`sandbox_processes`' ``since``)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def sandbox_processes(of: int | None = None, *, since: float | None = None) -> list[tuple[int, str]]:
    """The processes of the sandboxes of process ``of`` (default: this one), none of which may
    outlive an execution: (pid, name).

    A sandbox is ``of``'s when ``of`` or one of its descendants launched it, or when its launcher
    is gone (reparented to init or to a subreaper above ``of``) and it started after ``since``
    (default: when ``of`` started): a leak whose launcher died cannot be traced back, so any
    that appeared meanwhile counts. Sandboxes of another adp on the machine (another checkout,
    a benchmark, another pytest) are not counted, although they run on the same slot uids.
    """
    table = _process_table()
    root = os.getpid() if of is None else of
    if root not in table:
        raise LookupError(f"process {root} is not running")
    children: dict[int, list[int]] = {}
    for pid, process in table.items():
        children.setdefault(process.parent, []).append(pid)
    mine, unseen = {root}, [root]
    while unseen:
        for child in children.get(unseen.pop(), []):
            mine.add(child)
            unseen.append(child)
    above, pid = {1}, root
    while (pid := table[pid].parent) in table:
        above.add(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    born_after = table[root].started if since is None else int(since * ticks)
    found = []
    for pid, process in table.items():
        top = _sandbox_top(pid, table)
        if top is None:
            continue
        launcher = table[top].parent
        # A sandbox's outermost process is its bwrap (setpriv for the instant before it execs
        # bwrap); anything else on top lost its bwrap.
        orphaned = launcher not in table or launcher in above or table[top].name not in ("bwrap", "setpriv")
        if launcher in mine or (orphaned and table[top].started >= born_after):
            found.append((pid, process.name))
    return found


# line number -> (field, words the reason must contain); None = accepted
MIXED: list[tuple[bytes, tuple[str | None, str] | None]] = [
    (task_line("good_code").encode(), None),
    (b"", None),  # blank: not counted
    (b'{"task_id": "bad_json", "task_type": ', (None, "invalid JSON")),
    (
        b'{"task_id": "no_desc", "task_type": "code", "expected_tools": ["python_executor"], "max_steps": 3}',
        ("description", "missing required field 'description'"),
    ),
    (task_line("video_task", "video").encode(), ("task_type", "'code', 'web' or 'reasoning'")),
    (task_line("wrong_type", max_steps="ten").encode(), ("max_steps", "valid integer")),
    (task_line("empty_desc", description="   ").encode(), ("description", "must not be empty")),
    (task_line("good_web", "web", timeout=60, priority=3).encode(), None),
    (task_line("good_code", description="again").encode(), ("task_id", "already on line 1")),
    (task_line("latin1").encode().replace(b"do latin1", b"caf\xe9"), (None, "not valid UTF-8")),
    (task_line("huge", description="x" * ONE_MB).encode(), (None, "over the limit")),
    (b"   \t", None),  # whitespace only: blank
    (task_line("研究框架对比", "reasoning").encode(), None),
    (task_line("typo_field", max_step=3).encode(), ("max_step", "unknown field 'max_step'")),
    (b"[1, 2]", (None, "expected a JSON object, got a JSON array")),
    (task_line("../etc/passwd").encode(), ("task_id", "must not contain '/'")),
    (b'{"task_id": "a", "task_id": "b"}', ("task_id", "appears more than once")),
    (task_line("good_crlf").encode() + b"\r", None),
    (task_line("prio", priority=11).encode(), ("priority", "less than or equal to 10")),
    (task_line("bool_steps", max_steps=True).encode(), ("max_steps", "valid integer")),
    (task_line("shell", expected_tools=["shell"]).encode(), ("expected_tools.0", "'browser', 'python_executor'")),
    (task_line("free_constraint", constraints={"verfy": {}, "language": "python"}).encode(), None),  # warned
    (
        task_line("bad_constraint", constraints={"sandbox": {"memory_mb": "lots"}}).encode(),
        ("constraints.sandbox.memory_mb", "valid integer"),
    ),
    (task_line("good_last", "code", constraints={"verify": {"expected_answer": "42"}}).encode(), None),
]


def write_mixed(path: Path) -> Path:
    # The last line has no newline at the end, as editors sometimes leave it.
    path.write_bytes(b"\n".join(line for line, _ in MIXED))
    return path


def lake_trajectory_row(
    task_id: str, messages: list[dict[str, Any]], *, tools: str = "[]", created_at: datetime | None = None
) -> dict[str, object]:
    """A row of ``trajectories``: a verified code trajectory of ``task_id`` with ``messages``."""
    return {
        "task_id": task_id,
        "task_type": "code",
        "success": True,
        "policy": "oracle",
        "runtime_id": "test",
        "n_steps": 1,
        "total_duration": 0.5,
        "final_result": "done",
        "prompt_tokens": 9,
        "completion_tokens": 1,
        "total_tokens": 10,
        "llm_calls": 1,
        "llm_retries": 0,
        "llm_cached_calls": 0,
        "verified": True,
        "verifier": json.dumps({"passed": True, "checks": {"expected_answer": True}, "details": ""}),
        "attempts": 1,
        "messages": json.dumps(messages),
        "tools": tools,
        "schema_version": 1,
        "created_at": created_at or datetime.now(UTC),
        "generation": 0,
    }


def lake_task_row(task_id: str) -> dict[str, object]:
    return {
        "task_id": task_id,
        "task_type": "code",
        "description": "d",
        "expected_tools": ["python_executor"],
        "max_steps": 1,
        "timeout": 1,
        "priority": 1,
        "constraints": "{}",
        "source_file": "f.jsonl",
        "line_number": 1,
        "schema_version": 1,
        "ingested_at": None,
    }


def query(settings: Settings, sql: str, *params: object) -> list[tuple[object, ...]]:
    with open_catalog(settings.data_dir) as connection:
        return connection.execute(sql, list(params)).fetchall()


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment a subprocess of a test runs with: the system's PATH and locale, no model
    credentials or endpoints, no ``.env`` file (ADP_ENV_FILE empty), Hugging Face offline, plus
    ``overrides``. A user's shell or ``.env`` can never make the suite call a real model."""
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}
    return {**keep, "ADP_ENV_FILE": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **overrides}


ADP = str(Path(sys.executable).with_name("adp"))


def adp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed `adp` entry point, as a user runs it, in :func:`clean_env` plus ``env``."""
    return subprocess.run(
        [ADP, *args], capture_output=True, text=True, timeout=300, check=False, cwd=REPO, env=clean_env(**(env or {}))
    )


@contextlib.contextmanager
def scripted_model(monkeypatch: pytest.MonkeyPatch, script: MockScript, **env: str) -> Iterator[MockLLMServer]:
    """The mock server answering ``script``, configured as the llm endpoint (no cache), with ``env`` set too."""
    with MockLLMServer(script) as server:
        for name, value in {
            "ADP_LLM_BASE_URL": server.base_url, "ADP_LLM_MODEL": "scripted", "ENABLE_CACHE": "false", **env
        }.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        yield server


class Workers:
    """`adp worker` processes against one Redis, each on its own metrics port and data dir."""

    def __init__(self, redis_url: str, tmp: Path) -> None:
        self.redis_url, self.tmp = redis_url, tmp
        self.processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def start(self, name: str, runtime: str = "code") -> int:
        port = free_port()
        env = clean_env(
            REDIS_URL=self.redis_url,
            ADP_RECLAIM_GRACE="1",
            MAX_CONCURRENT_TASKS="2",
            ADP_DATA_DIR=str(self.tmp / f"worker-{name}"),
            ADP_SANDBOX_UID_BASE=str(61100 + 10 * len(self.processes)),
        )
        log = (self.tmp / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [ADP, "worker", "--runtime", runtime, "--name", name, "--metrics-port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.processes[name] = (process, port)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 60, f"worker {name}")
        return port

    def kill(self, name: str) -> None:
        process, _ = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def metrics(self, name: str) -> str:
        _, port = self.processes[name]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    def stop_all(self) -> None:
        for process, _ in self.processes.values():
            process.terminate()
        for process, _ in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


def synthesis_only(settings: Settings, batch: str) -> tuple[dict[str, Any], list[str]]:
    """Materialise ``synthesized_tasks`` alone for ``batch`` (again), in-process on a fresh
    instance: its metadata values and the warnings its run logged."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(task_files.name, [batch])
        job = build_definitions(settings, lake_wide=False).resolve_job_def(process_task_file.name)
        result = job.execute_in_process(
            partition_key=batch, instance=instance, asset_selection=[dg.AssetKey("synthesized_tasks")]
        )
        (materialization,) = result.asset_materializations_for_node("synthesized_tasks")
        warnings = [log.user_message for log in instance.all_logs(result.run_id) if log.level == logging.WARNING]
    return {key: value.value for key, value in materialization.metadata.items()}, warnings


def oracle_run(task_file: Path, data: Path) -> str:
    """`adp run task_file --data-dir data` with the oracle policy, as a user runs it (its TASKS_DIR
    beside ``data``); the one batch it made."""
    ran = adp(
        "run",
        str(task_file),
        "--data-dir",
        str(data),
        env={"ADP_POLICY": "oracle", "TASKS_DIR": str(data.parent / "in")},
    )
    assert ran.returncode == 0, ran.stderr
    (batch,) = (p.name.removeprefix("batch=") for p in (data / "lake" / "tasks").iterdir() if "__" not in p.name)
    return batch


@contextlib.contextmanager
def running_view(
    data: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    env: dict[str, str] | None = None,
    said: list[str] | None = None,
) -> Iterator[str]:
    """A real `adp view --data-dir data --host host` (on ``port`` or a free one, ``env`` added to a
    clean environment), as a user starts it; yields its base URL on 127.0.0.1 once it answers,
    and checks when it stops that it said where it listens (its stderr appended to ``said``)."""
    port = port or free_port()
    process = subprocess.Popen(
        [ADP, "view", "--data-dir", str(data), "--host", host, "--port", str(port)],
        cwd=REPO,
        env=clean_env(**(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(url + "/") or process.poll() is not None, 30, "adp view to answer")
        assert process.poll() is None, process.communicate()[1]
        yield url
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
        if said is not None:
            said.append(err)
    assert f"http://{host}:{port}" in err  # it said where it listens


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium (the system's, as the web runtime runs it) per test module that drives
    a page (module scope: the sync API's loop never outlives the module, so the asyncio tests of
    other modules never meet it); each test gets its own context (:func:`watched`). conftest.py
    makes it and ``watched`` fixtures of every module."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@dataclass
class Watched:
    """A page in a fresh browser context, with everything it did recorded: every request the
    context made (URLs), every dialog (dismissed), every console message."""

    page: Page
    requests: list[str]
    dialogs: list[str]
    console: list[str]


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    """A :class:`Watched` page at a fixed 1280x800 viewport, closed after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    seen = Watched(page, [], [], [])

    def on_dialog(dialog: Dialog) -> None:
        seen.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    context.on("request", lambda request: seen.requests.append(request.url))
    page.on("console", lambda message: seen.console.append(message.text))
    yield seen
    context.close()


def foreign_requests(urls: list[str], base: str) -> list[str]:
    """The ``urls`` that went to another host (or port) than ``base``'s."""
    return [url for url in urls if urlsplit(url).netloc != urlsplit(base).netloc]

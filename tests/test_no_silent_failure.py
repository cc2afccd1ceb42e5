"""No green run hides failed tasks: a policy that cannot act fails the run at its first step,
before anything is written, saying why and how to fix it (and `adp dev` and `adp doctor` say so
up front); a batch whose every task failed for a system reason (no model answered, no browser,
no sandbox) fails its run, its trajectories kept; ordinary failures never fail a run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from adp_pipeline.builder import build_definitions
from adp_pipeline.defs.jobs import process_task_file
from adp_pipeline.defs.partitions import task_files
from adp_pipeline.doctor import Status, policy_check
from adp_pipeline.materialize import failure_reason
from adp_pipeline.storage import Lake
from adp_pipeline.task_files import register_task_file
from runtimes.agent import AgentLimits, run_task
from runtimes.core import (
    AdpError,
    BrowserError,
    ErrorType,
    LLMError,
    OracleError,
    SandboxError,
    StartPageError,
    TaskSpec,
    Trajectory,
)
from runtimes.llm import OraclePolicy, Policy, Turn, UnconfiguredPolicy
from runtimes.sandbox import BwrapSandbox, SandboxLimits, WarmSandbox
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript, RedisServer, ScriptedTurn, ScriptRule, free_port, wait_for
from tests.helpers import (
    ADP,
    REPO,
    Daemon,
    Workers,
    adp,
    check_results,
    clean_env,
    code_task,
    materialize_file,
    task_line,
)

# Every variable that can configure a model (conftest removes them too; this file's tests are
# about their absence, so they say it themselves).
_MODEL_VARIABLES = (
    "ADP_LLM_BASE_URL", "ADP_LLM_MODEL", "ADP_LLM_API_KEY", "GEMINI_API_KEY", "GEMINI_API_URL", "DEEPSEEK_API_KEY",
    "DEEPSEEK_API_URL", "OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL", "VLLM_URL", "VLLM_MODEL",
    "ADP_MOCK_LLM_URL",
)  # fmt: skip
_NO_MODEL = "policy llm needs a model and none is configured"


@pytest.fixture
def no_model(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings with policy llm (the default) and no model anywhere."""
    for name in _MODEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    settings = settings.model_copy(update={"policy": "llm"})
    assert settings.llm_config.endpoint() is None
    return settings


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def lake_rows(settings: Settings, table: str, batch: str) -> int:
    with Lake(settings.data_dir).connect() as connection:
        (count,) = connection.execute(f"SELECT count(*) FROM {table} WHERE batch = ?", [batch]).fetchone() or (0,)
    return int(count)


def system_failures(settings: Settings, batch: str) -> list[tuple[str, str, bool]]:
    with Lake(settings.data_dir).connect() as connection:
        rows = connection.execute(
            "SELECT task_id, error_type, system_failure FROM trajectories WHERE batch = ? ORDER BY 1", [batch]
        ).fetchall()
    return [(str(task), str(kind), bool(system)) for task, kind, system in rows]


def batch_of(result: dg.ExecuteInProcessResult) -> str:
    key = result.dagster_run.tags.get("dagster/partition")
    assert key is not None
    return key


# --- a policy that cannot act -----------------------------------------------------------------


def test_a_sensor_launched_run_with_policy_llm_and_no_model_fails_at_its_first_step_with_the_fix(
    no_model: Settings, instance: dg.DagsterInstance
) -> None:
    daemon = Daemon(no_model, instance)
    write(no_model.tasks_dir / "dropped.jsonl", code_task("adds", "print(1 + 1)", "2"), task_line("other"))
    (request,) = daemon.tick()
    batch = request.partition_key
    assert batch is not None

    # What the daemon launches: the sensor's job, for the requested partition, with its tags.
    job = daemon.defs.resolve_job_def(request.job_name or process_task_file.name)
    result = job.execute_in_process(partition_key=batch, tags=request.tags, instance=instance, raise_on_error=False)

    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.status is dg.DagsterRunStatus.FAILURE
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "task_batch"  # the first step, before any task ran
    reason = failure_reason(result)
    assert reason.startswith(f"task_batch: {_NO_MODEL}: set ADP_LLM_BASE_URL and ADP_LLM_MODEL")
    assert "ADP_POLICY=oracle" in reason and "\n" not in reason
    data = failure.step_failure_data.user_failure_data
    assert data is not None and data.metadata["policy"].value == "llm"
    # Nothing was written for the batch: no tasks, no trajectories, no working area, no JSON.
    assert result.asset_materializations_for_node("task_batch") == []
    assert result.asset_materializations_for_node("trajectories") == []
    assert lake_rows(no_model, "tasks", batch) == 0
    assert lake_rows(no_model, "trajectories", batch) == 0
    assert not (no_model.data_dir / "checkpoints" / batch).exists()
    assert not (no_model.output_dir / "trajectories").exists()


def test_contradictory_llm_settings_fail_the_run_at_its_first_step_naming_the_setting(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    contradictory = settings.model_copy(update={"policy": "llm", "llm_base_url": "http://127.0.0.1:9/v1"})
    problem = contradictory.policy_config.problem("llm")
    assert problem is not None  # an endpoint without a model
    result = materialize_file(write(tmp_path / "f.jsonl", task_line("t")), contradictory, instance)
    assert not result.success
    assert failure_reason(result) == (
        f"task_batch: {problem}; once fixed, launch this partition again (the UI's Materialize, or `adp run FILE`)"
    )


def test_task_batch_alone_ingests_without_a_policy_and_re_executing_trajectories_alone_still_refuses(
    no_model: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    key = register_task_file(write(tmp_path / "f.jsonl", task_line("t")), no_model.data_dir).key
    assert task_files.name is not None
    instance.add_dynamic_partitions(task_files.name, [key])
    job = build_definitions(no_model).resolve_job_def(process_task_file.name)
    alone = job.execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("task_batch")]
    )
    assert alone.success  # ingesting needs no model
    assert lake_rows(no_model, "tasks", key) == 1
    tasks_only = job.execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("trajectories")]
    )
    assert not tasks_only.success
    assert failure_reason(tasks_only).startswith(f"trajectories: {_NO_MODEL}")
    assert lake_rows(no_model, "trajectories", key) == 0


def doctor_rows(output: str) -> dict[str, tuple[str, str, str]]:
    """`adp doctor`'s table as {check: (status, detail, fix)}, each cell's wrapped lines joined."""
    rows: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[1]:  # the status: a new row starts
            current = rows.setdefault(cells[0], [[], [], []])
        assert current is not None
        for parts, cell in zip(current, cells[1:], strict=True):
            parts.append(cell)
    return {name: tuple(" ".join(" ".join(parts).split()) for parts in cells) for name, cells in rows.items()}  # type: ignore[misc]


def test_adp_doctor_says_which_policy_the_sensor_uses_and_that_llm_without_a_model_cannot_run(
    tmp_path: Path,
) -> None:
    done = adp("doctor", env={"ADP_DATA_DIR": str(tmp_path / "data"), "ADP_POLICY": "llm"})
    rows = doctor_rows(done.stdout)
    status, detail, fix = rows["policy (ADP_POLICY=llm)"]
    assert status == "fail" and done.returncode == 1
    assert detail.startswith(f"the sensor's runs will fail: {_NO_MODEL}: set ADP_LLM_BASE_URL")
    assert fix.startswith("configure a model")
    # The dbt row names what is installed, not dbt's own "- installed:" line.
    status, detail, _ = rows["dbt (quality tests)"]
    assert status == "ok" and detail.startswith("dbt-core 1.11.") and ", dbt-duckdb 1." in detail


def test_the_doctor_policy_row_for_each_policy(settings: Settings) -> None:
    oracle = policy_check(settings)
    assert (oracle.name, oracle.status) == ("policy (ADP_POLICY=oracle)", Status.OK)
    assert (
        oracle.detail
        == "used by the sensor's runs: replays each task's reference_tool_calls (a task without them fails)"
    )
    mock = policy_check(settings.model_copy(update={"policy": "mock", "mode": "redis"}))
    assert mock.status is Status.OK and "the scripted mock model" in mock.detail and "redis mode" in mock.detail
    model = policy_check(
        settings.model_copy(update={"policy": "llm", "llm_base_url": "http://m.test/v1", "llm_model": "m1"})
    )
    assert model.status is Status.OK and model.detail == "used by the sensor's runs: custom: m1"
    contradictory = settings.model_copy(update={"policy": "llm", "llm_base_url": "http://m.test/v1"})
    broken = policy_check(contradictory)
    assert broken.status is Status.FAIL
    assert broken.detail == f"the sensor's runs will fail: {contradictory.policy_config.problem('llm')}"


def test_adp_dev_warns_at_start_creates_the_watched_folder_and_says_which_it_is(
    no_model: Settings, tmp_path: Path
) -> None:
    inbox, data = tmp_path / "not" / "yet" / "inbox", tmp_path / "data"
    log = tmp_path / "dev.log"
    env = clean_env(ADP_POLICY="llm", TASKS_DIR=str(inbox))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ADP, "dev", "--port", str(free_port()), "--data-dir", str(data)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: "Dagster UI on" in log.read_text(), 60, "adp dev's first lines")
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the Dagster it became: not needed here
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    lines = log.read_text().splitlines()
    warnings = [line for line in lines if line.startswith("adp: warning: ")]
    assert warnings == [f"adp: warning: {no_model.policy_config.problem('llm')}"]
    assert inbox.is_dir()
    assert f"the sensor watches {inbox} for *.jsonl task files (policy llm)" in lines


# --- a batch failed by the system -------------------------------------------------------------


def web_tasks(count: int) -> list[str]:
    calls = [{"name": "complete_task", "arguments": {"answer": "done"}}]
    return [task_line(f"web_{i}", "web", constraints={"reference_tool_calls": calls}) for i in range(count)]


def wrong_solution(task_id: str) -> str:
    """A code task whose reference solution answers 1 where 2 is expected: an ordinary failure."""
    calls = [
        {"name": "python_executor", "arguments": {"code": "print(1)"}},
        {"name": "complete_task", "arguments": {"answer": "1"}},
    ]
    return task_line(task_id, constraints={"reference_tool_calls": calls, "verify": {"expected_answer": "2"}})


def test_a_batch_whose_every_task_found_no_browser_fails_its_run_and_keeps_its_trajectories(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    broken = settings.model_copy(update={"chromium_path": tmp_path / "no-chromium"})
    path = write(tmp_path / "web.jsonl", *web_tasks(3))
    result = materialize_file(path, broken, instance)

    assert not result.success
    batch = batch_of(result)
    # Nothing lost: every trajectory is in the lake, marked, and the materialisation recorded.
    assert system_failures(broken, batch) == [(f"web_{i}", "browser_error", True) for i in range(3)]
    assert len(result.asset_materializations_for_node("trajectories")) == 1
    checks = check_results(result)
    assert checks["not_all_system_failures"] is False and checks["one_trajectory_per_task"] is True
    assert result.asset_materializations_for_node("task_essences") == []  # downstream did not run
    reason = failure_reason(result)
    assert reason.startswith(
        "trajectories: check not_all_system_failures failed: every one of the 3 tasks failed for a system reason "
        f"(3 browser_error); e.g. task web_0: browser_error: {tmp_path / 'no-chromium'} not found: install Debian's "
        "chromium"
    )
    assert "adp run --fresh" in reason and "\n" not in reason

    # Consistent on a re-run: the batch is in the lake, nothing runs again, and it says the same.
    again = materialize_file(path, broken, instance)
    assert not again.success and failure_reason(again) == reason


def test_every_llm_call_unanswered_fails_the_run_and_once_the_model_answers_a_fresh_run_succeeds(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    lines = [code_task(f"c{i}", f"print({i})", str(i)) for i in range(3)]
    path = write(tmp_path / "code.jsonl", *lines)
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: every call fails to connect
    unreachable = settings.model_copy(
        update={"policy": "llm", "llm_base_url": closed, "llm_model": "scripted", "llm_max_attempts": 2,
                "enable_cache": False}
    )  # fmt: skip
    assert unreachable.policy_config.problem("llm") is None  # configured: the endpoint is just not there
    result = materialize_file(path, unreachable, instance)
    assert not result.success
    assert system_failures(unreachable, batch_of(result)) == [(f"c{i}", "llm_error", True) for i in range(3)]
    assert "(3 llm_error); e.g. task c0: llm_error: custom at " in failure_reason(result)

    with MockLLMServer(MockScript.from_tasks(TaskSpec.model_validate_json(line) for line in lines)) as server:
        answering = unreachable.model_copy(update={"llm_base_url": server.base_url})
        assert not materialize_file(path, answering, instance).success  # same run identity: nothing ran again
        fresh = materialize_file(path, answering, instance, fresh=True)
    assert fresh.success
    assert system_failures(answering, batch_of(fresh)) == [(f"c{i}", "None", False) for i in range(3)]


def test_in_redis_mode_a_worker_without_a_model_fails_the_run_with_its_trajectories_kept(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path, workers: Workers, redis_server: RedisServer
) -> None:
    # The Dagster process names a model (its check passes); the worker, in a clean environment, has none.
    remote = settings.model_copy(
        update={"policy": "llm", "llm_base_url": "http://127.0.0.1:9/v1", "llm_model": "m", "mode": "redis",
                "redis_url": redis_server.url, "redis_deadline": 120.0}
    )  # fmt: skip
    workers.start("w1")
    result = materialize_file(write(tmp_path / "code.jsonl", code_task("c0", "print(0)", "0")), remote, instance)
    assert not result.success
    assert system_failures(remote, batch_of(result)) == [("c0", "llm_error", True)]
    assert "(1 llm_error); e.g. task c0: llm_error: no LLM is configured: set ADP_LLM_BASE_URL" in failure_reason(
        result
    )


def test_a_batch_of_ordinary_failures_only_succeeds(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "ordinary.jsonl",
        wrong_solution("wrong"),
        code_task("crashes", "1/0", "x", tests="pass"),  # the agent's code raises
        code_task("slow", "import time; time.sleep(30)", "x", timeout=2),  # its own code runs past the timeout
    )
    result = materialize_file(path, settings, instance)
    assert result.success
    checks = check_results(result)
    assert checks["not_all_system_failures"] is True
    assert checks["success_rate_per_type"] is False  # reported, not a failed run
    assert system_failures(settings, batch_of(result)) == [
        ("crashes", "runtime_error", False),
        ("slow", "timeout", False),
        ("wrong", "runtime_error", False),
    ]


def test_a_model_that_answers_badly_is_an_ordinary_failure(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    path = write(tmp_path / "chatty.jsonl", task_line("chatty", max_steps=2), task_line("greedy", max_steps=2))
    chatter = [ScriptedTurn(content="I would rather talk about it.")] * 2
    script = MockScript(
        rules=[ScriptRule(match="do chatty", turns=chatter), ScriptRule(match="do greedy", turns=chatter)]
    )
    with MockLLMServer(script) as server:
        answering = settings.model_copy(
            update={"policy": "llm", "llm_base_url": server.base_url, "llm_model": "scripted", "enable_cache": False}
        )
        result = materialize_file(path, answering, instance)
    assert result.success
    assert system_failures(answering, batch_of(result)) == [
        ("chatty", "llm_error", False),
        ("greedy", "llm_error", False),
    ]


def test_a_batch_with_one_task_that_ran_is_not_failed_by_the_system(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    broken = settings.model_copy(update={"chromium_path": tmp_path / "no-chromium"})
    path = write(tmp_path / "mixed.jsonl", *web_tasks(2), wrong_solution("wrong"))
    result = materialize_file(path, broken, instance)
    assert result.success  # the web tasks' browser_error shows in the checks and top errors, not as a failed run
    assert check_results(result)["not_all_system_failures"] is True


def test_which_errors_are_system_failures_is_said_by_the_error_classes() -> None:
    # adp's machinery: the model endpoint, the browser, the sandbox; a task's own data is not.
    assert LLMError.system_failure and BrowserError.system_failure and SandboxError.system_failure
    assert AdpError.system_failure  # anything unexpected that ends a task
    assert not OracleError.system_failure
    assert not StartPageError.system_failure and issubclass(StartPageError, BrowserError)  # the task's page


def test_no_model_is_a_system_failure_and_a_task_the_oracle_cannot_replay_is_not() -> None:
    async def run(spec: TaskSpec, policy: Policy) -> Trajectory:
        return await run_task(spec, policy, BwrapSandbox(1))

    spec = TaskSpec.model_validate_json(task_line("t"))
    unconfigured = asyncio.run(run(spec, UnconfiguredPolicy()))
    assert (unconfigured.error_type, unconfigured.system_failure) == (ErrorType.LLM_ERROR, True)
    nothing_to_replay = asyncio.run(run(spec, OraclePolicy()))
    assert (nothing_to_replay.error_type, nothing_to_replay.system_failure) == (ErrorType.SYSTEM_ERROR, False)


def test_a_batch_the_oracle_cannot_replay_is_not_failed_by_the_system(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    result = materialize_file(write(tmp_path / "plain.jsonl", task_line("a"), task_line("b")), settings, instance)
    assert result.success  # the tasks' data lacks reference calls: the success rate says so
    assert system_failures(settings, batch_of(result)) == [("a", "system_error", False), ("b", "system_error", False)]


# --- what counts: the sandbox, a model that never answers, a start page that does not load --------


@pytest.fixture
def path_without_bwrap(tmp_path: Path) -> str:
    """A PATH holding every program of the system's PATH but bwrap (links to the real ones)."""
    folder = tmp_path / "bin-without-bwrap"
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else ():
            link = folder / program.name
            if program.name != "bwrap" and not link.exists() and os.access(program, os.X_OK):
                link.symlink_to(program)
    assert shutil.which("bwrap", path=str(folder)) is None and shutil.which("setpriv", path=str(folder))
    return str(folder)


def test_adp_run_without_bwrap_on_path_fails_naming_the_missing_sandbox(
    path_without_bwrap: str, tmp_path: Path
) -> None:
    # The default (warm) sandbox, as a user's `adp run` meets a machine without bubblewrap; the
    # oracle's code is right, so only the sandbox can fail these tasks.
    lines = (code_task(f"c{i}", f"n = {i}\nprint(n)", str(i), tests=f"assert n == {i}") for i in range(3))
    path = write(tmp_path / "code.jsonl", *lines)
    data = tmp_path / "data"
    done = adp("run", str(path), "--policy", "oracle", env={"ADP_DATA_DIR": str(data), "PATH": path_without_bwrap})
    assert done.returncode == 1, done.stdout + done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert "check not_all_system_failures failed: every one of the 3 tasks failed for a system reason" in said
    assert (
        "(3 system_error); e.g. task c0: system_error: the sandbox could not run the code: bwrap not found on PATH"
        in said
    )
    assert "IncompleteReadError" not in said
    with Lake(data).connect() as connection:
        rows = connection.execute("SELECT task_id, error_type, system_failure FROM trajectories ORDER BY 1").fetchall()
    assert rows == [(f"c{i}", "system_error", True) for i in range(3)]


class _BreaksTheSandboxBeforeVerifying(OraclePolicy):
    """The oracle, but bwrap leaves PATH before its last call: the agent's code ran in a sandbox,
    the verifier's tests find none."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
        self.monkeypatch, self.path = monkeypatch, path

    async def next_turn(self, task: TaskSpec, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Turn:
        turn = await super().next_turn(task, messages, tools)
        if turn.message["tool_calls"][0]["function"]["name"] == "complete_task":
            self.monkeypatch.setenv("PATH", self.path)
        return turn


@pytest.mark.parametrize("kind", ["warm", "bwrap"])
def test_a_sandbox_that_cannot_run_the_code_makes_a_failed_task_a_system_failure_naming_why(
    kind: str, path_without_bwrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = TaskSpec.model_validate_json(code_task("c", "n = 2\nprint(n)", "2", tests="assert n == 2"))

    async def run(policy: Policy) -> Trajectory:
        # A warm slot relaunched after each execution: the verifier's starts afresh, as bwrap's does.
        sandbox = WarmSandbox(1, recycle_after=1) if kind == "warm" else BwrapSandbox(1)
        try:
            return await run_task(spec, policy, sandbox)
        finally:
            await sandbox.aclose()

    assert asyncio.run(run(OraclePolicy())).success  # the task is right: only the sandbox can fail it

    # The verifier's tests find no sandbox: no verdict, adp's failure.
    verifier = asyncio.run(run(_BreaksTheSandboxBeforeVerifying(monkeypatch, path_without_bwrap)))
    assert (verifier.error_type, verifier.system_failure, verifier.verifier) == (ErrorType.SYSTEM_ERROR, True, None)
    assert verifier.steps[0].success  # the agent's code did run
    assert verifier.error_message == (
        "the sandbox could not run the code: bwrap not found on PATH: install bubblewrap (`make setup` as root); "
        "python_tests could not be run"
    )

    # The agent's code finds none: its step says why, and the task that then failed is adp's failure.
    monkeypatch.setenv("PATH", path_without_bwrap)
    agent = asyncio.run(run(OraclePolicy()))
    assert (agent.error_type, agent.system_failure) == (ErrorType.SYSTEM_ERROR, True)
    assert agent.steps[0].error_type is ErrorType.SYSTEM_ERROR
    assert agent.steps[0].error_message == (
        "[adp] the sandbox could not run the code: bwrap not found on PATH: install bubblewrap (`make setup` as root)"
    )
    assert agent.error_message == (
        "the sandbox could not run the code: bwrap not found on PATH: install bubblewrap (`make setup` as root); "
        "the task then failed: verification failed: no python_executor call succeeded, so there is no code to test"
    )


@pytest.mark.parametrize("kind", ["warm", "bwrap"])
def test_code_that_exhausts_its_own_limits_or_kills_its_sandbox_is_an_ordinary_failure(kind: str) -> None:
    # What task code can do to itself never reads as the sandbox failing: memory, processes, its
    # CPU, its sandbox's init, its own process; and the sandbox runs the next task's code after.
    attacks = {
        "memory": "x = bytearray(10**10)",
        "fork_bomb": "import os\nwhile True: os.fork()",
        "cpu": "while True: pass",
        "kills_init": "import os, signal\nos.kill(1, signal.SIGKILL)\nraise SystemExit(3)",
        "kills_itself": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        "closes_its_fds": "import os\nfor fd in range(64):\n    try: os.close(fd)\n    except OSError: pass\n1/0",
    }
    tasks = [TaskSpec.model_validate_json(code_task(name, code, "x", tests="pass")) for name, code in attacks.items()]

    async def run() -> list[Trajectory]:
        sandbox = WarmSandbox(2) if kind == "warm" else BwrapSandbox(2)
        try:
            limits = AgentLimits(sandbox=SandboxLimits(timeout=2, memory_mb=256))
            done = [await run_task(task, OraclePolicy(), sandbox, limits) for task in tasks]
            after = TaskSpec.model_validate_json(code_task("after", "n = 7\nprint(n)", "7", tests="assert n == 7"))
            return [*done, await run_task(after, OraclePolicy(), sandbox, limits)]
        finally:
            await sandbox.aclose()

    *attacked, after = asyncio.run(run())
    for trajectory in attacked:
        assert not trajectory.success and not trajectory.system_failure, trajectory.task_id
        assert trajectory.steps[0].error_type is not ErrorType.SYSTEM_ERROR, (trajectory.task_id, trajectory.steps[0])
    assert after.success


class _Unanswering:
    """A model endpoint that accepts every connection and never answers (a hung server)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.held: list[socket.socket] = []
        self.accepted = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed: done
            while True:
                self.held.append(self.listener.accept()[0])
                self.accepted.set()

    def __enter__(self) -> _Unanswering:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not)
        self.listener.close()
        for connection in self.held:
            connection.close()
        self.thread.join(timeout=5)


def test_a_model_endpoint_that_never_answers_fails_the_run_within_the_task_timeout(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    path = write(tmp_path / "code.jsonl", *(code_task(f"c{i}", f"print({i})", str(i), timeout=3) for i in range(2)))
    with _Unanswering() as endpoint:
        hung = settings.model_copy(
            update={"policy": "llm", "llm_base_url": endpoint.base_url, "llm_model": "m", "enable_cache": False}
        )  # the client's own timeout (120 s) and retries would outlast the task's 3 s
        started = time.monotonic()
        result = materialize_file(path, hung, instance)
        assert endpoint.accepted.is_set()  # it did accept: only its silence fails the tasks
    assert time.monotonic() - started < 60
    assert not result.success
    assert system_failures(hung, batch_of(result)) == [("c0", "llm_error", True), ("c1", "llm_error", True)]
    assert (
        f"(2 llm_error); e.g. task c0: llm_error: the model (custom at {endpoint.base_url}) did not answer within the "
        "task's timeout of 3 s, and no call of this task was answered: check that the endpoint is up and serving"
    ) in failure_reason(result)


def test_a_model_that_answered_and_then_ran_out_of_time_is_an_ordinary_timeout(tmp_path: Path) -> None:
    # Each answer takes 1.5 s; the task has 4 s: two turns are answered, the third is cut short.
    spec = TaskSpec.model_validate_json(task_line("slow", max_steps=10, timeout=4))
    chatter = MockScript(rules=[ScriptRule(match="do slow", turns=[ScriptedTurn(content="thinking")] * 10)])

    async def run(base_url: str) -> Trajectory:
        config = Settings(data_dir=tmp_path, llm_base_url=base_url, llm_model="m", enable_cache=False).policy_config
        async with config.open("llm", [spec]) as policy:
            return await run_task(spec, policy, BwrapSandbox(1))

    with MockLLMServer(chatter, latency=1.5) as server:
        trajectory = asyncio.run(run(server.base_url))
    assert len(trajectory.llm_calls) >= 1  # the model did answer this task
    assert (trajectory.error_type, trajectory.system_failure) == (ErrorType.TIMEOUT, False)
    assert trajectory.error_message == "task timeout of 4 s reached"


def test_web_tasks_whose_start_page_does_not_load_are_ordinary_failures(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    calls = [{"name": "complete_task", "arguments": {"answer": "done"}}]
    start_urls = {
        "unsafe_port": "http://127.0.0.1:9/",  # Chromium refuses the port itself
        "refused": f"http://127.0.0.1:{free_port()}/",  # nothing listens there
        "no_such_host": "http://no-such-host.invalid/",  # the name does not resolve
    }
    lines = [
        task_line(name, "web", constraints={"start_url": url, "reference_tool_calls": calls})
        for name, url in start_urls.items()
    ]
    result = materialize_file(write(tmp_path / "web.jsonl", *lines), settings, instance)
    assert result.success  # the tasks' data is wrong: `adp doctor` would find nothing to fix
    assert check_results(result)["not_all_system_failures"] is True
    with Lake(settings.data_dir).connect() as connection:
        rows = connection.execute(
            "SELECT task_id, error_type, system_failure, attempts, error_message FROM trajectories ORDER BY 1"
        ).fetchall()
    assert [row[:4] for row in rows] == [
        (name, "browser_error", False, 1)  # not retried on a relaunched browser: it would fail the same way
        for name in sorted(start_urls)
    ]
    for *_, message in rows:
        assert message.startswith("the task's start page did not load: Page.goto: net::ERR_"), message

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from adp_pipeline.cli import main
from tests.helpers import (
    ADP,
    EXAMPLES,
    REPO,
    adp,
    clean_env,
    code_task,
    sandbox_processes,
    task_line,
    wait_for,
    write_mixed,
)


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_run_then_query_the_examples_in_every_format(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    done = adp("run", str(EXAMPLES), "--data-dir", data, "--policy", "oracle")
    assert done.returncode == 0, done.stderr
    assert "tasks-" in done.stdout and "accepted" in done.stdout
    assert "rejected lines" not in done.stdout

    sql = "select task_type, count(*) as n from tasks group by 1 order by 1"
    as_json = adp("query", sql, "--data-dir", data, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [
        {"task_type": "code", "n": 5},
        {"task_type": "reasoning", "n": 4},
        {"task_type": "web", "n": 4},
    ]
    as_csv = adp(
        "query",
        "select task_id, expected_tools from tasks where task_id = 'reasoning_001'",
        "--data-dir",
        data,
        "--format",
        "csv",
    )
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["task_id", "expected_tools"],
        ["reasoning_001", '["browser", "python_executor"]'],
    ]
    as_table = adp("query", sql, "--data-dir", data)
    assert "reasoning" in as_table.stdout and "3 rows" in as_table.stderr


def test_run_prints_the_rejected_lines_and_still_succeeds(tmp_path: Path) -> None:
    mixed = write_mixed(tmp_path / "mixed.jsonl")
    # One task the oracle can solve: a batch whose every task fails for a system reason fails its run.
    mixed.write_bytes(mixed.read_bytes() + b"\n" + code_task("solvable", "print(1)", "1").encode())
    code, out, err = invoke("run", str(mixed), "--data-dir", str(tmp_path / "data"), "--policy", "oracle")
    assert code == 0, err
    assert "rejected lines" in out
    assert "mixed.jsonl:3" in out and "invalid JSON" in out


def test_run_uses_task_file_when_given_no_files(tmp_path: Path) -> None:
    task_file = tmp_path / "from_env.jsonl"
    task_file.write_text(code_task("env_task", "print(1)", "1") + "\n")
    env = {"TASK_FILE": str(task_file), "ADP_DATA_DIR": str(tmp_path / "data"), "ADP_POLICY": "oracle"}
    code, out, err = invoke("run", env=env)
    assert code == 0 and "from_env-" in out, err
    code, out, _ = invoke("query", "select task_id from tasks", "--format", "json", env=env)
    assert json.loads(out) == [{"task_id": "env_task"}]


def test_usage_errors_are_one_line_with_a_nonzero_exit(tmp_path: Path) -> None:
    code, _, err = invoke("run", str(tmp_path / "missing.jsonl"), "--data-dir", str(tmp_path))
    assert code == 2 and err == f"adp: error: {tmp_path / 'missing.jsonl'}: no such task file\n"
    code, _, err = invoke("run", "--data-dir", str(tmp_path), env={"TASK_FILE": ""})
    assert code == 2 and err == "adp: error: no task file given: pass FILE... or set TASK_FILE\n"
    code, _, err = invoke("query", "select nope from tasks", "--data-dir", str(tmp_path), "--create")
    assert code == 1 and err.startswith("adp: error: query failed: Binder Error") and err.count("\n") == 1
    code, _, err = invoke("run", str(EXAMPLES), env={"MAX_CONCURRENT_TASKS": "many"})
    assert code == 2 and "MAX_CONCURRENT_TASKS" in err.upper()


def test_a_run_that_cannot_write_exits_nonzero_with_the_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "lake").write_text("not a folder")
    code, _, err = invoke("run", str(EXAMPLES), "--data-dir", str(data), "--policy", "oracle")
    assert code == 1
    last = err.splitlines()[-1]  # above it: the progress bar
    assert last.startswith(f"adp: error: {EXAMPLES}: task_batch: ")
    assert "lake" in last and "(run " in last


def test_doctor_reports_each_dependency_and_never_prints_secrets(tmp_path: Path) -> None:
    env = {"ADP_DATA_DIR": str(tmp_path), "OPENAI_API_KEY": "sk-test-secret-value", "GEMINI_API_KEY": ""}
    code, out, _ = invoke("doctor", env=env)
    for name in ("data dir", "bubblewrap", "chromium", "redis", "dbt", "LLM"):
        assert name in out
    assert "openai: gpt-4o-mini" in out
    assert "sk-test-secret-value" not in out
    assert code == (1 if " fail " in out else 0)
    _, out, _ = invoke("doctor", env={"ADP_DATA_DIR": str(tmp_path), "OPENAI_API_KEY": "", "GEMINI_API_KEY": ""})
    assert "none configured" in out
    # Piped, the table fits 160 columns and every row closes with its border: no cell was cut.
    rows = out.splitlines()
    assert all(len(row) <= 160 and row.rstrip()[-1] in "┓┃┩│┘" for row in rows), out
    fix = " ".join(row.split("│")[4].strip() for row in rows if row.startswith("│ policy") or row.startswith("│   "))
    assert "ADP_POLICY=oracle" in fix.replace(" ", "")


def test_markup_and_terminal_controls_from_tasks_and_code_print_as_data(tmp_path: Path) -> None:
    # A task id, a bad value and sandbox output full of rich markup, ANSI/OSC escapes and NUL.
    noisy = "import sys\nsys.stderr.write('[bold]loud[/] \\x1b]0;pwned\\x07 \\x1b[31mred\\x00 [/]')\nassert False"
    lines = [
        code_task("[bold red]id", "print(1)", "1", tests=noisy),
        task_line("bad_steps", max_steps="[/]"),
    ]
    path = tmp_path / "noisy.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    data = str(tmp_path / "data")
    done = adp("run", str(path), "--data-dir", data, env={"ADP_POLICY": "oracle"})
    assert done.returncode == 0, done.stderr
    assert "[/]" in done.stdout  # the reject reason, shown as written
    assert "\\x1b[31mred\\x00" in done.stdout  # the error example, escaped
    for output in (done.stdout, done.stderr):
        assert "\x1b" not in output and "\x00" not in output and "\x07" not in output

    sql = "select task_id, error_message from trajectories"
    for fmt in ("table", "csv", "json"):
        shown = adp("query", sql, "--data-dir", data, "--format", fmt)
        assert shown.returncode == 0, shown.stderr
        assert "\x1b" not in shown.stdout and "\x00" not in shown.stdout and "\x07" not in shown.stdout
        assert "[bold red]id" in shown.stdout
    as_json = json.loads(adp("query", sql, "--data-dir", data, "--format", "json").stdout)
    assert "\x1b[31mred\x00" in as_json[0]["error_message"]  # JSON keeps the data exact


def _code_file(path: Path, ids: list[str], *, sleep: float = 0.0) -> Path:
    code = f"import time\ntime.sleep({sleep})\nprint(6)"
    path.write_text("".join(code_task(task_id, code, "6", timeout=120) + "\n" for task_id in ids))
    return path


def test_concurrent_runs_on_a_fresh_data_dir_keep_the_instance_intact_and_each_id_in_one_batch(
    tmp_path: Path,
) -> None:
    env = clean_env(ADP_POLICY="oracle")
    shared = [f"shared_{i}" for i in range(5)]
    for attempt in range(5):
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        files = [_code_file(folder / f"{name}.jsonl", [*shared, f"{name}_only"]) for name in ("a", "b")]
        data = str(folder / "data")
        runs = [
            subprocess.Popen([ADP, "run", str(path), "--data-dir", data], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for path in files
        ]  # fmt: skip
        outputs = [run.communicate(timeout=300) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        per_id = json.loads(
            adp(
                "query", "select task_id, count(*) as n from tasks group by 1", "--data-dir", data, "--format", "json"
            ).stdout
        )
        assert {row["task_id"]: row["n"] for row in per_id} == {**dict.fromkeys(shared, 1), "a_only": 1, "b_only": 1}
        rejects = adp("query", "select reason from task_rejects", "--data-dir", data, "--format", "json")
        assert len(json.loads(rejects.stdout)) == len(shared)
        with dg.DagsterInstance.from_config(str(folder / "data" / "dagster")) as instance:
            statuses = sorted(run.status.value for run in instance.get_runs())
        assert statuses == ["SUCCESS", "SUCCESS"]


def _in_private_mount(folder: Path, options: str, *command: str) -> subprocess.CompletedProcess[str]:
    """``command`` with ``folder`` a fresh tmpfs mounted with ``options`` (read-only, or tiny)."""
    script = f'mount -t tmpfs -o {options} tmpfs "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(folder), *command],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
        env=clean_env(ADP_POLICY="oracle"),
    )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only or tiny tmpfs needs root; CI runs as root")
@pytest.mark.parametrize("options", ["ro,size=1m", "size=96k"], ids=["read-only", "full"])
def test_a_read_only_or_full_data_dir_gives_one_clear_line(tmp_path: Path, options: str) -> None:
    path = _code_file(tmp_path / "tasks.jsonl", [f"t{i}" for i in range(20)])
    folder = tmp_path / "mounted"
    folder.mkdir()
    done = _in_private_mount(folder, options, ADP, "run", str(path), "--data-dir", str(folder / "data"))
    assert done.returncode in (1, 2), done
    errors = [line for line in done.stderr.splitlines() if "adp: error:" in line]
    assert "Traceback" not in done.stderr and len(errors) == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == errors[0]
    assert re.search(r"Read-only file system|No space left on device|database or disk is full", errors[0]), errors
    query = _in_private_mount(folder, options, ADP, "query", "select 1", "--data-dir", str(folder / "data"), "--create")
    assert "Traceback" not in query.stderr, query.stderr
    assert query.returncode == 0 or query.stderr.startswith("adp: error:"), query.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the slot uids of the sandbox need root; CI runs as root")
def test_a_run_killed_mid_batch_is_marked_failed_at_the_next_start_and_leaves_no_sandbox(tmp_path: Path) -> None:
    env = clean_env(ADP_POLICY="oracle")
    data = tmp_path / "data"
    tmp_before = set(Path("/tmp").iterdir())
    slow = _code_file(tmp_path / "slow.jsonl", [f"slow_{i}" for i in range(4)], sleep=60)
    victim = subprocess.Popen([ADP, "run", str(slow), "--data-dir", str(data)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: len(sandbox_processes()) > 0, 120, "the batch's sandboxes to run")
    victim.kill()
    victim.wait()
    wait_for(lambda: sandbox_processes() == [], 30, "the killed run's sandboxes to end")
    assert {path for path in Path("/tmp").iterdir() if "adp" in path.name} - tmp_before == set()

    after = adp("run", str(_code_file(tmp_path / "next.jsonl", ["next"])), "--data-dir", str(data), env=env)
    assert after.returncode == 0, after.stderr
    with dg.DagsterInstance.from_config(str(data / "dagster")) as instance:
        runs = {run.tags.get("adp/pid"): run.status.value for run in instance.get_runs()}
    assert runs[str(victim.pid)] == "FAILURE"
    assert sorted(runs.values()) == ["FAILURE", "SUCCESS"]

"""The thin CLI (issue #20): the lake's answers about a run as dataclasses (storage.reports), the
run summary formatting them, readers that refuse a data dir where nothing has run, and an export
that prints no progress before its selection has run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from adp_pipeline.cli import _print_run_summary, main
from adp_pipeline.storage import (
    BatchReport,
    FailureGroup,
    Lake,
    RejectedLine,
    SynthesisReport,
    TypeTally,
    catalog_path,
    rejected_lines,
    run_report,
)
from runtimes.core import ErrorType, TaskType
from runtimes.settings import Settings
from synthesis.stages import Stage
from tests.helpers import REPO, code_task, task_line

NO_DATA = "no data here yet: run adp run or make demo"
ABSENT = "absent-00000000"  # a batch key with nothing in the lake


@dataclass(frozen=True)
class Ran:
    data: Path
    task_file: Path
    batch: str
    stdout: str
    inbox: Path


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """One `adp run --policy oracle` of a small file: 3 code tasks (one fails its tests), 2
    reasoning tasks the oracle cannot replay (the later id first in the file), 2 rejected lines;
    then what synthesis would have written for that batch (no model here, so it made nothing)."""
    root = tmp_path_factory.mktemp("reports")
    task_file = root / "batch.jsonl"
    lines = [
        code_task("square", "print(4)", "4"),
        code_task("cube", "print(8)", "8"),
        code_task("wrong", "print(1)", "1", tests="assert False"),
        task_line("think_z", "reasoning"),
        '{"task_id": "cut", "task_type": ',
        task_line("think_a", "reasoning"),
        task_line("bad_steps", max_steps="ten"),
    ]
    task_file.write_text("\n".join(lines) + "\n")
    data, inbox = root / "data", root / "inbox"
    code, out, err = invoke("run", str(task_file), "--data-dir", str(data), env={"ADP_POLICY": "oracle",
                                                                                  "TASKS_DIR": str(inbox)})  # fmt: skip
    assert code == 0, err
    (batch,) = (
        path.name.removeprefix("batch=") for path in (data / "lake" / "tasks").iterdir() if "__" not in path.name
    )
    now = datetime.now(UTC)
    made = [
        {"task_id": f"synth_{n}", "task_type": "web", "generation": 1, "mutation": "reseed", "parent_task_ids": [],
         "essence_ids": [], "description": "d", "task": "{}", "task_file": str(inbox / name), "tokens": 0,
         "created_at": now}
        for n, name in enumerate(["synth-b.jsonl", "synth-a.jsonl", "synth-b.jsonl"])
    ]  # fmt: skip
    rejects: list[dict[str, object]] = [
        {"candidate_id": None, "task_type": "code", "mutation": "paraphrase", "stage": stage, "reason": "r",
         "parent_task_ids": [], "essence_ids": [], "tokens": 0, "created_at": now}
        for stage in ("model", "dedupe", "dedupe")
    ]  # fmt: skip
    lake = Lake(data)
    lake.write_partition("synthesized_tasks", batch, made)
    lake.write_partition("synthesis_rejects", batch, rejects)
    return Ran(data, task_file, batch, out, inbox)


def test_run_report_answers_each_question_from_the_lake_with_the_enums(ran: Ran) -> None:
    report = run_report(Lake(ran.data), [ran.batch, ABSENT])
    zero = TypeTally(verified=0, trajectories=0)
    assert report.batches == [
        BatchReport(
            batch=ran.batch,
            accepted=5,
            rejected=2,
            by_type={TaskType.CODE: TypeTally(2, 3), TaskType.WEB: zero, TaskType.REASONING: TypeTally(0, 2)},
        ),
        BatchReport(batch=ABSENT, accepted=0, rejected=0, by_type=dict.fromkeys(TaskType, zero)),
    ]
    assert list(report.batches[0].by_type) == list(TaskType)  # the table's column order

    # Most frequent first; the example is the first failed task of the file, not the first id.
    assert [(group.error_type, group.tasks) for group in report.failures] == [
        (ErrorType.SYSTEM_ERROR, 2),
        (ErrorType.RUNTIME_ERROR, 1),
    ]
    assert isinstance(report.failures[0], FailureGroup) and report.failures[0].example is not None
    assert report.failures[0].example.startswith("task 'think_z' has no constraints.reference_tool_calls")
    assert report.failures[1].example is not None and "AssertionError" in report.failures[1].example

    source = str(ran.task_file)
    assert [(line.source_file, line.line_number, line.field) for line in report.rejected_lines] == [
        (source, 5, None),
        (source, 7, "max_steps"),
    ]
    assert report.rejected_lines[0].reason.startswith("invalid JSON at line 5")
    with Lake(ran.data).connect() as connection:
        first = rejected_lines(connection, [ran.batch], limit=1)
        assert first == [report.rejected_lines[0]] and isinstance(first[0], RejectedLine)
        assert rejected_lines(connection, [ABSENT], limit=10) == []

    a, b = (str(ran.inbox / name) for name in ("synth-a.jsonl", "synth-b.jsonl"))
    assert report.synthesis == [
        SynthesisReport(
            batch=ran.batch, accepted=3, rejected_by_stage={Stage.DEDUPE: 2, Stage.MODEL: 1}, task_files=(a, b)
        ),
        SynthesisReport(batch=ABSENT, accepted=0, rejected_by_stage={}, task_files=()),
    ]
    assert list(report.synthesis[0].rejected_by_stage) == [Stage.DEDUPE, Stage.MODEL]


def test_a_batch_key_is_a_value_never_sql(ran: Ran) -> None:
    hostile = "x' OR '1'='1"
    report = run_report(Lake(ran.data), [hostile])
    assert report.batches[0].accepted == 0 and report.failures == [] and report.rejected_lines == []


def row(text: str, *cells: str, last_starts: bool = False) -> bool:
    """Whether a rich table in ``text`` has a row of exactly these cells (the last one only
    beginning so, with ``last_starts``: a long cell wraps)."""
    end = "" if last_starts else r"\s*│"
    return re.search(r"│\s*" + r"\s*│\s*".join(map(re.escape, cells)) + end, text) is not None


def test_the_run_summary_formats_the_report_as_before(ran: Ran, capsys: pytest.CaptureFixture[str]) -> None:
    assert re.search(r"┃ batch\s*┃ accepted ┃ rejected ┃ code ┃ web ┃ reasoning ┃", ran.stdout), ran.stdout
    assert row(ran.stdout, ran.batch, "5", "2", "2/3", "0/0", "0/2"), ran.stdout
    assert ran.stdout.index("system_error") < ran.stdout.index("runtime_error")
    assert row(ran.stdout, "system_error", "2", "task 'think_z' has no", last_starts=True)
    assert row(
        ran.stdout, "batch.jsonl:7", "max_steps", "field 'max_steps': Input should be a valid integer (got 'ten')"
    )
    assert 'all of them: adp query "select * from task_rejects"' in ran.stdout

    # With what synthesis wrote (added after the run): its table, stages and files in order.
    _print_run_summary([ran.batch], Settings(data_dir=ran.data, policy="oracle"))
    shown = capsys.readouterr().out
    a, b = (str(ran.inbox / name) for name in ("synth-a.jsonl", "synth-b.jsonl"))
    assert "synthesized tasks (the sensor runs their file; or `adp run` it)" in shown
    assert row(shown, ran.batch, "3", "dedupe 2, model 1", a) and row(shown, "", "", "", b), shown  # b wraps


# --- readers refuse a data dir where nothing has run -----------------------------------------


@pytest.mark.parametrize("existing", [False, True], ids=["typo", "empty-folder"])
def test_query_and_export_refuse_a_data_dir_without_a_lake_and_create_nothing(tmp_path: Path, existing: bool) -> None:
    data = tmp_path / "typo"
    if existing:
        data.mkdir()
    out = tmp_path / "train.jsonl"
    for args, code in [
        (("query", "select count(*) from tasks", "--data-dir", f"{data}/"), 2),
        (("query", "select count(*) from tasks", "--data-dir", str(data), "--format", "json"), 2),
        (("export", "--out", str(out), "--data-dir", str(data)), 2),
    ]:
        exit_code, stdout, stderr = invoke(*args)
        assert (exit_code, stdout) == (code, ""), (args, stderr)
        assert stderr.count("\n") == 1 and stderr.startswith(f"adp: error: {data}: {NO_DATA} ("), stderr
        assert data.exists() == existing and (not existing or list(data.iterdir()) == [])
        assert not out.exists() and list(tmp_path.iterdir()) == ([data] if existing else [])


def test_the_default_data_dir_is_refused_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ADP_DATA_DIR", raising=False)
    code, _, err = invoke("query", "select 1")
    assert code == 2 and f"{tmp_path / 'data'}: {NO_DATA}" in err
    assert list(tmp_path.iterdir()) == []


def test_query_create_makes_an_empty_lake_and_catalog_that_later_queries_read(tmp_path: Path) -> None:
    data = tmp_path / "new"
    code, out, err = invoke("query", "select count(*) as n from tasks", "--data-dir", str(data), "--create",
                            "--format", "json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == [{"n": 0}]
    assert catalog_path(data).is_file() and (data / "lake" / "tasks").is_dir()
    code, out, err = invoke("query", "select count(*) as n from trajectories", "--data-dir", str(data), "--format",
                            "json")  # fmt: skip
    assert code == 0 and json.loads(out) == [{"n": 0}], err


def test_a_data_dir_with_a_lake_but_no_catalog_is_read_without_create(ran: Ran, tmp_path: Path) -> None:
    # The catalog is views only: rebuilt by the reader, whereas a missing lake means nothing ran.
    catalog_path(ran.data).unlink()
    code, out, err = invoke("query", "select count(*) as n from tasks", "--data-dir", str(ran.data), "--format", "json")
    assert code == 0 and json.loads(out) == [{"n": 5}], err
    assert catalog_path(ran.data).is_file()


# --- export: nothing printed before its selection has run --------------------------------------


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("no_such_column = 1", "Binder Error"),  # found when DuckDB binds the selection
        ("task_id::INT = 3", "Conversion Error"),  # found only when it reads the rows
        ("no_such_function(task_id)", "Catalog Error"),
    ],
)
def test_export_prints_no_progress_before_a_where_duckdb_cannot_run(
    ran: Ran, tmp_path: Path, where: str, words: str
) -> None:
    out = tmp_path / "train.jsonl"
    code, stdout, stderr = invoke("export", "--out", str(out), "--data-dir", str(ran.data), "--where", where)
    assert code == 1 and stdout == ""
    assert stderr.startswith("adp: error: the selection failed (check --where): ") and words in stderr, stderr
    assert "exporting" not in stderr and "trajectories\n" not in stderr.split("adp: error:")[0]
    assert not out.exists()


def test_export_refusals_print_nothing_before_their_line_and_a_good_export_still_counts(
    ran: Ran, tmp_path: Path
) -> None:
    out = tmp_path / "train.jsonl"
    for args in (["--val-fraction", "2"], ["--where", "1; DROP TABLE tasks"]):
        code, _, stderr = invoke("export", "--out", str(out), "--data-dir", str(ran.data), *args)
        assert code in (1, 2) and stderr.startswith("adp: error: ") and stderr.count("adp: error:") == 1, stderr
        assert "exporting" not in stderr
    code, stdout, stderr = invoke("export", "--out", str(out), "--data-dir", str(ran.data))
    assert code == 0, stderr
    assert stderr == "exporting 2 trajectories\n"  # once the selection ran, and the count is the real one
    assert stdout.startswith(f"wrote {out}: 2 records (openai; train 2)\n")


# --- the README's command list ------------------------------------------------------------------


def test_the_readme_lists_every_command_with_every_option() -> None:
    """Each `adp` command has a line in the README's command list (its continuation lines
    indented), naming every one of its options."""
    section = (REPO / "README.md").read_text().split("## Commands", 1)[1]
    block = section.split("```", 2)[1]
    entries: dict[str, str] = {}
    for line in block.splitlines():
        if line.startswith("adp "):
            name = line.split()[1]
            entries[name] = line
        elif line.startswith(" ") and entries:
            entries[name] += line
    assert sorted(entries) == sorted(main.commands)
    for name, command in main.commands.items():
        options = {
            option
            for parameter in command.params
            if isinstance(parameter, click.Option)
            for option in parameter.opts
            if option.startswith("--") and option != "--help"
        }
        missing = sorted(option for option in options if not re.search(rf"{re.escape(option)}\b", entries[name]))
        assert missing == [], f"adp {name}: {missing} not in the README's command list"

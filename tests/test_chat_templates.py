"""Every record of a demo-sized export, rendered through the real chat templates of the tool-calling
families people fine-tune (tests/chat_templates/README.md), as a trainer renders it: the file loaded
with ``datasets``, ``apply_chat_template(messages, tools=tools)`` with ``tokenize=False`` and
``True``, under transformers 5.x (this venv) and 4.x (``.venv-tf4``, which ``make setup`` builds).
The checks themselves are in :mod:`tests.chat_templates.render`; the counts per template and file
are printed in the test output."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import transformers

from adp_pipeline.export import export_training_set
from adp_pipeline.storage import Lake
from tests.chat_templates import catalog, fetch, render
from tests.helpers import REPO, clean_env
from tests.pinned import needs as _needs

TF4_PYTHON = REPO / ".venv-tf4" / "bin" / "python"
EXPORTS = (("trl", "jsonl"), ("trl", "parquet"), ("openai", "jsonl"))


@pytest.fixture(scope="session")
def fetched() -> None:
    missing = fetch.missing()
    _needs(not missing, f"chat templates not fetched into {catalog.UPSTREAM}: {[t.name for t in missing]}")


@pytest.fixture(scope="session")
def template_exports(demo_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The demo lake exported as trl (JSONL, Parquet) and openai (JSONL), failed trajectories
    included; and the number of records in each."""
    root = tmp_path_factory.mktemp("template_exports")
    rows = set()
    for export_format, kind in EXPORTS:
        summary = export_training_set(
            Lake(demo_lake), root / f"{export_format}.{kind}", export_format=export_format, include_failed=True
        )
        rows.add(summary.rows)
    (count,) = rows
    assert count > 200
    return root, count


def _assert_every_record_rendered(report: dict[str, Any], count: int) -> None:
    assert not report["problems"], json.dumps(report["problems"], ensure_ascii=False, indent=1)[:4000]
    for template in catalog.TEMPLATES:
        for export_format, kind in EXPORTS:
            key = f"{template.name}|{export_format}.{kind}"
            # The demo's turns call one tool each: no record has a shape any template refuses.
            assert (report["rendered"].get(key, 0), report["refused"].get(key, 0)) == (count, 0), key


def test_every_record_renders_through_every_template_under_transformers_5(
    fetched: None, template_exports: tuple[Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, count = template_exports
    assert transformers.__version__.startswith("5."), transformers.__version__
    report = render.check_exports(directory, tmp_path / "hf")
    with capsys.disabled():
        print("\n" + report.table())
    _assert_every_record_rendered(report.as_json(), count)


def test_every_record_renders_through_every_template_under_transformers_4(
    fetched: None, template_exports: tuple[Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs(TF4_PYTHON.is_file(), f"no transformers 4.x venv at {TF4_PYTHON.parent.parent}")
    directory, count = template_exports
    out = tmp_path / "report.json"
    result = subprocess.run(
        [str(TF4_PYTHON), "-m", "tests.chat_templates.render", str(directory), "--report", str(out)],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    with capsys.disabled():
        print("\n" + result.stdout)
    assert out.is_file(), result.stdout + result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["transformers"].startswith("4."), report["transformers"]
    _assert_every_record_rendered(report, count)
    assert result.returncode == 0, result.stdout + result.stderr


def _parallel(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its first two call turns made one turn of two parallel calls (what a model
    that calls tools in parallel leaves): both calls, then both results."""
    messages = record["messages"]
    turns = [i for i, m in enumerate(messages) if m.get("tool_calls")]
    first, second = turns[:2]
    merged = {**messages[first], "tool_calls": messages[first]["tool_calls"] + messages[second]["tool_calls"]}
    results = [*messages[first + 1 : second], *messages[second + 1 : second + 2]]
    return {**record, "messages": [*messages[:first], merged, *results, *messages[second + 2 :]]}


def test_a_template_refuses_only_the_shapes_it_documents(
    fetched: None, template_exports: tuple[Path, int], tmp_path: Path
) -> None:
    """Llama 3.1 renders one call per assistant turn and Mistral needs alternating user/assistant
    turns: a record of that shape is refused with the template's own words, every other template
    renders it with every check passing, and a template that refused anything else would fail."""
    directory, _ = template_exports
    records = render.load(directory / "trl.jsonl", tmp_path / "hf")
    record = next(r for r in records if sum(bool(m.get("tool_calls")) for m in r["messages"]) >= 2)
    parallel = _parallel(record)
    answers = [{"role": "assistant", "content": "Done."}, {"role": "assistant", "content": "Done, again."}]
    unalternating = {**record, "messages": [*record["messages"], *answers]}
    refusing = {"llama3.1": [parallel], "mistral-nemo": [unalternating]}
    for template in catalog.TEMPLATES:
        for shape in (parallel, unalternating):
            if any(shape is refused for refused in refusing.get(template.name, [])):
                with pytest.raises(render.Refused):
                    render.check_record(template, shape)
            else:
                _, problems = render.check_record(template, shape)
                assert problems == [], (template.name, problems)


def test_a_changed_or_missing_template_file_is_fetched_again(fetched: None, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    shutil.copytree(catalog.UPSTREAM, upstream)
    assert fetch.missing(upstream) == []
    first, second = catalog.TEMPLATES[:2]
    (upstream / first.file).write_bytes((upstream / first.file).read_bytes() + b"\n")
    (upstream / second.file).unlink()
    assert fetch.missing(upstream) == [first, second]


def test_the_readme_names_each_template_its_source_and_hash() -> None:
    readme = (REPO / "tests" / "chat_templates" / "README.md").read_text(encoding="utf-8")
    for template in catalog.TEMPLATES:
        for fact in (template.name, template.model, template.package, template.member, template.sha256):
            assert fact in readme, (template.name, fact)


def _calls(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [call for message in record["messages"] for call in message.get("tool_calls") or []]


def _mutated(record: dict[str, Any], change: str) -> dict[str, Any]:
    """``record`` with one of the defects a consumer trips on (the ones #18 found, and kin)."""
    record = copy.deepcopy(record)
    messages = record["messages"]
    if change == "arguments as JSON text":
        for call in _calls(record):
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
    elif change == "arguments with null keys":  # Parquet's union struct of every tool's arguments
        for call in _calls(record):
            call["function"]["arguments"] = {"action": None, **call["function"]["arguments"]}
    elif change == "a call to a tool not listed":
        _calls(record)[0]["function"]["name"] = "shell"
    elif change == "a result without content":
        next(message for message in messages if message["role"] == "tool")["content"] = None
    elif change == "tools as JSON text":
        record["tools"] = json.dumps(record["tools"])
    elif change == "ids call_0, call_1":
        renamed = {call["id"]: f"call_{n}" for n, call in enumerate(_calls(record))}
        for message in messages:
            for call in message.get("tool_calls") or []:
                call["id"] = renamed[call["id"]]
            if message["role"] == "tool":
                message["tool_call_id"] = renamed[message["tool_call_id"]]
    elif change == "content null beside calls":
        for message in messages:
            if message.get("tool_calls"):
                message["content"] = None
    return record


ALL = {template.name for template in catalog.TEMPLATES}


@pytest.mark.parametrize(
    ("change", "caught_by"),
    [
        ("arguments as JSON text", ALL),
        ("arguments with null keys", ALL),
        ("a call to a tool not listed", ALL),
        ("a result without content", ALL),
        ("tools as JSON text", ALL),
        ("ids call_0, call_1", {"mistral-nemo"}),
        # transformers 5.x drops a None-valued key before rendering: only the templates that read
        # the key see it missing (4.x passes None on; the 4.x run sees more).
        ("content null beside calls", {"qwen3-release", "qwq"}),
    ],
)
def test_the_checks_catch_a_broken_record(
    fetched: None, template_exports: tuple[Path, int], tmp_path: Path, change: str, caught_by: set[str]
) -> None:
    directory, _ = template_exports
    record = next(r for r in render.load(directory / "trl.jsonl", tmp_path / "hf") if r["task_type"] == "web")
    broken = _mutated(record, change)
    assert broken != record
    caught = set()
    for template in catalog.TEMPLATES:
        assert render.check_record(template, record)[1] == []
        if render.check_record(template, broken)[1]:
            caught.add(template.name)
    assert caught == caught_by


@pytest.mark.parametrize(
    ("edit", "into", "reported"),
    [
        # Qwen2.5 with a tool result left out, arguments encoded twice, a missing value rendered.
        (
            "{{- message.content }}\n        {{- '\\n</tool_response>' }}",
            "{{- '\\n</tool_response>' }}",
            "</tool_response>' 1 times, found it 0 times",
        ),
        (
            "{{- tool_call.arguments | tojson }}",
            "{{- tool_call.arguments | tojson | tojson }}",
            """renders '"{\\\\"' """,
        ),
        (
            "{{- '}\\n</tool_call>' }}",
            "{{- '}\\n</tool_call>' + message.get('reasoning_content') | string }}",
            "renders 'None' ",
        ),
    ],
)
def test_the_checks_catch_a_template_that_loses_or_garbles_a_value(
    fetched: None, template_exports: tuple[Path, int], tmp_path: Path, edit: str, into: str, reported: str
) -> None:
    """A template that drops a result, double-encodes the arguments or renders ``None`` fails."""
    directory, _ = template_exports
    records = render.load(directory / "trl.jsonl", tmp_path / "hf")[:5]
    qwen = next(template for template in catalog.TEMPLATES if template.name == "qwen2.5")
    text = qwen.path.read_text(encoding="utf-8")
    assert text.count(edit) == 1
    (tmp_path / "broken.jinja").write_text(text.replace(edit, into), encoding="utf-8")
    broken = dataclasses.replace(qwen, name="qwen2.5-broken", file=str(tmp_path / "broken.jinja"))
    for record in records:
        assert render.check_record(qwen, record)[1] == []
        problems = render.check_record(broken, record)[1]
        assert any(reported in problem for problem in problems), problems

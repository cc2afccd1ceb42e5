"""Every export format, in JSONL and Parquet, read by the code that consumes it: the published
``atif`` models, Hugging Face ``datasets`` and ``pyarrow``, OpenAI's fine-tuning line (its SDK's
types), LLaMA-Factory's sharegpt converter. Records come from a demo-sized lake (HumanEval code,
MiniWoB web, the mixed examples), failed trajectories included, so every shape the agent leaves
is covered."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import atif
import datasets
import pyarrow.parquet as pq
import pytest

from adp_pipeline.export import FORMATS, REGISTRY, export_training_set, sidecar_path, tool_call_id
from adp_pipeline.export.formats import Source, check_messages, parquet_table
from adp_pipeline.storage import Lake
from runtimes.core import BrokenMessagesError, ExportError
from runtimes.settings import Settings
from tests.consumers.llamafactory import check_sharegpt, checked_templates, owner, refusals
from tests.consumers.openai_finetune import check_openai_line
from tests.helpers import CONSUMER_CHECKS, REPO, lake_trajectory_row

KINDS = ("jsonl", "parquet")


@pytest.fixture(scope="session")
def exports(demo_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Every format and file kind of the demo lake, failed trajectories included."""
    root = tmp_path_factory.mktemp("exports")
    out: dict[tuple[str, str], Path] = {}
    for export_format in FORMATS:
        for kind in KINDS:
            path = root / f"{export_format}.{kind}"
            summary = export_training_set(
                Lake(demo_lake),
                path,
                export_format=export_format,
                include_failed=True,
                val_fraction=0.1,
            )
            assert summary.rows > 200, summary.excluded
            out[export_format, kind] = path
    return out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    # JSON lines end at "\n" alone: a string may hold U+2028 or U+0085, which splitlines() splits at
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def _loaded(path: Path, tmp_path: Path) -> datasets.Dataset:
    kind = "parquet" if path.suffix == ".parquet" else "json"
    return datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))


def _report(label: str, count: int) -> None:
    CONSUMER_CHECKS.append((label, count))


def _calls(messages: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for message in messages:
        yield from message.get("tool_calls") or []


def _null_paths(value: Any, path: str = "$") -> Iterator[str]:
    if value is None:
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _null_paths(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _null_paths(item, f"{path}[{index}]")


# --- the defects of the issue, one test each --------------------------------------------------


def test_trl_parquet_tool_call_arguments_read_back_exactly(
    exports: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    """Parquet once gave every call a union struct of all tools' argument names, nulls included."""
    written = [
        call["function"]["arguments"]
        for record in _jsonl(exports["trl", "jsonl"])
        for call in _calls(record["messages"])
    ]
    through_datasets = [
        call["function"]["arguments"]
        for row in _loaded(exports["trl", "parquet"], tmp_path)
        for call in _calls(row["messages"])
    ]
    table = pq.read_table(exports["trl", "parquet"])
    through_pyarrow = [
        call["function"]["arguments"]
        for row in table.to_pylist()
        for call in _calls([json.loads(message) for message in row["messages"]])
    ]
    assert written and all(isinstance(arguments, dict) for arguments in written)
    assert through_datasets == written
    assert through_pyarrow == written
    _report("tool calls of trl parquet whose arguments read back exactly (datasets, pyarrow)", len(written))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("export_format", ["trl", "openai"])
def test_no_message_key_is_null_and_tool_only_turns_carry_no_null_content(
    exports: dict[tuple[str, str], Path], tmp_path: Path, export_format: str, kind: str
) -> None:
    """``content: null`` broke Qwen3/QwQ; every key of every message (None where absent, from
    Parquet) broke Llama-3.1 under transformers 4.x."""
    rows = _loaded(exports[export_format, kind], tmp_path)
    tool_only = 0
    for row in rows:
        assert list(_null_paths(row["messages"])) == [], row["messages"]
        assert list(_null_paths(row["tools"])) == []
        for message in row["messages"]:
            if message["role"] == "assistant" and message.get("tool_calls") and not message.get("content"):
                tool_only += 1
                if export_format == "trl":
                    assert message["content"] == ""
                else:  # OpenAI: content is optional with tool_calls
                    assert "content" not in message
    assert tool_only > 0
    _report(f"{export_format} {kind} without null keys", len(rows))


@pytest.mark.parametrize("export_format", FORMATS)
def test_tool_call_ids_are_nine_alphanumerics_deterministic_and_shared_by_the_formats(
    exports: dict[tuple[str, str], Path], export_format: str
) -> None:
    """Mistral Nemo / Small 3.x templates refuse any id that is not 9 alphanumerics."""
    trl = {
        record["task_id"]: [c["id"] for c in _calls(record["messages"])] for record in _jsonl(exports["trl", "jsonl"])
    }
    ids: dict[str, list[str]] = {}
    for record, task_id in zip(_jsonl(exports[export_format, "jsonl"]), trl, strict=True):
        if export_format == "atif":
            ids[task_id] = [call["tool_call_id"] for step in record["steps"] for call in step.get("tool_calls") or []]
        elif export_format == "sharegpt":
            continue  # sharegpt's function_call turns carry no ids
        else:
            ids[task_id] = [call["id"] for call in _calls(record["messages"])]
    every = [call_id for calls in trl.values() for call_id in calls]
    assert every and all(re.fullmatch(r"[A-Za-z0-9]{9}", call_id) for call_id in every)
    assert all(len(set(calls)) == len(calls) for calls in trl.values())
    if export_format != "sharegpt":
        assert ids == trl


@pytest.mark.parametrize("kind", KINDS)
def test_atif_records_validate_with_the_published_models(
    exports: dict[tuple[str, str], Path], tmp_path: Path, kind: str
) -> None:
    """The ``atif`` package's ``Trajectory`` forbids extra keys: adp's metadata lives in ``extra``."""
    path = exports["atif", kind]
    rows = _jsonl(path) if kind == "jsonl" else list(_loaded(path, tmp_path))
    for row in rows:
        trajectory = atif.Trajectory.model_validate(row)
        assert trajectory.schema_version == "ATIF-v1.8"
        assert trajectory.extra is not None and trajectory.extra["task_id"]
        calls = [call.tool_call_id for step in trajectory.steps for call in step.tool_calls or []]
        results = [
            result.source_call_id
            for step in trajectory.steps
            for result in (step.observation.results if step.observation else [])
        ]
        assert calls == results
    _report(f"atif {kind} validated by atif.Trajectory", len(rows))


def test_atif_parquet_through_pyarrow_validates_after_decoding_json_columns(
    exports: dict[tuple[str, str], Path],
) -> None:
    """The docs' pyarrow recipe: JSON-typed columns come back as text, ``json.loads`` them."""
    table = pq.read_table(exports["atif", "parquet"])
    json_columns = [field.name for field in table.schema if "json" in str(field.type)]
    assert json_columns
    rows = table.to_pylist()
    for row in rows:
        decoded = {
            key: (json.loads(value) if isinstance(value, str) else [json.loads(v) for v in value])
            if key in json_columns and value is not None
            else value
            for key, value in row.items()
        }
        atif.Trajectory.model_validate(decoded)
    _report("atif parquet through pyarrow", len(rows))


@pytest.mark.parametrize("kind", KINDS)
def test_openai_lines_have_only_the_fine_tuning_keys_and_metadata_is_in_a_sidecar(
    exports: dict[tuple[str, str], Path], tmp_path: Path, kind: str
) -> None:
    path = exports["openai", kind]
    rows = _jsonl(path) if kind == "jsonl" else list(_loaded(path, tmp_path))
    sidecar = path.with_name(f"{path.stem}.meta.{kind}")
    meta = _jsonl(sidecar) if kind == "jsonl" else pq.read_table(sidecar).to_pylist()
    assert len(meta) == len(rows)
    for row in rows:
        assert set(row) == {"messages", "tools"}
    trl_ids = [record["task_id"] for record in _jsonl(exports["trl", "jsonl"])]
    assert [item["task_id"] for item in meta] == trl_ids
    assert {"task_type", "batch", "policy", "verifier", "split"} <= set(meta[0])


LOAD_BLOCK = re.compile(r"<!-- load: (\w+) (jsonl|parquet) -->\n```python\n(.*?)```", re.DOTALL)


def test_the_docs_table_lists_every_format_and_its_load_recipes_run(
    exports: dict[tuple[str, str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/pipeline.md's formats table has a row per registered format, and each three-line
    recipe, run as written on a real export, loads every record."""
    text = (REPO / "docs" / "pipeline.md").read_text(encoding="utf-8")
    section = text[text.index("### Training-set formats") :]
    assert [row for row in FORMATS if f"\n| `{row}`" in section] == list(FORMATS)
    blocks = LOAD_BLOCK.findall(section)
    assert {export_format for export_format, _, _ in blocks} == set(FORMATS)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    for export_format, kind, code in blocks:
        assert len([line for line in code.split("\n") if line.strip()]) == 3, code
        folder = tmp_path / f"{export_format}-{kind}"
        folder.mkdir()
        source = exports[export_format, kind]
        shutil.copy(source, folder / f"train.{kind}")
        if REGISTRY[export_format].sidecar:
            shutil.copy(sidecar_path(source), folder / f"train.meta.{kind}")
        monkeypatch.chdir(folder)
        namespace: dict[str, Any] = {}
        exec(compile(code, f"docs/pipeline.md ({export_format} {kind})", "exec"), namespace)
        rows = len(_jsonl(exports[export_format, "jsonl"]))
        assert len(namespace["records"]) == rows
        if export_format == "atif":
            assert len(namespace["trajectories"]) == rows
        if export_format == "openai":
            assert [m["task_id"] for m in namespace["metadata"]] == [m["task_id"] for m in _jsonl(sidecar_path(source))]


@pytest.mark.parametrize("export_format", FORMATS)
def test_parquet_holds_exactly_the_records_of_the_jsonl_file(
    exports: dict[tuple[str, str], Path], tmp_path: Path, export_format: str
) -> None:
    """Nothing is dropped, added or altered on the way into Parquet: ``datasets`` reads back
    the JSON-lines records, key for key."""
    written = _jsonl(exports[export_format, "jsonl"])
    assert list(_loaded(exports[export_format, "parquet"], tmp_path)) == written
    _report(f"{export_format} parquet == jsonl", len(written))


def test_a_record_key_without_a_parquet_column_is_refused_not_dropped() -> None:
    schema = REGISTRY["trl"].parquet_schema
    record = {"messages": [{"role": "user", "content": "hi"}], "tools": [], "task_id": "t", "surprise": 1}
    with pytest.raises(ExportError, match=r"trl: the Parquet schema has no column for \['surprise'\]"):
        parquet_table(schema, [record], "trl")


@pytest.mark.parametrize("kind", KINDS)
def test_sharegpt_records_pass_llamafactorys_converter_and_tool_formatters(
    exports: dict[tuple[str, str], Path], tmp_path: Path, kind: str
) -> None:
    rows = list(_loaded(exports["sharegpt", kind], tmp_path))
    for row in rows:
        aligned = check_sharegpt(row)
        assert aligned[-1]["role"] in {"assistant", "function"}
    _report(f"sharegpt {kind} through LLaMA-Factory's loader ({len(checked_templates())} templates)", len(rows))


@pytest.mark.parametrize("kind", KINDS)
def test_openai_records_pass_openais_fine_tuning_line_schema(
    exports: dict[tuple[str, str], Path], tmp_path: Path, kind: str
) -> None:
    rows = _jsonl(exports["openai", kind]) if kind == "jsonl" else list(_loaded(exports["openai", kind], tmp_path))
    for row in rows:
        check_openai_line(row)
    _report(f"openai {kind} through OpenAI's fine-tuning line schema", len(rows))


def _source(messages: list[dict[str, Any]]) -> Source:
    tools = [
        {"type": "function", "function": {"name": name, "description": name, "parameters": {
            "type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"],
        }}}
        for name in ("lookup", "complete_task")
    ]  # fmt: skip
    return Source(
        task_id="shapes", task_type="reasoning", batch="b", policy="llm", model="m", verifier=None,
        n_steps=3, prompt_tokens=10, completion_tokens=5, total_tokens=15, generation=0, lineage=None,
        messages=messages, tools=tools, split="train",
    )  # fmt: skip


def _call(call_id: str, name: str, x: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps({"x": x})}}


def test_parallel_calls_and_text_beside_calls_survive_every_format() -> None:
    """Shapes the oracle never makes but a model does: two calls in one turn, text written before
    calls (kept, except by sharegpt, where not every template could read it), results that look
    like JSON numbers (kept as the tool wrote them)."""
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "add them"},
        {"role": "assistant", "content": "Looking both up.",
         "tool_calls": [_call("a", "lookup", "1"), _call("b", "lookup", "2")]},
        {"role": "tool", "tool_call_id": "a", "content": "1.50"},
        {"role": "tool", "tool_call_id": "b", "content": "2.50"},
        {"role": "assistant", "content": None, "tool_calls": [_call("c", "complete_task", "4.00")]},
        {"role": "tool", "tool_call_id": "c", "content": "task completed"},
    ]  # fmt: skip
    source = _source(messages)
    check_messages(messages)
    ids = [tool_call_id("shapes", n) for n in range(3)]

    openai = REGISTRY["openai"].record(source)
    check_openai_line(openai)
    assert [c["id"] for c in openai["messages"][2]["tool_calls"]] == ids[:2]
    assert openai["messages"][2]["content"] == "Looking both up." and "content" not in openai["messages"][5]

    trl = REGISTRY["trl"].record(source)
    assert [m.get("tool_call_id") for m in trl["messages"][3:5]] == ids[:2]
    assert [m["name"] for m in trl["messages"] if m["role"] == "tool"] == ["lookup", "lookup", "complete_task"]
    assert trl["messages"][5]["content"] == ""

    sharegpt = REGISTRY["sharegpt"].record(source)
    refused = refusals(sharegpt)  # GLM-4's tool format takes one call per turn, by design
    glm4 = {name for name in checked_templates() if owner().TEMPLATES[name].format_function.tool_format == "glm4"}
    assert set(refused) == glm4 and glm4, refused
    assert all("GLM-4 does not support parallel functions" in why for why in refused.values())
    aligned = check_sharegpt(sharegpt, templates=[name for name in checked_templates() if name not in refused])
    roles = [turn["from"] for turn in sharegpt["conversations"]]
    assert roles == ["human", "function_call", "observation", "function_call"]
    assert json.loads(sharegpt["conversations"][1]["value"]) == [
        {"name": "lookup", "arguments": {"x": "1"}}, {"name": "lookup", "arguments": {"x": "2"}}
    ]  # fmt: skip
    assert json.loads(sharegpt["conversations"][2]["value"]) == ["1.50", "2.50"]
    assert aligned[-1]["role"] == "function"

    trajectory = atif.Trajectory.model_validate(REGISTRY["atif"].record(source))
    assert [[c.tool_call_id for c in s.tool_calls or []] for s in trajectory.steps] == [[], [], ids[:2], ids[2:]]
    assert trajectory.steps[2].observation is not None
    assert [r.content for r in trajectory.steps[2].observation.results] == ["1.50", "2.50"]


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([{"role": "user", "content": "hi"}], "no assistant turn"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}], "neither text nor tool calls"),
        ([{"role": "assistant", "content": "hi"}], "no user message opens"),
    ],
)
def test_conversations_with_nothing_to_learn_are_left_out(messages: list[dict[str, Any]], reason: str) -> None:
    with pytest.raises(BrokenMessagesError, match=reason):
        check_messages(messages)


def test_shapes_a_model_server_leaves_are_exported_and_a_trailing_nudge_is_no_sharegpt_turn() -> None:
    """Ids reused from turn to turn (some servers number calls per turn), empty argument text
    (the loop runs it as no arguments), and a run that ended on the loop's nudge."""
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [_call("call_0", "lookup", "1")]},
        {"role": "tool", "tool_call_id": "call_0", "content": "one"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "complete_task", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "call_0", "content": "task completed"},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "Use a tool or call complete_task."},
    ]  # fmt: skip
    check_messages(messages)
    source = _source(messages)
    trl = REGISTRY["trl"].record(source)
    assert [c["id"] for m in trl["messages"] for c in m.get("tool_calls") or []] == [
        tool_call_id("shapes", 0), tool_call_id("shapes", 1)
    ]  # fmt: skip
    assert trl["messages"][3]["tool_calls"][0]["function"]["arguments"] == {}
    assert [m.get("tool_call_id") for m in trl["messages"] if m["role"] == "tool"] == [
        tool_call_id("shapes", 0), tool_call_id("shapes", 1)
    ]  # fmt: skip
    sharegpt = REGISTRY["sharegpt"].record(source)
    assert [turn["from"] for turn in sharegpt["conversations"]][-1] == "gpt"
    check_sharegpt(sharegpt)
    check_openai_line(REGISTRY["openai"].record(source))


@pytest.mark.parametrize("value", [float("nan"), "\ud83d"], ids=["nan", "lone-surrogate"])
def test_a_value_json_cannot_hold_leaves_its_record_out_not_the_file(
    tmp_path: Path, value: object, settings: Settings
) -> None:
    lake = Lake(settings.data_dir)
    good = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [_call("a", "complete_task", "ok")]},
        {"role": "tool", "tool_call_id": "a", "content": "task completed"},
    ]
    bad = [dict(message) for message in good]
    bad[1] = {**bad[1], "tool_calls": [{**_call("a", "complete_task", "x"), "function": {
        "name": "complete_task", "arguments": json.dumps({"x": value}),
    }}]}  # fmt: skip
    rows = [lake_trajectory_row(task_id, messages) for task_id, messages in (("good", good), ("bad", bad))]
    lake.write_partition("trajectories", "b-00000000", rows)
    for export_format in FORMATS:
        for kind in KINDS:
            summary = export_training_set(lake, tmp_path / f"{export_format}.{kind}", export_format=export_format)
            assert summary.rows == 1 and [task_id for task_id, _ in summary.excluded] == ["bad"], summary.excluded
            assert "a value JSON cannot hold" in summary.excluded[0][1]


def test_replacing_an_openai_export_with_another_format_removes_its_stale_metadata_file(
    demo_lake: Path, tmp_path: Path
) -> None:
    out = tmp_path / "train.jsonl"
    export_training_set(Lake(demo_lake), out, export_format="openai")
    assert sidecar_path(out).exists()
    export_training_set(Lake(demo_lake), out, export_format="trl", overwrite=True)
    assert not sidecar_path(out).exists()  # it described the records just replaced

"""The training-set export round trip: real trajectories out of the lake, through every format,
into Hugging Face `datasets` and a tool-calling chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import datasets
import jinja2.sandbox
import pytest

from adp_pipeline.export import FORMATS, export_training_set, split_of
from adp_pipeline.storage import Lake, ensure_catalog
from runtimes.settings import Settings
from tests.helpers import code_task, materialize_file, task_line

# A tool-calling chat template in the style of the Hugging Face ones (Qwen2.5, Hermes): tools in
# the system turn, calls as <tool_call> JSON, results as <tool_response>. It fails loudly (the
# raise_exception of HF templates) on a sequence a model cannot be trained on.
CHAT_TEMPLATE = """
{%- if tools %}<|im_start|>system
{{ messages[0].content if messages[0].role == 'system' else '' }}
# Tools
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools><|im_end|>
{% endif %}
{%- set ns = namespace(open=[]) %}
{%- for message in messages %}
{%- if message.role == 'system' %}{% if not tools %}<|im_start|>system
{{ message.content }}<|im_end|>
{% endif %}
{%- elif message.role == 'user' %}<|im_start|>user
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{{ message.content or '' }}
{%- for call in message.tool_calls or [] %}
{%- set arguments = call.function.arguments %}
{%- if arguments is string %}{{ raise_exception('arguments must be a mapping for this template') }}{% endif %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ arguments | tojson }}}
</tool_call>
{%- set ns.open = ns.open + [call.id] %}
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}
{%- if message.tool_call_id not in ns.open %}{{ raise_exception('a tool result with no call') }}{% endif %}
<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
"""


def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(CHAT_TEMPLATE).render(messages=messages, tools=tools)


@pytest.fixture
def lake(tmp_path: Path, settings: Settings, instance: dg.DagsterInstance) -> Lake:
    """Real trajectories of a batch (verified, one failing), plus one with broken messages."""
    path = tmp_path / "batch.jsonl"
    lines = [code_task(f"sum_{n}", f"print(sum(range({n})))", str(sum(range(n)))) for n in range(2, 12)]
    lines.append(code_task("wrong", "print(1)", "1", tests="assert False"))  # fails its verifier: not exported
    lines.append(task_line("web_page", "web", constraints={"reference_tool_calls": [
        {"name": "browser", "arguments": {"action": "goto", "url": "http://adp.local/inventory.html"}},
        {"name": "complete_task", "arguments": {"answer": "opened"}},
    ], "verify": {"url_contains": "inventory"}}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    assert materialize_file(path, settings, instance).success
    lake = Lake(settings.data_dir)
    # A trajectory whose tool result answers a call that was never made (a broken writer).
    with lake.connect() as connection:
        (row,) = (
            connection.sql("SELECT * EXCLUDE (batch) FROM trajectories WHERE task_id = 'sum_5'")
            .to_arrow_table()
            .to_pylist()
        )
    messages = json.loads(row["messages"])
    next(m for m in messages if m["role"] == "tool")["tool_call_id"] = "call_never_made"
    lake.write_partition(
        "trajectories", "broken-00000000", [{**row, "task_id": "broken", "messages": json.dumps(messages)}]
    )
    ensure_catalog(settings.data_dir)
    return lake


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
@pytest.mark.parametrize("export_format", FORMATS)
def test_every_format_loads_with_datasets_and_every_record_renders(
    lake: Lake, tmp_path: Path, export_format: str, suffix: str
) -> None:
    out = tmp_path / f"train-{export_format}{suffix}"
    summary = export_training_set(lake, out, export_format=export_format, val_fraction=0.3)  # type: ignore[arg-type]
    expected = {f"sum_{n}" for n in range(2, 12)} | {"web_page"}
    assert summary.rows == len(expected)
    assert summary.excluded == [("broken", "message 3: a tool result answers no open call ('call_never_made')")]

    loaded = datasets.load_dataset(
        "parquet" if suffix == ".parquet" else "json",
        data_files=str(out),
        split="train",
        cache_dir=str(tmp_path / "hf"),
    )
    assert sorted(loaded["task_id"]) == sorted(expected)
    assert {row["task_id"]: row["split"] for row in loaded} == {task_id: split_of(task_id, 0.3) for task_id in expected}
    assert set(loaded["split"]) == {"train", "validation"}
    for row in loaded:
        assert row["policy"] == "oracle" and row["n_steps"] >= 2 and json.loads(row["verifier"])["passed"]
        if export_format in ("openai", "trl"):
            tools = row["tools"] if isinstance(row["tools"], list) else json.loads(row["tools"])
            messages = _without_nulls(row["messages"])
            if export_format == "openai":  # arguments are JSON strings: decode them for the template
                for message in messages:
                    for call in message.get("tool_calls") or []:
                        call["function"]["arguments"] = json.loads(call["function"]["arguments"])
            calls = [c["id"] for m in messages for c in m.get("tool_calls") or []]
            results = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
            assert calls == results and len(set(calls)) == len(calls)  # every call paired, in order
            text = render(messages, tools)
            assert text.count("<tool_call>") == len(calls) == text.count("<tool_response>")
            assert '"name": "complete_task"' in text
        elif export_format == "sharegpt":
            roles = [turn["from"] for turn in row["conversations"]]
            assert roles[0] == "human" and roles[-1] == "function_call"  # ends with the assistant's turn
            assert all(a in {"human", "observation"} for a in roles[0::2])
            assert all(b in {"gpt", "function_call"} for b in roles[1::2])
            assert json.loads(roles and row["conversations"][-1]["value"])["name"] == "complete_task"
        else:
            steps = row["steps"]
            assert row["schema_version"] == "ATIF-v1.5" and [s["step_id"] for s in steps] == list(
                range(1, len(steps) + 1)
            )
            calls = [c["tool_call_id"] for s in steps for c in s.get("tool_calls") or []]
            results = [r["source_call_id"] for s in steps for r in (s.get("observation") or {}).get("results") or []]
            assert calls == results


def _without_nulls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parquet fills absent struct fields with None; a chat template reads them as absent."""
    out = []
    for message in messages:
        item = {key: value for key, value in message.items() if value is not None}
        for call in item.get("tool_calls") or []:
            arguments = call["function"]["arguments"]
            if isinstance(arguments, dict):
                call["function"]["arguments"] = {k: v for k, v in arguments.items() if v is not None}
        out.append(item)
    return out


def test_failed_trajectories_only_on_request_and_where_filters(lake: Lake, tmp_path: Path) -> None:
    everything = export_training_set(lake, tmp_path / "all.jsonl", include_failed=True)
    assert everything.rows == 12  # 10 sums, the web task, and the failed one
    code_only = export_training_set(lake, tmp_path / "code.jsonl", where="task_type = 'code'")
    assert code_only.rows == 10 and dict(code_only.by_type) == {"code": 10}
    assert code_only.by_split == {"train": 10}  # no validation fraction: all train

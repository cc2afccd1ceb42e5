"""The consumer checkers (tests/consumers/) accept what the consumers accept and reject what they
reject, each with the consumer's own code: LLaMA-Factory's, loaded from its pinned wheel; OpenAI's
SDK types. Pure checker tests: no adp export code, no lake; the export tests use these checkers on
real exports (tests/test_export_consumers.py). The example rows are ours, in each format's shape."""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletionToolMessageParam

from tests.consumers import catalog, fetch
from tests.consumers import llamafactory as lf
from tests.consumers.llamafactory import ADP_DATASET_INFO, check_sharegpt, checked_templates, owner, refusals
from tests.consumers.openai_finetune import check_openai_line, openai_line_problems
from tests.helpers import REPO
from tests.pinned import needs

# --- LLaMA-Factory ---------------------------------------------------------------------------------

SEARCH = {
    "name": "search_books",
    "description": "Find books by a word in the title",
    "parameters": {
        "type": "object",
        "properties": {"word": {"type": "string", "description": "a word of the title"}},
        "required": ["word"],
    },
}
TOOLS = json.dumps([SEARCH])  # bare function objects, as LLaMA-Factory's docs show them
CALL = '{"name": "search_books", "arguments": {"word": "tide"}}'


def sharegpt(*turns: tuple[str, Any], system: Any = "", tools: Any = TOOLS) -> dict[str, Any]:
    """A row in LLaMA-Factory's sharegpt shape: conversations (from/value), system, tools."""
    return {"conversations": [{"from": tag, "value": value} for tag, value in turns], "system": system, "tools": tools}


ROW = sharegpt(
    ("human", "Is there a book with 'tide' in its title?"),
    ("gpt", "Let me look."),
    ("human", "Please do."),
    ("function_call", CALL),
    ("observation", '{"titles": ["The Turning Tide"]}'),
    ("gpt", "Yes: The Turning Tide."),
    system="You answer questions about a library.",
)


def test_llamafactory_runs_from_the_pinned_wheel_without_its_trainer() -> None:
    lf_owner = owner()
    root = catalog.LLAMAFACTORY.root.resolve()
    for name in ("converter", "parser", "formatter", "template", "tool_utils", "processor.supervised"):
        module = sys.modules[f"llamafactory.data.{name}"]
        assert Path(module.__file__ or "").resolve().is_relative_to(root), module
    assert lf_owner.get_dataset_converter.__module__ == "llamafactory.data.converter"
    # the stand-ins: peft only while constants.py ran; torch never; the multimodal plugin unusable
    assert "peft" not in sys.modules and "torch" not in sys.modules
    with pytest.raises(RuntimeError, match="stand-in"):
        lf_owner.TEMPLATES["qwen"].mm_plugin.process_messages([], [], [], [], None)
    # one template of each kind, and between them every tool format LLaMA-Factory has
    templates = checked_templates()
    assert {"qwen", "qwen3", "llama3", "mistral", "default"} <= set(templates)
    assert {lf_owner.TEMPLATES[name].format_function.tool_format for name in templates} == set(lf_owner.TOOLS)
    assert len(lf_owner.TOOLS) >= 10 and len(lf_owner.TEMPLATES) > 100


def test_llamafactory_package_is_checked_by_hash_before_use(tmp_path: Path) -> None:
    needs(not fetch.missing(), "llamafactory not unpacked")
    upstream = tmp_path / "upstream"
    shutil.copytree(catalog.UPSTREAM, upstream, ignore=shutil.ignore_patterns("__pycache__"))
    assert fetch.missing(upstream) == []
    converter = upstream / catalog.LLAMAFACTORY.root.name / "llamafactory" / "data" / "converter.py"
    converter.write_text(converter.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    assert fetch.missing(upstream) == [catalog.LLAMAFACTORY]
    converter.unlink()
    assert fetch.missing(upstream) == [catalog.LLAMAFACTORY]
    assert fetch.missing(tmp_path / "nothing") == [catalog.LLAMAFACTORY]


def test_llamafactory_missing_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "missing", lambda: [catalog.LLAMAFACTORY])
    load = lf.owner.__wrapped__  # the uncached loader
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"llamafactory==0\.9\.5 not unpacked"):
        load()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="run `make setup`"):
        load()


def test_the_readme_names_each_wheel_and_its_hashes() -> None:
    readme = (REPO / "tests" / "consumers" / "README.md").read_text(encoding="utf-8")
    for wheel in catalog.WHEELS:
        for fact in (wheel.requirement, wheel.wheel_sha256, wheel.files_sha256):
            assert fact in readme, fact


def test_llamafactory_reads_the_dataset_description_adps_docs_give() -> None:
    docs = " ".join((REPO / "docs" / "pipeline.md").read_text(encoding="utf-8").split())
    match = re.search(r'"adp": (\{"file_name": .*?\}\})', docs)
    assert match, "docs/pipeline.md no longer gives the dataset_info.json entry"
    entry = json.loads(match.group(1))
    entry.pop("file_name")
    assert entry == ADP_DATASET_INFO


def test_llamafactory_accepts_a_tool_calling_row_under_every_template_kind() -> None:
    turns = check_sharegpt(ROW)
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user", "function", "observation", "assistant"]
    assert turns[3]["content"] == CALL
    # the description without a system column (LLaMA-Factory then ignores one): same turns
    columns = {"messages": "conversations", "tools": "tools"}
    assert check_sharegpt(ROW, {"formatting": "sharegpt", "columns": columns}) == turns


def test_llamafactory_accepts_parallel_calls_wrapped_tools_and_a_leading_system_turn() -> None:
    wrapped = json.dumps([{"type": "function", "function": SEARCH}])
    row = sharegpt(
        ("system", "Be brief."),
        ("human", "Two searches, please."),
        ("function_call", json.dumps([json.loads(CALL), json.loads(CALL)])),
        ("observation", '["none", "none"]'),
        ("gpt", "Nothing found."),
        tools=wrapped,
    )
    templates = owner().TEMPLATES
    # GLM-4's tool format refuses two calls in one turn, in its own words; every other takes them
    glm4 = {name for name in checked_templates() if templates[name].format_function.tool_format == "glm4"}
    refused = refusals(row)
    assert glm4 and set(refused) == glm4, refused
    for name, why in refused.items():
        assert f"'{name}' template raises ValueError: GLM-4 does not support parallel functions" in why
    with pytest.raises(ValueError, match="GLM-4 does not support parallel functions"):
        check_sharegpt(row)
    turns = check_sharegpt(row, templates=[name for name in checked_templates() if name not in refused])
    assert [turn["role"] for turn in turns] == ["user", "function", "observation", "assistant"]
    assert refusals(ROW) == {}


def test_llamafactory_pure_json_calls_load_under_every_registered_template() -> None:
    """Every template LLaMA-Factory has reads a function_call value that is the calls' JSON alone;
    text before the calls only where the template passes its tool-call words to its formatter."""
    row = sharegpt(("human", "a"), ("function_call", CALL), ("observation", "r"), ("gpt", "b"))
    check_sharegpt(row, templates=list(owner().TEMPLATES))
    beside = sharegpt(("human", "a"), ("function_call", f"Searching.<tool_call>{CALL}</tool_call>"),
                      ("observation", "r"), ("gpt", "b"))  # fmt: skip
    refused = refusals(beside, templates=list(owner().TEMPLATES))
    assert {"mistral", "gemma3", "llama2", "lfm2"} <= set(refused), sorted(refused)
    assert not {"qwen", "qwen3", "qwen3_5", "llama3", "glm4", "default"} & set(refused), sorted(refused)
    for name, why in refused.items():
        assert f"'{name}' template raises RuntimeError: Invalid JSON format in function message" in why


@pytest.mark.parametrize(
    ("turns", "problem"),
    [
        ([("human", "a"), ("gpt", "b"), ("human", "c")], "leaves this row out.*Invalid message count"),
        ([("human", "a"), ("human", "b")], "leaves this row out.*Invalid role tag"),
        ([("human", "a"), ("gpt", "b"), ("gpt", "c"), ("human", "d")], "Invalid role tag"),
        ([("human", "a"), ("function_call", CALL), ("observation", "r")], "Invalid message count"),
        ([("human", "a"), ("gpt", "b"), ("system", "c"), ("gpt", "d")], "Invalid role tag"),
        ([("user", "a"), ("assistant", "b")], "Invalid role tag"),
        ([], "leaves this row out of training: Dropped invalid example"),
    ],
    ids=["odd-count", "human-at-even", "gpt-at-odd", "ends-in-observation", "system-not-first", "unknown-tag", "empty"],
)
def test_llamafactory_rejects_a_conversation_it_leaves_out(turns: list[tuple[str, str]], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_sharegpt(sharegpt(*turns))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("search_books(word='tide')", "RuntimeError: Invalid JSON format in function message"),
        ('{"name": "search_books"}', "KeyError: 'arguments'"),
        ('"search_books"', "TypeError: string indices must be integers"),
        # double-encoded arguments, or a list: a tool format that walks the arguments' keys fails
        ('{"name": "search_books", "arguments": "{\\"word\\": \\"tide\\"}"}', "AttributeError: 'str' object"),
        ('{"name": "search_books", "arguments": ["tide"]}', "AttributeError: 'list' object"),
        (None, "TypeError: expected string or bytes-like object"),
    ],
    ids=["not-json", "no-arguments", "json-string", "double-encoded-arguments", "list-arguments", "null"],
)
def test_llamafactory_rejects_a_function_call_value_its_formatters_cannot_read(value: Any, problem: str) -> None:
    row = sharegpt(("human", "a"), ("function_call", value), ("observation", "r"), ("gpt", "b"))
    with pytest.raises(ValueError, match=problem):
        check_sharegpt(row)


@pytest.mark.parametrize("tag", ["human", "gpt", "observation"])
def test_llamafactory_rejects_a_turn_whose_value_is_not_text(tag: str) -> None:
    turns: list[tuple[str, str | None]] = [("human", "a"), ("function_call", CALL), ("observation", "r"), ("gpt", "b")]
    position = next(index for index, (turn_tag, _) in enumerate(turns) if turn_tag == tag)
    turns[position] = (tag, None)
    with pytest.raises(ValueError, match="RuntimeError: Expected a string, got None"):
        check_sharegpt(sharegpt(*turns))


@pytest.mark.parametrize(
    ("tools", "problem"),
    [
        ([SEARCH], "TypeError: the JSON object must be str"),  # decoded, e.g. a JSON-typed Parquet column
        ("search_books", "RuntimeError: Invalid JSON format in tool description"),
        ('[{"name": "f", "description": "no parameters"}]', "KeyError: 'parameters'"),
        ('["search_books"]', "AttributeError: 'str' object has no attribute 'get'"),
        ('[{"name": "f", "parameters": {"type": "object", "properties": {"n": {"enum": [1, 2]}}}}]', "TypeError"),
    ],
    ids=["decoded-list", "not-json", "no-parameters", "names-only", "non-string-enum"],
)
def test_llamafactory_rejects_tools_its_tool_formatters_cannot_read(tools: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_sharegpt(sharegpt(("human", "a"), ("gpt", "b"), tools=tools))


def test_llamafactory_rejects_a_row_without_the_columns_or_tags_it_reads() -> None:
    with pytest.raises(ValueError, match="SharegptDatasetConverter raises KeyError: 'system'"):
        check_sharegpt({"conversations": [], "tools": ""})  # the description names a system column
    with pytest.raises(ValueError, match="SharegptDatasetConverter raises KeyError: 'value'"):
        check_sharegpt({"conversations": [{"from": "human"}], "system": "", "tools": ""})
    with pytest.raises(ValueError, match="SharegptDatasetConverter raises TypeError"):
        check_sharegpt({"conversations": "hello", "system": "", "tools": ""})


# --- OpenAI fine-tuning ----------------------------------------------------------------------------

# A line of the training format with a tool call (the assistant turn carries only the call, and the
# line ends there), and a plain conversation.
CALL_LINE: dict[str, Any] = {
    "messages": [
        {"role": "user", "content": "How many metres is 3 miles?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c0nv3rt01",
                    "type": "function",
                    "function": {"name": "convert_length", "arguments": '{"value": 3, "from_unit": "mile"}'},
                }
            ],
        },
    ],
    "parallel_tool_calls": False,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "convert_length",
                "description": "Convert a length to metres",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "value": {"type": "number"},
                        "from_unit": {"type": "string", "enum": ["mile", "foot", "inch"]},
                    },
                    "required": ["value", "from_unit"],
                },
            },
        }
    ],
}
PLAIN_LINE: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "What is the boiling point of water at sea level?"},
        {"role": "assistant", "content": "100 degrees Celsius."},
    ]
}


def round_trip(**assistant: Any) -> dict[str, Any]:
    """CALL_LINE continued: the tool's result and the final answer."""
    line = copy.deepcopy(CALL_LINE)
    line["messages"][1].update(assistant)
    line["messages"] += [
        {"role": "tool", "tool_call_id": "c0nv3rt01", "content": "4828.032"},
        {"role": "assistant", "content": "About 4828 metres.", "weight": 1},
    ]
    return line


def test_openai_accepts_lines_of_the_format() -> None:
    check_openai_line(CALL_LINE)
    check_openai_line(PLAIN_LINE)
    check_openai_line(round_trip())


@pytest.mark.parametrize("content", [None, ""], ids=["null", "empty"])
def test_openai_allows_a_tool_call_turn_with_null_or_empty_content(content: str | None) -> None:
    """An assistant turn with tool calls may leave content out (CALL_LINE), null or empty: the SDK's
    assistant message types content as optional text, and the calls are what is trained on."""
    check_openai_line(round_trip(content=content))


def problems_of(change: Callable[[dict[str, Any]], object]) -> list[str]:
    line = round_trip()
    change(line)
    return openai_line_problems(line)


def assistant(line: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = line["messages"][1]
    return message


def call(line: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = assistant(line)["tool_calls"][0]
    return first


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        # keys the format does not define
        (lambda line: line.update(task_id="t1"), "task_id: Extra inputs are not permitted"),
        (lambda line: line["messages"][2].update(name="convert_length"), r"messages\[2\]\.name: Extra"),
        (lambda line: call(line)["function"].update(strict=True), r"function\.strict: Extra"),
        (lambda line: line["tools"][0]["function"].update(returns={}), r"tools\[0\]\.function\.returns: Extra"),
        (lambda line: line["messages"][0].update(weight=1), r"messages\[0\]\.weight: Extra"),
        (
            lambda line: line["messages"][0].update(content=[{"type": "text", "text": "hi", "cache": 1}]),
            r"messages\[0\]\.content\[0\]\.cache: Extra",
        ),
        # content null where the SDK's type has no null, or a turn with nothing in it
        (
            lambda line: assistant(line).pop("tool_calls"),
            r"messages\[1\]\.content: empty; assistant messages need text or tool calls",
        ),
        (lambda line: line["messages"][3].update(content=None), r"messages\[3\]\.content: empty"),
        (lambda line: line["messages"][3].update(content=""), r"messages\[3\]\.content: empty"),
        (lambda line: line["messages"][0].update(content=None), r"messages\[0\]\.content: Input should be"),
        (
            lambda line: line["messages"][0].update(content=""),
            r"messages\[0\]\.content: empty; user messages need text",
        ),
        (lambda line: line["messages"][2].update(content=None), r"messages\[2\]\.content: Input should be"),
        # arguments: a string holding a JSON object
        (lambda line: call(line)["function"].update(arguments={"value": 3}), r"arguments: Input should be a"),
        (lambda line: call(line)["function"].update(arguments="value=3"), r"arguments: not JSON"),
        (lambda line: call(line)["function"].update(arguments='"{}"'), r"arguments: JSON str.*double-encoded"),
        (lambda line: call(line)["function"].update(arguments="[1]"), r"arguments: JSON list, not an object"),
        # a null key where the schema has no null
        (lambda line: assistant(line).update(tool_calls=None), r"messages\[1\]\.tool_calls: Input should be iter"),
        (lambda line: line["messages"][0].update(name=None), r"messages\[0\]\.name: Input should be a valid str"),
        (lambda line: line.update(parallel_tool_calls=None), "parallel_tool_calls: Input should be a valid bool"),
        (lambda line: line.update(tools=None), "tools: Input should be a valid list"),
        (lambda line: line["messages"][3].update(weight=None), r"messages\[3\]\.weight: Input should be 0 or 1"),
        (lambda line: call(line).update(id=None), r"tool_calls\[0\]\.id: Input should be a valid string"),
        # the tool message and its call
        (lambda line: line["messages"][2].pop("tool_call_id"), r"messages\[2\]\.tool_call_id: Field required"),
        (lambda line: line["messages"][2].update(tool_call_id="other"), r"messages\[2\]\.tool_call_id: 'other'"),
        (lambda line: line["messages"].pop(2), r"tool_calls\[0\]: tool call 'c0nv3rt01' has no tool message before"),
        (lambda line: call(line).update(type="custom"), r"tool_calls\[0\]\.type: Input should be 'function'"),
        (lambda line: assistant(line).update(tool_calls=[{"id": "x"}]), r"tool_calls\[0\]\.function: Field req"),
        (lambda line: call(line)["function"].update(name="convert length"), r"function\.name: 'convert length' must"),
        # the line and its messages
        (lambda line: line.update(messages=[]), "messages: List should have at least 1 item"),
        (lambda line: line.pop("messages"), "messages: Field required"),
        (lambda line: line["messages"][0].update(role="developer"), r"messages\[0\]\.role: 'developer' is not"),
        (lambda line: line.update(messages=line["messages"][:1]), "messages: no assistant message"),
        (lambda line: line.update(parallel_tool_calls="false"), "parallel_tool_calls: Input should be a valid"),
    ],
    ids=[
        "extra-top-level-task_id",
        "extra-name-on-tool-message",
        "extra-key-in-call-function",
        "extra-key-in-tool-definition",
        "weight-on-user",
        "extra-key-in-content-part",
        "assistant-without-content-or-calls",
        "assistant-null-content-no-calls",
        "assistant-empty-content-no-calls",
        "user-null-content",
        "user-empty-content",
        "tool-null-content",
        "arguments-object",
        "arguments-not-json",
        "arguments-double-encoded",
        "arguments-json-list",
        "null-tool_calls",
        "null-name",
        "null-parallel_tool_calls",
        "null-tools",
        "null-weight",
        "null-call-id",
        "tool-without-tool_call_id",
        "tool-answers-unknown-call",
        "call-without-tool-message",
        "custom-tool-call",
        "lazy-iterable-element",
        "bad-function-name",
        "empty-messages",
        "no-messages",
        "unknown-role",
        "no-assistant",
        "string-bool",
    ],
)
def test_openai_rejects(change: Callable[[dict[str, Any]], object], problem: str) -> None:
    problems = problems_of(change)
    assert any(re.search(problem, p) for p in problems), problems


def test_openai_error_names_the_path_and_the_sdk_types_stay_unchanged() -> None:
    line = round_trip()
    line["task_id"] = "t1"
    call(line)["function"]["arguments"] = {"value": 3}
    with pytest.raises(ValueError) as caught:
        check_openai_line(line)
    assert "task_id: Extra inputs are not permitted" in str(caught.value)
    assert "messages[1].tool_calls[0].function.arguments: Input should be a valid string" in str(caught.value)
    with pytest.raises(ValueError, match="line: list, not a JSON object"):
        check_openai_line([])
    # extra="forbid" lives on our subclasses; the installed SDK's TypedDicts are not touched.
    assert not hasattr(ChatCompletionToolMessageParam, "__pydantic_config__")

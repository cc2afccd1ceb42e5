"""The consumer checkers (tests/consumers/) accept the owners' own examples and reject what the owners
reject. Pure checker tests: no adp export code, no lake; the export tests use these checkers on
real exports (tests/test_export_consumers.py)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from openai.types.chat import ChatCompletionToolMessageParam

from tests.consumers.llamafactory import (
    TOOL_FORMATS,
    DatasetAttr,
    FunctionCall,
    check_sharegpt,
    format_function_call,
    format_tools,
    parse_function_call,
)
from tests.consumers.openai_finetune import check_openai_line, openai_line_problems

# --- LLaMA-Factory ---------------------------------------------------------------------------------

# The first row of data/glaive_toolcall_en_demo.json, hiyouga/LLaMA-Factory@ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30
# (Apache-2.0), verbatim: the dataset data/README.md gives as the sharegpt example.
GLAIVE_ROW: dict[str, Any] = {
    "conversations": [
        {
            "from": "human",
            "value": "Hi, I have some ingredients and I want to cook something. Can you help me find a recipe?",
        },
        {
            "from": "gpt",
            "value": "Of course! I can help you with that. Please tell me what ingredients you have.",
        },
        {"from": "human", "value": "I have chicken, bell peppers, and rice."},
        {
            "from": "function_call",
            "value": '{"name": "search_recipes", "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]}}',
        },
        {
            "from": "observation",
            "value": '{"recipes": [{"name": "Chicken and Bell Pepper Stir Fry", "ingredients": ["chicken", "bell '
            'peppers", "rice"], "instructions": "Cut the chicken into small pieces. Slice the bell peppers. Cook the '
            'rice. Stir fry the chicken and bell peppers. Serve over rice."}, {"name": "Chicken and Rice Casserole", '
            '"ingredients": ["chicken", "bell peppers", "rice"], "instructions": "Cook the chicken and rice '
            'separately. Mix them together with the bell peppers in a casserole dish. Bake until golden brown."}]}',
        },
        {
            "from": "gpt",
            "value": 'I found two recipes for you. The first one is "Chicken and Bell Pepper Stir Fry". The '
            "instructions are: Cut the chicken into small pieces. Slice the bell peppers. Cook the rice. Stir fry "
            'the chicken and bell peppers. Serve over rice. The second one is "Chicken and Rice Casserole". The '
            "instructions are: Cook the chicken and rice separately. Mix them together with the bell peppers in a "
            "casserole dish. Bake until golden brown. Which one would you like to try?",
        },
        {
            "from": "human",
            "value": "They both sound delicious, but I think I'll try the stir fry. Can you order the ingredients "
            "for me?",
        },
        {
            "from": "gpt",
            "value": "I'm sorry, but as an AI, I don't have the capability to perform external tasks such as "
            "ordering ingredients. However, I can help you find more recipes or provide cooking tips if you need.",
        },
    ],
    "tools": '[{"name": "search_recipes", "description": "Search for recipes based on ingredients", "parameters": '
    '{"type": "object", "properties": {"ingredients": {"type": "array", "items": {"type": "string"}, "description": '
    '"The ingredients to search for"}}, "required": ["ingredients"]}}]',
}
# data/dataset_info.json's entry for glaive_toolcall_en_demo: columns messages and tools, no system.
GLAIVE = DatasetAttr(messages="conversations", tools="tools")


def sharegpt(*turns: tuple[str, str], system: str = "", tools: str = GLAIVE_ROW["tools"]) -> dict[str, Any]:
    """A row in data/README.md's sharegpt shape (conversations, system, tools)."""
    return {"conversations": [{"from": tag, "value": value} for tag, value in turns], "system": system, "tools": tools}


CALL = '{"name": "search_recipes", "arguments": {"ingredients": ["rice"]}}'


def test_llamafactory_accepts_the_owners_demo_row_under_every_tool_format():
    messages = check_sharegpt(GLAIVE_ROW, GLAIVE)
    assert [m["role"] for m in messages] == [
        "user",
        "assistant",
        "user",
        "function",
        "observation",
        "assistant",
        "user",
        "assistant",
    ]
    assert messages[3]["content"] == GLAIVE_ROW["conversations"][3]["value"]
    assert TOOL_FORMATS == ("default", "llama3", "mistral", "qwen", "qwen3_5")


def test_llamafactory_readme_shape_with_system_column_wrapped_tools_and_parallel_calls():
    """data/README.md's example (human, function_call, observation, gpt + system + tools), with real
    values; tools in the OpenAI wrapping, which every vendored tool_formatter unwraps or keeps."""
    wrapped = json.dumps([{"type": "function", "function": tool} for tool in json.loads(GLAIVE_ROW["tools"])])
    parallel = json.dumps([json.loads(CALL), json.loads(CALL)])
    row = sharegpt(
        ("human", "Find rice recipes."),
        ("function_call", parallel),
        ("observation", '[{"recipes": []}, {"recipes": []}]'),
        ("gpt", "None found."),
        system="You are a cook.",
        tools=wrapped,
    )
    assert [m["role"] for m in check_sharegpt(row)] == ["user", "function", "observation", "assistant"]
    # Bare or wrapped function objects render the same tool prompt.
    for tool_format in TOOL_FORMATS:
        if tool_format != "llama3":  # its prompt carries today's date
            assert format_tools(wrapped, tool_format) == format_tools(GLAIVE_ROW["tools"], tool_format)
    assert "> Tool Name: search_recipes" in format_tools(wrapped)


def test_llamafactory_takes_a_leading_system_turn_as_the_system_prompt():
    row = sharegpt(("system", "Be brief."), ("human", "Hi"), ("gpt", "Hello"))
    assert [m["role"] for m in check_sharegpt(row)] == ["user", "assistant"]


@pytest.mark.parametrize(
    ("turns", "problem"),
    [
        # odd message count: the demo row without its last answer
        ([(t["from"], t["value"]) for t in GLAIVE_ROW["conversations"][:-1]], "Invalid message count: 7"),
        # a human turn at an even (1-based) position
        ([("human", "a"), ("human", "b")], "Invalid role tag: turn 1 .* 'human'"),
        # a gpt turn at an odd position
        ([("human", "a"), ("gpt", "b"), ("gpt", "c"), ("human", "d")], "Invalid role tag: turn 2 .* 'gpt'"),
        # ending in the tool's result: observation can only sit at an odd position, so the count is odd
        ([("human", "a"), ("function_call", CALL), ("observation", "result")], "Invalid message count: 3"),
        # a system turn anywhere but first
        ([("human", "a"), ("gpt", "b"), ("system", "c"), ("gpt", "d")], "Invalid role tag: turn 2 .* 'system'"),
        # an unknown tag
        ([("user", "a"), ("assistant", "b")], "Invalid role tag: turn 0 .* 'user'"),
        # nothing to train on: the supervised processor drops it
        ([], "Dropped invalid example"),
    ],
    ids=[
        "odd-count",
        "human-at-even-position",
        "gpt-at-odd-position",
        "ends-in-observation",
        "system-not-first",
        "unknown-tag",
        "empty",
    ],
)
def test_llamafactory_rejects_a_broken_conversation(turns, problem):
    with pytest.raises(ValueError, match=problem):
        check_sharegpt(sharegpt(*turns))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("search_recipes(ingredients=['rice'])", "Invalid JSON format in function message"),
        ('{"name": "search_recipes"}', "must be an object with 'name' and 'arguments'"),
        ('"search_recipes"', "must be an object with 'name' and 'arguments'"),
        # double-encoded arguments: Qwen35ToolUtils.function_formatter calls .items() on them
        ('{"name": "search_recipes", "arguments": "{\\"ingredients\\": [\\"rice\\"]}"}', "must be a JSON object"),
        ('{"name": "search_recipes", "arguments": ["rice"]}', "must be a JSON object"),
    ],
)
def test_llamafactory_rejects_a_function_call_value_its_formatter_cannot_read(value, problem):
    row = sharegpt(("human", "a"), ("function_call", value), ("observation", "r"), ("gpt", "b"))
    with pytest.raises(ValueError, match=problem):
        check_sharegpt(row)


def test_llamafactory_rejects_a_value_that_is_not_a_string():
    row = sharegpt(("human", "a"), ("gpt", None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="turn 1 \\(assistant\\): Expected a string, got None"):
        check_sharegpt(row)


@pytest.mark.parametrize(
    ("tools", "problem"),
    [
        (json.loads(GLAIVE_ROW["tools"]), "tools is list, not JSON text"),  # a decoded list, e.g. from Parquet
        ("search_recipes", "Invalid JSON format in tool description"),
        ('[{"name": "f", "description": "no parameters"}]', "'default' tool_formatter fails"),
        ('["search_recipes"]', "tool_formatter fails"),
        ('[{"name": "f", "parameters": {"type": "object", "properties": {"n": {"enum": [1, 2]}}}}]', "fails"),
    ],
)
def test_llamafactory_rejects_tools_its_tool_formatter_cannot_read(tools, problem):
    with pytest.raises(ValueError, match=problem):
        check_sharegpt(sharegpt(("human", "a"), ("gpt", "b"), tools=tools))


def test_llamafactory_rejects_a_row_without_the_columns_or_tags_it_reads():
    with pytest.raises(ValueError, match="column 'system' is missing"):
        check_sharegpt({"conversations": [], "tools": ""})  # README's mapping reads a system column
    with pytest.raises(ValueError, match=r"conversations\[0\] lacks \['value'\]"):
        check_sharegpt({"conversations": [{"from": "human"}], "system": "", "tools": ""})


def test_llamafactory_parses_function_calls_as_its_function_formatter_does():
    assert parse_function_call(CALL) == [FunctionCall("search_recipes", '{"ingredients": ["rice"]}')]
    assert len(parse_function_call(f"[{CALL}, {CALL}]")) == 2
    # a thought before the call, or the call inside the template's tool_call words
    assert parse_function_call(f"<think>\nlook it up\n</think>\n\n{CALL}") == parse_function_call(CALL)
    assert parse_function_call(f"I will search.<tool_call>{CALL}</tool_call>") == parse_function_call(CALL)
    assert format_function_call(CALL) == 'Action: search_recipes\nAction Input: {"ingredients": ["rice"]}'
    assert format_function_call(CALL, "qwen") == (
        '<tool_call>\n{"name": "search_recipes", "arguments": {"ingredients": ["rice"]}}\n</tool_call>'
    )


# --- OpenAI fine-tuning ----------------------------------------------------------------------------

# FineTuneChatRequestInput's x-oaiMeta example, openai/openai-openapi openapi.yaml at
# 498c71ddf6f1c45b983f972ccabca795da211a3e (MIT), verbatim.
SPEC_EXAMPLE: dict[str, Any] = {
    "messages": [
        {"role": "user", "content": "What is the weather in San Francisco?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_id",
                    "type": "function",
                    "function": {
                        "name": "get_current_weather",
                        "arguments": '{"location": "San Francisco, USA", "format": "celsius"}',
                    },
                }
            ],
        },
    ],
    "parallel_tool_calls": False,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_current_weather",
                "description": "Get the current weather",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "The city and country, eg. San Francisco, USA"},
                        "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    },
                    "required": ["location", "format"],
                },
            },
        }
    ],
}
# The first example of the cookbook's toy_chat_fine_tuning.jsonl, as the data-prep notebook prints it
# (openai/openai-cookbook examples/Chat_finetuning_data_prep.ipynb, MIT).
COOKBOOK_EXAMPLE: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are a happy assistant that puts a positive spin on everything."},
        {"role": "user", "content": "I fell off my bike today."},
        {"role": "assistant", "content": "It's great that you're getting exercise outdoors!"},
    ]
}


def round_trip(**assistant: Any) -> dict[str, Any]:
    """The spec example continued: the tool's result and the final answer."""
    line = copy.deepcopy(SPEC_EXAMPLE)
    line["messages"][1].update(assistant)
    line["messages"] += [
        {"role": "tool", "tool_call_id": "call_id", "content": '{"temperature": 18}'},
        {"role": "assistant", "content": "It is 18 degrees.", "weight": 1},
    ]
    return line


def test_openai_accepts_the_owners_examples():
    check_openai_line(SPEC_EXAMPLE)
    check_openai_line(COOKBOOK_EXAMPLE)
    check_openai_line(round_trip())


@pytest.mark.parametrize("content", [None, ""], ids=["null", "empty"])
def test_openai_allows_a_tool_call_turn_with_null_or_empty_content(content):
    """ChatCompletionRequestAssistantMessage.content is `nullable: true`, "Required unless
    `tool_calls` or `function_call` is specified": absent (the spec's example), null or empty."""
    check_openai_line(round_trip(content=content))


def problems_of(change) -> list[str]:
    line = round_trip()
    change(line)
    return openai_line_problems(line)


def assistant(line: dict[str, Any]) -> dict[str, Any]:
    return line["messages"][1]


def call(line: dict[str, Any]) -> dict[str, Any]:
    return line["messages"][1]["tool_calls"][0]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        # keys the format does not define
        (lambda line: line.update(task_id="t1"), "task_id: Extra inputs are not permitted"),
        (lambda line: line["messages"][2].update(name="get_current_weather"), r"messages\[2\]\.name: Extra"),
        (lambda line: call(line)["function"].update(strict=True), r"function\.strict: Extra"),
        (lambda line: line["tools"][0]["function"].update(returns={}), r"tools\[0\]\.function\.returns: Extra"),
        (lambda line: line["messages"][0].update(weight=1), r"messages\[0\]\.weight: Extra"),
        (
            lambda line: line["messages"][0].update(content=[{"type": "text", "text": "hi", "cache": 1}]),
            r"messages\[0\]\.content\[0\]\.cache: Extra",
        ),
        # content null where the spec has no null, or a turn with nothing in it
        (lambda line: assistant(line).pop("tool_calls"), r"messages\[1\]\.content: missing_content"),
        (lambda line: line["messages"][3].update(content=None), r"messages\[3\]\.content: missing_content"),
        (lambda line: line["messages"][3].update(content=""), r"messages\[3\]\.content: missing_content"),
        (lambda line: line["messages"][0].update(content=None), r"messages\[0\]\.content: Input should be"),
        (lambda line: line["messages"][0].update(content=""), r"messages\[0\]\.content: missing_content"),
        (lambda line: line["messages"][2].update(content=None), r"messages\[2\]\.content: Input should be"),
        # arguments: a string holding a JSON object
        (lambda line: call(line)["function"].update(arguments={"location": "SF"}), r"arguments: Input should be a"),
        (lambda line: call(line)["function"].update(arguments="location=SF"), r"arguments: not JSON"),
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
        (lambda line: line["messages"].pop(2), r"tool_calls\[0\]: tool call 'call_id' has no tool message before"),
        (lambda line: call(line).update(type="custom"), r"tool_calls\[0\]\.type: Input should be 'function'"),
        (lambda line: assistant(line).update(tool_calls=[{"id": "x"}]), r"tool_calls\[0\]\.function: Field req"),
        (lambda line: call(line)["function"].update(name="get weather"), r"function\.name: 'get weather' must"),
        # the line and its messages
        (lambda line: line.update(messages=[]), "messages: List should have at least 1 item"),
        (lambda line: line.pop("messages"), "messages: Field required"),
        (lambda line: line["messages"][0].update(role="developer"), r"messages\[0\]\.role: 'developer' is not"),
        (lambda line: line.update(messages=line["messages"][:1]), "example_missing_assistant_message"),
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
def test_openai_rejects(change, problem):
    problems = problems_of(change)
    assert any(re.search(problem, p) for p in problems), problems


def test_openai_error_names_the_path_and_the_sdk_types_stay_unchanged():
    line = round_trip()
    line["task_id"] = "t1"
    call(line)["function"]["arguments"] = {"location": "SF"}
    with pytest.raises(ValueError) as caught:
        check_openai_line(line)
    assert "task_id: Extra inputs are not permitted" in str(caught.value)
    assert "messages[1].tool_calls[0].function.arguments: Input should be a valid string" in str(caught.value)
    with pytest.raises(ValueError, match="line: list, not a JSON object"):
        check_openai_line([])
    # extra="forbid" lives on our subclasses; the installed SDK's TypedDicts are not touched.
    assert not hasattr(ChatCompletionToolMessageParam, "__pydantic_config__")

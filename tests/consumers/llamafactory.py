# ruff: noqa: SIM108, RUF010
# (the vendored code below keeps LLaMA-Factory's own style: if/else assignments, str() in f-strings)
"""LLaMA-Factory's sharegpt-with-tools rules, vendored from the owner's code.

Source: https://github.com/hiyouga/LLaMA-Factory, commit ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30
(2026-08-18). Copyright 2025 the LlamaFactory team. Licensed under the Apache License, Version 2.0
(http://www.apache.org/licenses/LICENSE-2.0); distributed on an "AS IS" BASIS, WITHOUT WARRANTIES
OR CONDITIONS OF ANY KIND. Copied code, by file:

- ``src/llamafactory/data/data_utils.py``: ``Role``.
- ``src/llamafactory/data/parser.py``: ``DatasetAttr`` (the sharegpt columns and tags with their
  defaults; hub/loading fields left out).
- ``src/llamafactory/data/converter.py``: ``SharegptDatasetConverter.__call__`` (the supervised
  path: odd/even tag positions, even message count, system tag; the kto, ranking and media
  branches are left out, adp writes none of them).
- ``src/llamafactory/data/processor/supervised.py``: the "Dropped invalid example" test of
  ``SupervisedDatasetProcessor.preprocess_dataset``.
- ``src/llamafactory/data/template.py``: the role dispatch of ``Template._encode`` and the
  ``register_template`` defaults for ``thought_words`` / ``tool_call_words``.
- ``src/llamafactory/data/formatter.py``: ``StringFormatter.apply``'s string check,
  ``FunctionFormatter.apply`` (how a ``function_call`` value is parsed), ``ToolFormatter.apply``
  (how the ``tools`` text is parsed).
- ``src/llamafactory/data/tool_utils.py``: ``FunctionCall``, the prompts and the
  ``tool_formatter`` / ``function_formatter`` of ``DefaultToolUtils`` (templates without their own
  tool format), ``QwenToolUtils`` (Qwen2.5/Qwen3 templates), ``Qwen35ToolUtils``,
  ``Llama3ToolUtils`` and ``MistralToolUtils``: the tool formats of most templates people use.

Changes: imports; ``logger.warning_rank0(msg)`` followed by dropping the row becomes
``raise ValueError(msg + where)``: the owner silently skips a broken row and we want to know.
Exceptions the owner lets escape (``RuntimeError`` from the formatters, ``KeyError`` /
``TypeError`` / ``AttributeError`` from a malformed value, which would abort LLaMA-Factory's whole
``dataset.map``) are re-raised as ``ValueError`` naming the value. ``SharegptDatasetConverter``
is a function taking the ``DatasetAttr``.

The dataset description (``data/dataset_info.json``) is the one ``data/README.md`` gives for a
sharegpt dataset, ``{"formatting": "sharegpt", "columns": {"messages": "conversations",
"system": "system", "tools": "tools"}}``; the shipped ``glaive_toolcall_en_demo`` entry maps
only ``messages`` and ``tools`` (a ``system`` column is then ignored).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum, unique
from typing import Any, NamedTuple

__all__ = [
    "TOOL_FORMATS",
    "DatasetAttr",
    "FunctionCall",
    "check_sharegpt",
    "format_function_call",
    "format_tools",
    "parse_function_call",
]


# --- src/llamafactory/data/data_utils.py -------------------------------------------------------
@unique
class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    FUNCTION = "function"
    OBSERVATION = "observation"


# --- src/llamafactory/data/parser.py (sharegpt fields) -----------------------------------------
@dataclass
class DatasetAttr:
    r"""Dataset attributes (``messages``, ``role_tag``, ``content_tag`` typed ``str``: never None here)."""

    formatting: str = "sharegpt"
    ranking: bool = False
    # common columns
    system: str | None = None
    tools: str | None = None
    # sharegpt columns
    messages: str = "conversations"
    # sharegpt tags
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str | None = "human"
    assistant_tag: str | None = "gpt"
    observation_tag: str | None = "observation"
    function_tag: str | None = "function_call"
    system_tag: str | None = "system"


# data/README.md, "Sharegpt Format": the dataset description it gives for a sharegpt dataset.
README_SHAREGPT = DatasetAttr(messages="conversations", system="system", tools="tools")


# --- src/llamafactory/data/tool_utils.py ----------------------------------------------------------
class FunctionCall(NamedTuple):
    name: str
    arguments: str


DEFAULT_TOOL_PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n"
    "```\n"
    "Action: tool name (one of [{tool_names}])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    """(e.g. ```{{"input": "hello world", "num_beams": 5}}```)\n"""
    "```\n"
)

LLAMA3_TOOL_PROMPT = (
    "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n"
    "You have access to the following functions. To call a function, please respond with JSON for a function call. "
    """Respond in the format {{"name": function name, "parameters": dictionary of argument name and its value}}. """
    "Do not use variables.\n\n{tool_text}"
)

QWEN_TOOL_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    """<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, """
    """"arguments": <args-json-object>}}\n</tool_call>"""
)

QWEN35_TOOL_PROMPT = (
    "\n\n# Tools\n\nYou have access to the following functions:\n\n<tools>{tool_text}"
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
    "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n"
    "- Function calls MUST follow the specified format: "
    "an inner <function=...></function> block must be nested within <tool_call></tool_call> XML tags\n"
    "- Required parameters MUST be specified\n"
    "- You may provide optional reasoning for your function call in natural language "
    "BEFORE the function call, but NOT after\n"
    "- If there is no function call available, answer the question like normal with your current knowledge "
    "and do not tell the user about function calls\n</IMPORTANT>"
)


class DefaultToolUtils:
    r"""Default tool using template."""

    @staticmethod
    def tool_formatter(tools: list[dict[str, Any]]) -> str:
        tool_text = ""
        tool_names = []
        for tool in tools:
            tool = tool.get("function", "") if tool.get("type") == "function" else tool
            param_text = ""
            for name, param in tool["parameters"]["properties"].items():
                required, enum, items = "", "", ""
                if name in tool["parameters"].get("required", []):
                    required = ", required"

                if param.get("enum", None):
                    enum = ", should be one of [{}]".format(", ".join(param["enum"]))

                if param.get("items", None):
                    items = ", where each item should be {}".format(param["items"].get("type", ""))

                param_text += "  - {name} ({type}{required}): {desc}{enum}{items}\n".format(
                    name=name,
                    type=param.get("type", ""),
                    required=required,
                    desc=param.get("description", ""),
                    enum=enum,
                    items=items,
                )

            tool_text += "> Tool Name: {name}\nTool Description: {desc}\nTool Args:\n{args}\n".format(
                name=tool["name"], desc=tool.get("description", ""), args=param_text
            )
            tool_names.append(tool["name"])

        return DEFAULT_TOOL_PROMPT.format(tool_text=tool_text, tool_names=", ".join(tool_names))

    @staticmethod
    def function_formatter(functions: list[FunctionCall]) -> str:
        return "\n".join([f"Action: {name}\nAction Input: {arguments}" for name, arguments in functions])


class Llama3ToolUtils:
    r"""Llama 3.x tool using template with `tools_in_user_message=False`."""

    @staticmethod
    def tool_formatter(tools: list[dict[str, Any]]) -> str:
        date = datetime.now().strftime("%d %b %Y")
        tool_text = ""
        for tool in tools:
            wrapped_tool = tool if tool.get("type") == "function" else {"type": "function", "function": tool}
            tool_text += json.dumps(wrapped_tool, indent=4, ensure_ascii=False) + "\n\n"

        return LLAMA3_TOOL_PROMPT.format(date=date, tool_text=tool_text)

    @staticmethod
    def function_formatter(functions: list[FunctionCall]) -> str:
        function_objects = [{"name": name, "parameters": json.loads(arguments)} for name, arguments in functions]
        return json.dumps(function_objects[0] if len(function_objects) == 1 else function_objects, ensure_ascii=False)


class MistralToolUtils:
    r"""Mistral v0.3 tool using template."""

    @staticmethod
    def tool_formatter(tools: list[dict[str, Any]]) -> str:
        wrapped_tools = []
        for tool in tools:
            wrapped_tools.append(tool if tool.get("type") == "function" else {"type": "function", "function": tool})

        return "[AVAILABLE_TOOLS] " + json.dumps(wrapped_tools, ensure_ascii=False) + "[/AVAILABLE_TOOLS]"

    @staticmethod
    def function_formatter(functions: list[FunctionCall]) -> str:
        return json.dumps(
            [{"name": name, "arguments": json.loads(arguments)} for name, arguments in functions], ensure_ascii=False
        )


class QwenToolUtils:
    r"""Qwen 2.5 tool using template."""

    @staticmethod
    def tool_formatter(tools: list[dict[str, Any]]) -> str:
        tool_text = ""
        for tool in tools:
            wrapped_tool = tool if tool.get("type") == "function" else {"type": "function", "function": tool}
            tool_text += "\n" + json.dumps(wrapped_tool, ensure_ascii=False)

        return QWEN_TOOL_PROMPT.format(tool_text=tool_text)

    @staticmethod
    def function_formatter(functions: list[FunctionCall]) -> str:
        function_texts = [
            json.dumps({"name": name, "arguments": json.loads(arguments)}, ensure_ascii=False)
            for name, arguments in functions
        ]
        return "\n".join([f"<tool_call>\n{text}\n</tool_call>" for text in function_texts])


class Qwen35ToolUtils:
    r"""Qwen 3.5 tool using template."""

    @staticmethod
    def tool_formatter(tools: list[dict[str, Any]]) -> str:
        tool_text = ""
        for tool in tools:
            tool = tool.get("function", tool) if tool.get("type") == "function" else tool
            tool_text += "\n" + json.dumps(tool, ensure_ascii=False)

        return QWEN35_TOOL_PROMPT.format(tool_text=tool_text)

    @staticmethod
    def function_formatter(functions: list[FunctionCall]) -> str:
        function_texts = []
        for func in functions:
            name, arguments = func.name, json.loads(func.arguments)
            prompt = f"<tool_call>\n<function={name}>"
            for key, value in arguments.items():
                prompt += f"\n<parameter={key}>"
                if not isinstance(value, str):
                    value = json.dumps(value, ensure_ascii=False)
                prompt += f"\n{value}\n</parameter>"
            prompt += "\n</function>\n</tool_call>"
            function_texts.append(prompt)

        return "\n".join(function_texts)


class _ToolUtils(NamedTuple):
    tool_formatter: Callable[[list[dict[str, Any]]], str]
    function_formatter: Callable[[list[FunctionCall]], str]


# tool_utils.TOOLS, the vendored subset; keyed by the `tool_format` the templates name.
TOOLS: dict[str, _ToolUtils] = {
    "default": _ToolUtils(DefaultToolUtils.tool_formatter, DefaultToolUtils.function_formatter),
    "llama3": _ToolUtils(Llama3ToolUtils.tool_formatter, Llama3ToolUtils.function_formatter),
    "mistral": _ToolUtils(MistralToolUtils.tool_formatter, MistralToolUtils.function_formatter),
    "qwen": _ToolUtils(QwenToolUtils.tool_formatter, QwenToolUtils.function_formatter),
    "qwen3_5": _ToolUtils(Qwen35ToolUtils.tool_formatter, Qwen35ToolUtils.function_formatter),
}
TOOL_FORMATS: tuple[str, ...] = tuple(TOOLS)

# template.register_template: the defaults every template gets unless it names its own.
THOUGHT_WORDS = ("<think>\n", "\n</think>\n\n")
TOOL_CALL_WORDS = ("<tool_call>", "</tool_call>")


# --- src/llamafactory/data/formatter.py --------------------------------------------------------
def parse_function_call(
    content: str,
    thought_words: tuple[str, str] | None = THOUGHT_WORDS,
    tool_call_words: tuple[str, str] | None = TOOL_CALL_WORDS,
) -> list[FunctionCall]:
    """The calls of a ``function_call`` value, parsed as ``FunctionFormatter.apply`` does: a JSON
    object ``{"name", "arguments"}`` or a list of them (parallel calls), optionally inside
    ``<tool_call>…</tool_call>`` or after a ``<think>…</think>`` thought."""
    if not isinstance(content, str):
        raise ValueError(f"function_call value is {type(content).__name__}, not a string (StringFormatter)")

    def _parse_functions(json_content: str) -> list[FunctionCall]:
        try:
            tool_calls = json.loads(json_content)
            if not isinstance(tool_calls, list):  # parallel function call
                tool_calls = [tool_calls]

            return [FunctionCall(tc["name"], json.dumps(tc["arguments"], ensure_ascii=False)) for tc in tool_calls]
        except json.JSONDecodeError:
            raise ValueError(f"Invalid JSON format in function message: {str([content])}.") from None
        except (KeyError, TypeError) as err:  # the owner lets these escape (dataset.map aborts)
            raise ValueError(
                f"function_call value {content[:200]!r}: each call must be an object with 'name' and 'arguments' "
                f"({type(err).__name__}: {err})"
            ) from None

    tool_call_match = None
    if tool_call_words and len(tool_call_words) == 2:
        tool_call_regex = re.compile(rf"{re.escape(tool_call_words[0])}(.*?){re.escape(tool_call_words[1])}", re.DOTALL)
        tool_call_match = re.search(tool_call_regex, content)

    if tool_call_match is None:
        thought_match = None
        if thought_words and len(thought_words) == 2:
            regex = re.compile(rf"{re.escape(thought_words[0])}(.*?){re.escape(thought_words[1])}", re.DOTALL)
            thought_match = re.search(regex, content)

        if thought_match:
            json_part = content.replace(thought_match.group(0), "")
        else:
            json_part = content

        return _parse_functions(json_part)
    return _parse_functions(tool_call_match.group(1))


def format_function_call(content: str, tool_format: str = "default") -> str:
    """What ``FunctionFormatter(tool_format=...)`` renders for a ``function_call`` value."""
    functions = parse_function_call(content)
    try:
        return TOOLS[tool_format].function_formatter(functions)
    except (json.JSONDecodeError, AttributeError, TypeError, KeyError, ValueError) as err:
        # e.g. Qwen35ToolUtils calls `.items()` on the decoded arguments: they must be an object.
        raise ValueError(
            f"function_call value {content[:200]!r}: the {tool_format!r} function_formatter fails "
            f"({type(err).__name__}: {err}); arguments must be a JSON object"
        ) from None


def format_tools(content: str, tool_format: str = "default") -> str:
    """What ``ToolFormatter(tool_format=...).apply(content=tools)`` renders for the ``tools`` text."""
    if not isinstance(content, str):
        # json.loads raises TypeError here, which ToolFormatter does not catch.
        raise ValueError(f"tools is {type(content).__name__}, not JSON text")
    try:
        tools = json.loads(content)
    except json.JSONDecodeError:
        raise ValueError(f"Invalid JSON format in tool description: {str([content[:200]])}.") from None
    try:
        return TOOLS[tool_format].tool_formatter(tools) if len(tools) != 0 else ""
    except (AttributeError, TypeError, KeyError) as err:
        raise ValueError(
            f"tools {content[:200]!r}: the {tool_format!r} tool_formatter fails ({type(err).__name__}: {err}); "
            "tools must be a JSON list of function objects (bare or {'type': 'function', 'function': ...}) "
            "with parameters.properties"
        ) from None


def _string(content: Any, where: str) -> str:
    # StringFormatter.apply: `if not isinstance(value, str): raise RuntimeError(f"Expected a string, got {value}")`
    if not isinstance(content, str):
        raise ValueError(f"{where}: Expected a string, got {content!r}")
    return content


# --- src/llamafactory/data/converter.py: SharegptDatasetConverter.__call__ -----------------------
def convert_sharegpt(example: dict[str, Any], dataset_attr: DatasetAttr = README_SHAREGPT) -> dict[str, Any]:
    tag_mapping = {
        dataset_attr.user_tag: Role.USER.value,
        dataset_attr.assistant_tag: Role.ASSISTANT.value,
        dataset_attr.observation_tag: Role.OBSERVATION.value,
        dataset_attr.function_tag: Role.FUNCTION.value,
        dataset_attr.system_tag: Role.SYSTEM.value,
    }
    odd_tags = (dataset_attr.user_tag, dataset_attr.observation_tag)
    even_tags = (dataset_attr.assistant_tag, dataset_attr.function_tag)
    accept_tags = (odd_tags, even_tags)
    messages = example[dataset_attr.messages]
    if dataset_attr.system_tag and len(messages) != 0 and messages[0][dataset_attr.role_tag] == dataset_attr.system_tag:
        system = messages[0][dataset_attr.content_tag]
        messages = messages[1:]
    else:
        system = example[dataset_attr.system] if dataset_attr.system else ""

    aligned_messages = []
    for turn_idx, message in enumerate(messages):
        if message[dataset_attr.role_tag] not in accept_tags[turn_idx % 2]:
            # logger.warning_rank0(f"Invalid role tag in {messages}.") and the row is skipped
            raise ValueError(
                f"Invalid role tag: turn {turn_idx} (after a leading system turn, if any) is "
                f"{message[dataset_attr.role_tag]!r}; position {turn_idx} accepts {accept_tags[turn_idx % 2]}"
            )

        aligned_messages.append(
            {
                "role": tag_mapping[message[dataset_attr.role_tag]],
                "content": message[dataset_attr.content_tag],
            }
        )

    if (not dataset_attr.ranking and len(aligned_messages) % 2 != 0) or (
        dataset_attr.ranking and len(aligned_messages) % 2 == 0
    ):
        # logger.warning_rank0(f"Invalid message count in {messages}.") and the row is skipped
        raise ValueError(
            f"Invalid message count: {len(aligned_messages)} turns (without a leading system turn), "
            f"must be even; the last is {aligned_messages[-1]['role'] if aligned_messages else None!r}"
        )

    # normal example
    prompt = aligned_messages[:-1]
    response = aligned_messages[-1:]

    return {
        "_prompt": prompt,
        "_response": response,
        "_system": system,
        "_tools": example[dataset_attr.tools] if dataset_attr.tools else "",
    }


# --- the checker --------------------------------------------------------------------------------
def check_sharegpt(
    example: dict[str, Any],
    dataset_attr: DatasetAttr = README_SHAREGPT,
    tool_formats: Sequence[str] = TOOL_FORMATS,
) -> list[dict[str, Any]]:
    """The aligned messages LLaMA-Factory trains on for one sharegpt ``example``, or ValueError
    naming what its loader would drop the row for or fail on.

    Runs the row through the converter, the supervised processor's row test, and the template's
    formatting of every turn, of the ``function_call`` values and of the ``tools`` text under each
    of ``tool_formats``.
    """
    if not isinstance(example, dict):
        raise ValueError(f"example is {type(example).__name__}, not an object")
    for column in (dataset_attr.messages, dataset_attr.system, dataset_attr.tools):
        if column and column not in example:
            raise ValueError(f"column {column!r} is missing (the converter raises KeyError)")
    if not isinstance(example[dataset_attr.messages], list):
        raise ValueError(f"{dataset_attr.messages!r} is {type(example[dataset_attr.messages]).__name__}, not a list")
    for index, turn in enumerate(example[dataset_attr.messages]):
        if not isinstance(turn, dict):
            raise ValueError(f"{dataset_attr.messages}[{index}] is {type(turn).__name__}, not an object")
        missing = [tag for tag in (dataset_attr.role_tag, dataset_attr.content_tag) if tag not in turn]
        if missing:
            raise ValueError(f"{dataset_attr.messages}[{index}] lacks {missing} (the converter raises KeyError)")

    converted = convert_sharegpt(example, dataset_attr)

    # processor/supervised.py: SupervisedDatasetProcessor.preprocess_dataset
    if len(converted["_prompt"]) % 2 != 1 or len(converted["_response"]) != 1:
        # logger.warning_rank0("Dropped invalid example: ...") and the row is skipped
        raise ValueError(
            f"Dropped invalid example: {len(converted['_prompt'])} prompt turns (must be odd) and "
            f"{len(converted['_response'])} response turns (must be 1)"
        )

    messages: list[dict[str, Any]] = converted["_prompt"] + converted["_response"]
    # template.Template._encode: `system = system or self.default_system`, then `system + tool_text`.
    system = converted["_system"]
    if system:
        _string(system, "system")
    tools = converted["_tools"]
    for i, message in enumerate(messages):
        content = _string(message["content"], f"turn {i} ({message['role']})")
        if message["role"] == Role.FUNCTION:
            for tool_format in tool_formats:
                format_function_call(content, tool_format)
        elif message["role"] not in (Role.USER, Role.ASSISTANT, Role.OBSERVATION):
            raise ValueError(f"turn {i}: Unexpected role: {message['role']}")
    if tools:
        for tool_format in tool_formats:
            format_tools(tools, tool_format)
    return messages

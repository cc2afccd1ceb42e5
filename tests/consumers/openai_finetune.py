"""OpenAI's fine-tuning chat-format line (supervised method), checked with the owner's types and text.

Owner sources:

- The OpenAPI spec, https://github.com/openai/openai-openapi ``openapi.yaml`` at commit
  498c71ddf6f1c45b983f972ccabca795da211a3e (2025-04-29, the last version on ``main`` that still
  carries the schema; MIT License, Copyright (c) OpenAI): ``FineTuneChatRequestInput`` ("The
  per-line training example of a fine-tuning input file for chat models using the supervised
  method") with the properties ``messages`` (``minItems: 1``; system, user,
  ``FineTuneChatCompletionRequestAssistantMessage`` = assistant + ``weight`` 0/1, tool, and the
  deprecated function message), ``tools`` (``ChatCompletionTool``), ``parallel_tool_calls`` and the
  deprecated ``functions`` (1 to 128). The spec's current HEAD
  (f85dbe223d40e1a31cba812ab2d755c7e98a92a3) still has ``FineTuneChatCompletionRequestAssistantMessage``.
- The ``openai`` Python SDK installed in .venv (3.54.0), "generated from our OpenAPI spec": its
  ``TypedDict`` params are the message, tool-call and tool schemas, validated here with pydantic
  ``TypeAdapter`` in strict mode with extra keys forbidden (a ``with_config`` subclass; the config
  reaches the SDK's nested TypedDicts, which have none of their own).
- The cookbook notebook https://github.com/openai/openai-cookbook
  ``examples/Chat_finetuning_data_prep.ipynb`` (commit 2e652704bf3df73cf35e46e26ebae692f5bd7b0c;
  MIT License, Copyright (c) 2023 OpenAI), "Format validation". Its checks that still apply are
  vendored in ``_cookbook_format_errors`` with its error names. Left out, because the notebook
  predates ``tool_calls`` and the spec above supersedes it: ``message_missing_key`` (it wants a
  ``content`` key on every message; the spec's own example has an assistant message with only
  ``tool_calls``), ``message_unrecognized_key`` and ``unrecognized_role`` (they reject
  ``tool_calls``, ``tool_call_id`` and the ``tool`` role; the SDK types above decide keys and
  roles), and ``isinstance(content, str)`` (the spec also allows content-part arrays).

Rules from the spec's text that a type cannot hold are checked explicitly, each citing its line.
Two come from the API's own error messages for the same message list (Chat Completions):
"Messages with role 'tool' must be a response to a preceding message with 'tool_calls'" and
"An assistant message with 'tool_calls' must be followed by tool messages responding to each
'tool_call_id'" (quoted e.g. in microsoft/promptflow#3130); the spec's training example ends
with an assistant message whose calls have no answer, so a trailing call-only turn is allowed.

Strictness beyond the spec: the spec does not set ``additionalProperties: false`` on the line;
we forbid unknown keys because the fine-tuning file validator refuses them ("Invalid file format.
Example N contains an extra ...", community.openai.com/t/966285) and issue #18 asks for exactly the
format's keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, Required

from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionFunctionMessageParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionToolMessageParam,
    ChatCompletionUserMessageParam,
)
from openai.types.chat.completion_create_params import Function as DeprecatedFunction
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic needs typing_extensions' TypedDict on 3.11

__all__ = ["check_openai_line", "openai_line_problems"]

_FORBID = ConfigDict(extra="forbid")


@with_config(_FORBID)
class SystemMessage(ChatCompletionSystemMessageParam, total=False):
    """``ChatCompletionRequestSystemMessage``."""


@with_config(_FORBID)
class UserMessage(ChatCompletionUserMessageParam, total=False):
    """``ChatCompletionRequestUserMessage``."""


@with_config(_FORBID)
class AssistantMessage(ChatCompletionAssistantMessageParam, total=False):
    """``FineTuneChatCompletionRequestAssistantMessage``: the assistant message plus ``weight``."""

    weight: Literal[0, 1]
    """Controls whether the assistant message is trained against (0 or 1)"""
    # The spec's ChatCompletionMessageToolCall is a function call ("Currently, only `function` is
    # supported"); the SDK's union also admits the newer custom-tool call, which fine-tuning does not.
    tool_calls: Iterable[ChatCompletionMessageFunctionToolCallParam]  # type: ignore[misc]


@with_config(_FORBID)
class ToolMessage(ChatCompletionToolMessageParam, total=False):
    """``ChatCompletionRequestToolMessage``: role, content, tool_call_id, all required."""


@with_config(_FORBID)
class FunctionMessage(ChatCompletionFunctionMessageParam, total=False):
    """``ChatCompletionRequestFunctionMessage`` (deprecated)."""


@with_config(_FORBID)
class FineTuneChatRequestInput(TypedDict, total=False):
    """``FineTuneChatRequestInput``; messages are checked one by one (by role) for clear paths."""

    # The spec lists no required keys; the cookbook counts a line without one "missing_messages_list".
    messages: Required[Annotated[list[dict[str, Any]], Field(min_length=1)]]
    tools: list[ChatCompletionFunctionToolParam]
    parallel_tool_calls: bool
    functions: Annotated[list[DeprecatedFunction], Field(min_length=1, max_length=128)]


_LINE = TypeAdapter(FineTuneChatRequestInput)
_MESSAGES: dict[str, TypeAdapter[Any]] = {
    "system": TypeAdapter(SystemMessage),
    "user": TypeAdapter(UserMessage),
    "assistant": TypeAdapter(AssistantMessage),
    "tool": TypeAdapter(ToolMessage),
    "function": TypeAdapter(FunctionMessage),
}

# FunctionObject.name: "Must be a-z, A-Z, 0-9, or contain underscores and dashes, with a maximum length of 64."
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def check_openai_line(record: Any) -> None:
    """Raise ValueError listing every problem (each with its path) of one fine-tuning line."""
    problems = openai_line_problems(record)
    if problems:
        raise ValueError("; ".join(problems))


def openai_line_problems(record: Any) -> list[str]:
    """The problems of one fine-tuning line, each as ``path: what``; empty when it is valid."""
    if not isinstance(record, dict):
        return [f"line: {type(record).__name__}, not a JSON object"]  # cookbook: data_type
    problems = _validate(_LINE, record, "")
    messages = record.get("messages")
    if not isinstance(messages, list):
        return problems
    for index, message in enumerate(messages):
        path = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(message, dict):
            problems.append(f"{path}: {type(message).__name__}, not an object")
        elif role not in _MESSAGES:
            problems.append(f"{path}.role: {role!r} is not one of {sorted(_MESSAGES)}")
        else:
            problems += _validate(_MESSAGES[role], message, path)
    if problems:  # the rules below read the shapes the schema guarantees
        return problems
    return _cookbook_format_errors(record) + _spec_rules(record)


def _validate(adapter: TypeAdapter[Any], value: Any, path: str) -> list[str]:
    try:
        validated = adapter.validate_python(value, strict=True)
    except ValidationError as err:
        return _describe(err, path)
    return _drain(validated, path)


def _drain(value: Any, path: str) -> list[str]:
    """Validate what pydantic left lazy: the SDK types ``content`` and ``tool_calls`` as
    ``Iterable[...]``, which pydantic checks only when iterated."""
    if isinstance(value, dict):
        return [problem for key, item in value.items() for problem in _drain(item, f"{path}.{key}")]
    if isinstance(value, Iterator):
        try:
            value = list(value)
        except ValidationError as err:
            return _describe(err, path)
    if isinstance(value, list):
        return [problem for index, item in enumerate(value) for problem in _drain(item, f"{path}[{index}]")]
    return []


def _describe(err: ValidationError, prefix: str) -> list[str]:
    by_path: dict[str, list[str]] = {}
    for error in err.errors():
        path = prefix
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif not _union_tag(part):
                path += f".{part}" if path else part
        got = "" if error["type"] == "missing" else f" (got {_short(error['input'])})"
        by_path.setdefault(path or "line", []).append(error["msg"] + got)
    return [f"{path}: {' or '.join(dict.fromkeys(msgs))}" for path, msgs in by_path.items()]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _union_tag(part: str) -> bool:
    # pydantic names the member of a union a value failed against in `loc` ("str",
    # "ChatCompletionMessageFunctionToolCallParam", "generator[...]"); the spec's keys are
    # lower-case names without brackets and none is a type name.
    return part[:1].isupper() or "[" in part or part in {"str", "int", "float", "bool", "none"}


# --- openai-cookbook examples/Chat_finetuning_data_prep.ipynb, "Format error checks" (vendored) ---
def _cookbook_format_errors(ex: dict[str, Any]) -> list[str]:
    format_errors: list[str] = []
    messages = ex.get("messages", None)  # noqa: SIM910 (the notebook's code)
    if not messages:
        format_errors.append("messages: missing_messages_list")
        return format_errors

    for index, message in enumerate(messages):
        content = message.get("content", None)
        function_call = message.get("function_call", None)
        # The notebook: `if (not content and not function_call) or not isinstance(content, str)`.
        # `tool_calls` replaced `function_call`; tool results may be empty (the notebook has no tool role).
        if message["role"] in ("system", "user", "assistant") and not content and not function_call:
            if message["role"] == "assistant" and message.get("tool_calls"):
                continue
            format_errors.append(
                f"messages[{index}].content: missing_content (an {message['role']} message needs content"
                + (" or tool_calls" if message["role"] == "assistant" else "")
                + ")"
            )

    if not any(message.get("role", None) == "assistant" for message in messages):
        format_errors.append("messages: example_missing_assistant_message")
    return format_errors


# --- rules from the spec's text ----------------------------------------------------------------
def _spec_rules(record: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for index, tool in enumerate(record.get("tools", [])):
        name = tool["function"]["name"]
        if not _FUNCTION_NAME.fullmatch(name):
            problems.append(f"tools[{index}].function.name: {name!r} must be a-z, A-Z, 0-9, _ or -, at most 64")
    messages: list[dict[str, Any]] = record["messages"]
    pending: dict[str, str] = {}  # call id -> path of the call, awaiting its tool message
    for index, message in enumerate(messages):
        path = f"messages[{index}]"
        role = message["role"]
        if role != "tool" and pending:
            problems += [
                f"{call}: tool call {call_id!r} has no tool message before {path} (an assistant message with "
                "'tool_calls' must be followed by tool messages responding to each 'tool_call_id')"
                for call_id, call in pending.items()
            ]
            pending = {}
        if role == "tool":
            call_id = message["tool_call_id"]
            if call_id not in pending:
                problems.append(
                    f"{path}.tool_call_id: {call_id!r} answers no pending call of the preceding assistant message "
                    "(messages with role 'tool' must be a response to a preceding message with 'tool_calls')"
                )
            pending.pop(call_id, None)
        for number, call in enumerate(message.get("tool_calls", []) if role == "assistant" else []):
            call_path = f"{path}.tool_calls[{number}]"
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            if not _FUNCTION_NAME.fullmatch(name):
                problems.append(f"{call_path}.function.name: {name!r} must be a-z, A-Z, 0-9, _ or -, at most 64")
            # function.arguments: "The arguments to call the function with ... in JSON format";
            # FunctionParameters is a JSON Schema object, so the arguments are a JSON object.
            try:
                decoded = json.loads(arguments)
            except json.JSONDecodeError as err:
                problems.append(f"{call_path}.function.arguments: not JSON ({err.msg})")
            else:
                if not isinstance(decoded, dict):
                    problems.append(
                        f"{call_path}.function.arguments: JSON {type(decoded).__name__}, not an object"
                        + (" (double-encoded)" if isinstance(decoded, str) else "")
                    )
            if call["id"] in pending:
                problems.append(f"{call_path}.id: {call['id']!r} repeats a call of the same message")
            pending[call["id"]] = call_path
    if pending and messages[-1]["role"] == "tool":  # answered in part; a call-only last turn is fine
        problems += [f"{call}: tool call {call_id!r} has no tool message" for call_id, call in pending.items()]
    return problems

"""OpenAI's fine-tuning chat format (supervised method), one line at a time, checked with the owner's
own types.

The types are the ``openai`` Python SDK's (installed in .venv; generated from OpenAI's API
specification): its ``TypedDict`` params for messages, tool calls and tools, validated with pydantic
``TypeAdapter`` in strict mode, unknown keys forbidden (our ``with_config`` subclasses; the config
reaches the SDK's nested TypedDicts, which carry none of their own). The line itself has no SDK
type; its keys are those of OpenAI's reference for the chat training format,
https://platform.openai.com/docs/api-reference/fine-tuning/chat-input (``messages``, ``tools``,
``parallel_tool_calls``, the deprecated ``functions``; an assistant message may carry ``weight``,
0 or 1, to be left out of training or not).

What a type cannot say is checked in our own words, each with where it comes from:

- a system, user or assistant message needs non-empty content (an assistant message may have tool
  calls instead), and a line needs an assistant message: the format checks of OpenAI's data
  preparation notebook, https://cookbook.openai.com/examples/chat_finetuning_data_prep;
- tool messages answer, by ``tool_call_id``, the calls of the assistant message just before them,
  and a call is answered before the next turn that is not a tool message: the Chat Completions API
  refuses a message list otherwise (its errors are quoted in
  https://github.com/microsoft/promptflow/issues/3130); a last assistant turn whose calls have no
  answer is allowed (OpenAI's own training example for tool calls ends that way);
- a function name is letters, digits, ``_`` and ``-``, at most 64 (the SDK's docstring of
  ``FunctionDefinition.name``); a call's ``arguments`` are JSON text of an object (the SDK types
  them as text "in JSON format", and a function's parameters are a JSON Schema object).

Unknown keys are refused although the reference does not forbid them: OpenAI's file validator
refuses a line with an extra key (https://community.openai.com/t/966285), and issue #18 asks for
exactly the format's keys.
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
    """The SDK's system message, no other key."""


@with_config(_FORBID)
class UserMessage(ChatCompletionUserMessageParam, total=False):
    """The SDK's user message, no other key."""


@with_config(_FORBID)
class AssistantMessage(ChatCompletionAssistantMessageParam, total=False):
    """The SDK's assistant message plus the training format's ``weight``, no other key."""

    weight: Literal[0, 1]  # 0: the turn is context, not trained on
    # Function calls only: the SDK's union also admits the newer custom-tool call, which the
    # training format does not list.
    tool_calls: Iterable[ChatCompletionMessageFunctionToolCallParam]  # type: ignore[misc]


@with_config(_FORBID)
class ToolMessage(ChatCompletionToolMessageParam, total=False):
    """The SDK's tool message (role, content and tool_call_id, all required), no other key."""


@with_config(_FORBID)
class FunctionMessage(ChatCompletionFunctionMessageParam, total=False):
    """The SDK's (deprecated) function message, no other key."""


@with_config(_FORBID)
class FineTuneChatRequestInput(TypedDict, total=False):
    """One training line; messages are checked one by one (by role), for clear paths."""

    # A line without messages has nothing to train on.
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

# The SDK's FunctionDefinition.name: letters, digits, underscores and dashes, 64 at most.
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def check_openai_line(record: Any) -> None:
    """Raise ValueError listing every problem (each with its path) of one fine-tuning line."""
    problems = openai_line_problems(record)
    if problems:
        raise ValueError("; ".join(problems))


def openai_line_problems(record: Any) -> list[str]:
    """The problems of one fine-tuning line, each as ``path: what``; empty when it is valid."""
    if not isinstance(record, dict):
        return [f"line: {type(record).__name__}, not a JSON object"]
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
    return _content_problems(record) + _call_problems(record)


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


def _content_problems(record: dict[str, Any]) -> list[str]:
    """Turns with nothing in them, and lines without an assistant turn (module docstring)."""
    problems: list[str] = []
    messages: list[dict[str, Any]] = record["messages"]
    for index, message in enumerate(messages):
        role = message["role"]
        if role not in ("system", "user", "assistant") or message.get("content"):
            continue
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            continue
        alternative = " or tool calls" if role == "assistant" else ""
        problems.append(f"messages[{index}].content: empty; {role} messages need text{alternative}")
    if not any(message["role"] == "assistant" for message in messages):
        problems.append("messages: no assistant message, nothing to train on")
    return problems


def _call_problems(record: dict[str, Any]) -> list[str]:
    """Function names, arguments, and tool messages against the calls they answer (module docstring)."""
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
                f"{call}: tool call {call_id!r} has no tool message before {path} (each call is answered by a "
                "tool message right after its assistant message)"
                for call_id, call in pending.items()
            ]
            pending = {}
        if role == "tool":
            call_id = message["tool_call_id"]
            if call_id not in pending:
                problems.append(
                    f"{path}.tool_call_id: {call_id!r} answers no pending call of the preceding assistant message "
                    "(a tool message answers a call of the assistant message before it)"
                )
            pending.pop(call_id, None)
        for number, call in enumerate(message.get("tool_calls", []) if role == "assistant" else []):
            call_path = f"{path}.tool_calls[{number}]"
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            if not _FUNCTION_NAME.fullmatch(name):
                problems.append(f"{call_path}.function.name: {name!r} must be a-z, A-Z, 0-9, _ or -, at most 64")
            # JSON text of an object: the parameters they fill are a JSON Schema object.
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

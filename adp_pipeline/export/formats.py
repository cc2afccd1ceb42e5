"""Training-set record formats: one trajectory (OpenAI chat messages + tool schemas) in, one
record out, after a check that its messages are consistent.

- ``openai``: ``messages`` with ``tool_calls`` (arguments as JSON strings) and ``tool``
  results with ``tool_call_id``; ``tools`` the JSON schemas: what OpenAI fine-tuning reads.
- ``trl``: the same with tool-call arguments as objects (Hugging Face chat templates expect
  dicts).
- ``sharegpt``: LLaMA-Factory's ``conversations`` (``human``, ``gpt``, ``function_call``,
  ``observation``) with ``system`` and ``tools`` (JSON text).
- ``atif``: Harbor's Agent Trajectory Interchange Format, one trajectory per record.

Every format carries the same metadata columns (task id, type, batch, policy, model, verifier,
steps, tokens, generation, lineage, split). In Parquet, free-form JSON (tool schemas, the
verifier, lineage, ATIF arguments) is JSON text, so that every file has one fixed schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from runtimes.agent import TOOL_ARGS
from runtimes.core import BrokenMessagesError

ExportFormat = Literal["openai", "trl", "sharegpt", "atif"]
FORMATS: tuple[ExportFormat, ...] = ("openai", "trl", "sharegpt", "atif")
ATIF_VERSION = "ATIF-v1.5"


@dataclass(frozen=True)
class Source:
    """What the exporter reads of one trajectory (a row of the ``trajectories`` view)."""

    task_id: str
    task_type: str
    batch: str
    policy: str
    model: str | None
    verifier: str | None  # JSON text
    n_steps: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    generation: int
    lineage: str | None  # JSON text
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    split: str


def check_messages(messages: list[dict[str, Any]]) -> None:
    """Every tool call has exactly one result and every result a call, in order; arguments are
    JSON objects; the conversation starts with the task (after an optional system message).

    Raises:
        BrokenMessagesError: what is wrong, first problem only.
    """
    roles = [m.get("role") for m in messages]
    first = 1 if roles[:1] == ["system"] else 0
    if len(roles) <= first or roles[first] != "user":
        raise BrokenMessagesError("no user message opens the conversation")
    pending: list[str] = []
    seen: set[str] = set()
    for position, message in enumerate(messages):
        role = message.get("role")
        if role not in {"system", "user", "assistant", "tool"}:
            raise BrokenMessagesError(f"message {position}: unknown role {role!r}")
        if role == "assistant":
            if pending:
                raise BrokenMessagesError(f"message {position}: call {pending[0]} has no result before the next turn")
            for call in message.get("tool_calls") or []:
                call_id = call.get("id")
                if not call_id or call_id in seen:
                    raise BrokenMessagesError(f"message {position}: a tool call without a unique id ({call_id!r})")
                seen.add(call_id)
                pending.append(call_id)
                _arguments(call, position)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                raise BrokenMessagesError(f"message {position}: a tool result answers no open call ({call_id!r})")
            pending.remove(call_id)
        elif pending:
            raise BrokenMessagesError(f"message {position}: call {pending[0]} has no result")
    if pending:
        raise BrokenMessagesError(f"call {pending[0]} has no result")


def _arguments(call: dict[str, Any], position: int) -> dict[str, Any]:
    text = call.get("function", {}).get("arguments")
    try:
        arguments = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise BrokenMessagesError(f"message {position}: call {call.get('id')}: arguments are not a JSON object")
    return arguments


def _metadata(source: Source) -> dict[str, Any]:
    return {
        "task_id": source.task_id,
        "task_type": source.task_type,
        "batch": source.batch,
        "policy": source.policy,
        "model": source.model,
        "verifier": source.verifier,
        "n_steps": source.n_steps,
        "total_tokens": source.total_tokens,
        "generation": source.generation,
        "lineage": source.lineage,
        "split": source.split,
    }


def _chat(messages: list[dict[str, Any]], *, arguments_as_objects: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message["role"], "content": message.get("content")}
        if message.get("tool_calls"):
            item["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": json.loads(call["function"]["arguments"])
                        if arguments_as_objects
                        else call["function"]["arguments"],
                    },
                }
                for call in message["tool_calls"]
            ]
        if message["role"] == "tool":
            item["tool_call_id"] = message["tool_call_id"]
        out.append(item)
    return out


def openai_record(source: Source) -> dict[str, Any]:
    return {"messages": _chat(source.messages, arguments_as_objects=False), "tools": source.tools, **_metadata(source)}


def trl_record(source: Source) -> dict[str, Any]:
    return {"messages": _chat(source.messages, arguments_as_objects=True), "tools": source.tools, **_metadata(source)}


def sharegpt_record(source: Source) -> dict[str, Any]:
    """LLaMA-Factory's sharegpt: human/observation turns at odd positions, gpt/function_call at
    even ones; parallel calls go in one ``function_call`` turn (a JSON list), and their results
    in one ``observation``. The result of the closing ``complete_task`` call is left out, so the
    conversation ends with the assistant's turn, as LLaMA-Factory requires."""
    system = "\n".join(m.get("content") or "" for m in source.messages if m["role"] == "system")
    turns: list[dict[str, str]] = []
    results: list[str] = []
    for message in source.messages:
        role = message["role"]
        if role != "tool" and results:
            turns.append({"from": "observation", "value": _one_or_list(results)})
            results = []
        if role == "user":
            turns.append({"from": "human", "value": message.get("content") or ""})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [
                json.dumps({"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])})
                for c in message["tool_calls"]
            ]
            turns.append({"from": "function_call", "value": _one_or_list(calls)})
        elif role == "assistant":
            turns.append({"from": "gpt", "value": message.get("content") or ""})
        elif role == "tool":
            results.append(message.get("content") or "")
    last_calls = [c["function"]["name"] for c in (source.messages[-2].get("tool_calls") or [])] if results else []
    if results and last_calls != ["complete_task"]:
        turns.append({"from": "observation", "value": _one_or_list(results)})
    return {"conversations": turns, "system": system, "tools": json.dumps(source.tools), **_metadata(source)}


def _one_or_list(values: list[str]) -> str:
    return values[0] if len(values) == 1 else json.dumps([_maybe_json(value) for value in values])


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def atif_record(source: Source) -> dict[str, Any]:
    """One ATIF trajectory: system and user steps, then one agent step per assistant turn with
    its tool calls and, as its observation, their results."""
    steps: list[dict[str, Any]] = []
    for message in source.messages:
        role = message["role"]
        if role == "tool":
            step = steps[-1]
            step.setdefault("observation", {"results": []})["results"].append(
                {"source_call_id": message["tool_call_id"], "content": message.get("content") or ""}
            )
            continue
        step = {"step_id": len(steps) + 1, "source": "agent" if role == "assistant" else role}
        step["message"] = message.get("content") or ""
        if role == "assistant":
            step["model_name"] = source.model
            if message.get("tool_calls"):
                step["tool_calls"] = [
                    {
                        "tool_call_id": call["id"],
                        "function_name": call["function"]["name"],
                        "arguments": json.loads(call["function"]["arguments"]),
                    }
                    for call in message["tool_calls"]
                ]
        steps.append(step)
    return {
        "schema_version": ATIF_VERSION,
        "session_id": f"{source.batch}/{source.task_id}",
        "agent": {"name": "adp", "version": "0.1.0", "model_name": source.model, "tool_definitions": source.tools},
        "steps": steps,
        "final_metrics": {
            "total_prompt_tokens": source.prompt_tokens,
            "total_completion_tokens": source.completion_tokens,
            "total_steps": len(steps),
        },
        **_metadata(source),
    }


RECORD: dict[ExportFormat, Callable[[Source], dict[str, Any]]] = {
    "openai": openai_record,
    "trl": trl_record,
    "sharegpt": sharegpt_record,
    "atif": atif_record,
}

# Parquet: one fixed schema per format.
_METADATA_FIELDS = [
    pa.field("task_id", pa.string()),
    pa.field("task_type", pa.string()),
    pa.field("batch", pa.string()),
    pa.field("policy", pa.string()),
    pa.field("model", pa.string()),
    pa.field("verifier", pa.string()),
    pa.field("n_steps", pa.int32()),
    pa.field("total_tokens", pa.int64()),
    pa.field("generation", pa.int32()),
    pa.field("lineage", pa.string()),
    pa.field("split", pa.string()),
]
_ARGUMENT_NAMES = sorted({name for model in TOOL_ARGS.values() for name in model.model_fields})


def _messages_type(arguments: pa.DataType) -> pa.DataType:
    call = pa.struct(
        [
            pa.field("id", pa.string()),
            pa.field("type", pa.string()),
            pa.field("function", pa.struct([pa.field("name", pa.string()), pa.field("arguments", arguments)])),
        ]
    )
    message = pa.struct(
        [
            pa.field("role", pa.string()),
            pa.field("content", pa.string()),
            pa.field("tool_calls", pa.list_(call)),
            pa.field("tool_call_id", pa.string()),
        ]
    )
    return pa.list_(message)


_TEXT = pa.string()
_CONTENT = pa.field("content", _TEXT)
_ATIF_STEP = pa.struct(
    [
        pa.field("step_id", pa.int32()),
        pa.field("source", pa.string()),
        pa.field("message", pa.string()),
        pa.field("model_name", pa.string()),
        pa.field(
            "tool_calls",
            pa.list_(
                pa.struct(
                    [
                        pa.field("tool_call_id", pa.string()),
                        pa.field("function_name", pa.string()),
                        pa.field("arguments", pa.string()),  # JSON text in Parquet
                    ]
                )
            ),
        ),
        pa.field(
            "observation",
            pa.struct(
                [
                    pa.field(
                        "results",
                        pa.list_(
                            pa.struct([pa.field("source_call_id", pa.string()), pa.field("content", pa.string())])
                        ),
                    )
                ]
            ),
        ),
    ]
)

PARQUET_SCHEMAS: dict[ExportFormat, pa.Schema] = {
    "openai": pa.schema(
        [pa.field("messages", _messages_type(pa.string())), pa.field("tools", pa.string()), *_METADATA_FIELDS]
    ),
    "trl": pa.schema(
        [
            pa.field("messages", _messages_type(pa.struct([pa.field(name, pa.string()) for name in _ARGUMENT_NAMES]))),
            pa.field("tools", pa.string()),
            *_METADATA_FIELDS,
        ]
    ),
    "sharegpt": pa.schema(
        [
            pa.field(
                "conversations", pa.list_(pa.struct([pa.field("from", pa.string()), pa.field("value", pa.string())]))
            ),
            pa.field("system", pa.string()),
            pa.field("tools", pa.string()),
            *_METADATA_FIELDS,
        ]
    ),
    "atif": pa.schema(
        [
            pa.field("schema_version", pa.string()),
            pa.field("session_id", pa.string()),
            pa.field(
                "agent",
                pa.struct(
                    [
                        pa.field("name", pa.string()),
                        pa.field("version", pa.string()),
                        pa.field("model_name", pa.string()),
                        pa.field("tool_definitions", pa.string()),  # JSON text in Parquet
                    ]
                ),
            ),
            pa.field("steps", pa.list_(_ATIF_STEP)),
            pa.field(
                "final_metrics",
                pa.struct(
                    [
                        pa.field("total_prompt_tokens", pa.int64()),
                        pa.field("total_completion_tokens", pa.int64()),
                        pa.field("total_steps", pa.int32()),
                    ]
                ),
            ),
            *_METADATA_FIELDS,
        ]
    ),
}


def for_parquet(export_format: ExportFormat, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its free-form JSON as text, to fit the format's fixed Parquet schema.

    Raises:
        BrokenMessagesError: (``trl``) a call's arguments are not the tools' (string) arguments,
            which the fixed schema cannot hold without losing them.
    """
    out = dict(record)
    if export_format == "trl":
        for message in out["messages"]:
            for call in message.get("tool_calls") or []:
                arguments = call["function"]["arguments"]
                if not set(arguments) <= set(_ARGUMENT_NAMES) or not all(
                    isinstance(value, str) for value in arguments.values()
                ):
                    raise BrokenMessagesError(f"call {call['id']}: arguments that are not the tools' own")
    if "tools" in out and not isinstance(out["tools"], str):
        out["tools"] = json.dumps(out["tools"])
    if export_format == "atif":
        out["agent"] = {**out["agent"], "tool_definitions": json.dumps(out["agent"]["tool_definitions"])}
        out["steps"] = [
            {
                **step,
                "tool_calls": [{**call, "arguments": json.dumps(call["arguments"])} for call in step["tool_calls"]]
                if "tool_calls" in step
                else None,
            }
            for step in out["steps"]
        ]
    return out

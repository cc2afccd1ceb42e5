"""Training-set record formats: one trajectory (OpenAI chat messages + tool schemas) in, one
record out, each in the shape its consumer reads, after a check that the messages are a
conversation a trainer can learn from.

A format is one :class:`Format` in :data:`REGISTRY`: its record builder, its Parquet schema,
where adp's metadata goes, and the line that documents it. ``adp export --format``, the
``training_dataset`` asset and ``ADP_EXPORT_FORMAT`` all take their choices from it.

What every chat format shares (the chat templates of Qwen, Llama, Mistral and Hermes read them):

- a tool call's id is 9 letters and digits, a pure function of the task id and the call's
  position (Mistral's templates refuse any other id); the ids are the same in every format;
- an assistant turn that only calls tools has ``content: ""`` (``trl``) or no ``content`` at all
  (``openai``, where it is optional), never ``null``;
- a message has exactly its own keys: no key is ``null``.

In Parquet, free-form values (messages, tool schemas, ATIF steps, the verifier's report) are of
Arrow's JSON type, as Hugging Face ``datasets`` stores its ``Json`` feature: ``load_dataset``
gives them back as the objects the JSON-lines file holds; ``pyarrow`` gives their JSON text.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as package_metadata
from typing import Any, Literal, get_args

import pyarrow as pa

from runtimes.core import BrokenMessagesError, ExportError
from runtimes.settings import ExportFormat as ExportFormat  # re-exported: the format names live with the settings

ATIF_VERSION = "ATIF-v1.8"  # the version of the pinned ``atif`` package the tests validate with
TOOL_CALL_ID_LENGTH = 9
_ID_ALPHABET = string.digits + string.ascii_letters


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
    JSON objects; the conversation starts with the task (after an optional system message) and
    has at least one assistant turn to learn from.

    Raises:
        BrokenMessagesError: what is wrong, first problem only.
    """
    roles = [m.get("role") for m in messages]
    first = 1 if roles[:1] == ["system"] else 0
    if len(roles) <= first or roles[first] != "user":
        raise BrokenMessagesError("no user message opens the conversation")
    if "assistant" not in roles:
        raise BrokenMessagesError("no assistant turn: nothing to learn from")
    pending: list[str] = []
    for position, message in enumerate(messages):
        role = message.get("role")
        if role not in {"system", "user", "assistant", "tool"}:
            raise BrokenMessagesError(f"message {position}: unknown role {role!r}")
        if role == "assistant":
            if pending:
                raise BrokenMessagesError(f"message {position}: call {pending[0]} has no result before the next turn")
            if not message.get("content") and not message.get("tool_calls"):
                raise BrokenMessagesError(f"message {position}: an assistant turn with neither text nor tool calls")
            for call in message.get("tool_calls") or []:
                # Unique among the turn's calls: a server may reuse ids from turn to turn, and the
                # export gives every call its own id anyway (tool_call_id).
                call_id = call.get("id")
                if not call_id or call_id in pending:
                    raise BrokenMessagesError(f"message {position}: a tool call without a unique id ({call_id!r})")
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
    """A call's arguments as an object; empty text is no arguments, as the agent loop runs it."""
    text = call.get("function", {}).get("arguments")
    try:
        arguments = (json.loads(text) if text.strip() else {}) if isinstance(text, str) else None
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise BrokenMessagesError(f"message {position}: call {call.get('id')}: arguments are not a JSON object")
    return arguments


def json_text(value: Any) -> str:
    """``value`` as strict JSON (UTF-8 text, no NaN or infinity, which JSON has no words for).

    Raises:
        BrokenMessagesError: a number that is not JSON, or a string that is not Unicode text
            (a lone surrogate).
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except ValueError as exc:  # UnicodeEncodeError is one
        raise BrokenMessagesError(f"a value JSON cannot hold ({exc})") from None
    return text


def tool_call_id(task_id: str, position: int) -> str:
    """The id of the ``position``-th tool call (from 0) of ``task_id``'s conversation: 9 letters
    and digits, the same in every export."""
    number = int.from_bytes(hashlib.sha256(f"{task_id}\x00{position}".encode()).digest(), "big")
    letters = []
    for _ in range(TOOL_CALL_ID_LENGTH):
        number, digit = divmod(number, len(_ID_ALPHABET))
        letters.append(_ID_ALPHABET[digit])
    return "".join(letters)


@dataclass(frozen=True)
class _Call:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class _Turn:
    """A message of the conversation, its calls' ids renamed and arguments decoded."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    calls: tuple[_Call, ...] = ()
    call_id: str | None = None  # a tool result's call
    name: str | None = None  # a tool result's function


def _turns(source: Source) -> list[_Turn]:
    """``source``'s (checked) messages with every call id replaced by :func:`tool_call_id`."""
    renamed: dict[str, _Call] = {}  # a call's id (in its turn: ids may repeat across turns) to the call
    turns: list[_Turn] = []
    position = 0
    for message in source.messages:
        role = message["role"]
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise BrokenMessagesError(f"a {role} message whose content is not text")
        if role == "assistant":
            calls = []
            for call in message.get("tool_calls") or []:
                renamed[call["id"]] = _Call(
                    tool_call_id(source.task_id, position), call["function"]["name"], _arguments(call, position)
                )
                position += 1
                calls.append(renamed[call["id"]])
            turns.append(_Turn("assistant", content, tuple(calls)))
        elif role == "tool":
            call = renamed[message["tool_call_id"]]
            turns.append(_Turn("tool", content, call_id=call.id, name=call.name))
        else:
            turns.append(_Turn(role, content))
    ids = [call.id for turn in turns for call in turn.calls]
    if len(set(ids)) != len(ids):  # 62**9 ids: never, but never silently
        raise BrokenMessagesError("two tool calls were given the same id")
    return turns


def metadata_row(source: Source) -> dict[str, Any]:
    """adp's metadata of a record (columns of ``trl`` and ``sharegpt``, ATIF's ``extra``, the
    sidecar of ``openai``): where it came from and how it was judged."""
    return {
        "task_id": source.task_id,
        "task_type": source.task_type,
        "batch": source.batch,
        "policy": source.policy,
        "model": source.model,
        "verifier": source.verifier,  # JSON text: every reader of every version takes a string
        "n_steps": source.n_steps,
        "total_tokens": source.total_tokens,
        "generation": source.generation,
        "lineage": source.lineage,
        "split": source.split,
    }


def _chat(turns: list[_Turn], *, openai: bool) -> list[dict[str, Any]]:
    """OpenAI chat messages (arguments as JSON text, optional content left out) or Hugging Face's
    (arguments as objects, ``content`` always text, tool results named after their function)."""
    out: list[dict[str, Any]] = []
    for turn in turns:
        item: dict[str, Any] = {"role": turn.role}
        if turn.role == "tool":
            item["tool_call_id"] = turn.call_id
            if not openai:
                item["name"] = turn.name
        if turn.content or not (openai and turn.calls):
            item["content"] = turn.content
        if turn.calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": json_text(call.arguments) if openai else call.arguments,
                    },
                }
                for call in turn.calls
            ]
        out.append(item)
    return out


def openai_record(source: Source) -> dict[str, Any]:
    """OpenAI's fine-tuning chat line: ``messages`` and ``tools``, nothing else."""
    return {"messages": _chat(_turns(source), openai=True), "tools": source.tools}


def trl_record(source: Source) -> dict[str, Any]:
    """Hugging Face's tool-calling conversation (what ``apply_chat_template`` and TRL read), with
    adp's metadata columns beside it."""
    return {"messages": _chat(_turns(source), openai=False), "tools": source.tools, **metadata_row(source)}


def sharegpt_record(source: Source) -> dict[str, Any]:
    """LLaMA-Factory's sharegpt with tools: human/observation turns at odd positions (from 1),
    gpt/function_call at even ones, ending with the assistant's turn. Parallel calls go in one
    ``function_call`` turn (a JSON list of ``{"name", "arguments"}``; text the model wrote beside
    them is left out: not every template can read it), their results in one ``observation`` (a
    JSON list of their texts); ``tools`` is the JSON text of the function definitions. The results of the
    last calls are left out: LLaMA-Factory drops a conversation that ends with an observation,
    and no assistant turn follows them to learn from."""
    turns = _turns(source)
    system = "\n".join(turn.content for turn in turns if turn.role == "system")
    conversation: list[dict[str, str]] = []
    results: list[str] = []
    for turn in turns:
        if turn.role != "tool" and results:
            conversation.append({"from": "observation", "value": _one_or_list(results)})
            results = []
        if turn.role == "user":
            conversation.append({"from": "human", "value": turn.content})
        elif turn.role == "assistant" and turn.calls:
            calls = [{"name": call.name, "arguments": call.arguments} for call in turn.calls]
            # The calls alone: text written beside them has no place every LLaMA-Factory template
            # reads (16 of its 121, Mistral's and Gemma's among them, refuse "text<tool_call>...").
            conversation.append({"from": "function_call", "value": json_text(calls[0] if len(calls) == 1 else calls)})
        elif turn.role == "assistant":
            conversation.append({"from": "gpt", "value": turn.content})
        elif turn.role == "tool":
            results.append(turn.content)
    while conversation and conversation[-1]["from"] in {"human", "observation"}:
        conversation.pop()  # nothing follows to learn from; LLaMA-Factory drops such a row whole
    functions = [tool.get("function", tool) for tool in source.tools]
    return {
        "conversations": conversation,
        "system": system,
        "tools": json_text(functions),
        **metadata_row(source),
    }


def _one_or_list(results: list[str]) -> str:
    """One result as it is; parallel calls' results as a JSON list of their texts, unaltered."""
    return results[0] if len(results) == 1 else json_text(results)


def atif_record(source: Source) -> dict[str, Any]:
    """One ATIF trajectory (the ``atif`` package's ``Trajectory``): system and user steps, then
    one agent step per assistant turn with its tool calls and, as its observation, their
    results; adp's metadata in the trajectory's ``extra``. Absent values are left out."""
    steps: list[dict[str, Any]] = []
    for turn in _turns(source):
        if turn.role == "tool":
            results = steps[-1].setdefault("observation", {"results": []})["results"]
            results.append({"source_call_id": turn.call_id, "content": turn.content})
            continue
        step: dict[str, Any] = {
            "step_id": len(steps) + 1,
            "source": "agent" if turn.role == "assistant" else turn.role,
            "message": turn.content,
        }
        if turn.calls:
            step["tool_calls"] = [
                {"tool_call_id": call.id, "function_name": call.name, "arguments": call.arguments}
                for call in turn.calls
            ]
        steps.append(step)
    agent = {"name": "adp", "version": _ADP_VERSION, "model_name": source.model, "tool_definitions": source.tools}
    return {
        "schema_version": ATIF_VERSION,
        "session_id": f"{source.batch}/{source.task_id}",
        "agent": {key: value for key, value in agent.items() if value is not None},
        "steps": steps,
        "final_metrics": {
            "total_prompt_tokens": source.prompt_tokens,
            "total_completion_tokens": source.completion_tokens,
            "total_steps": len(steps),
        },
        "extra": {
            key: json.loads(value) if key in {"verifier", "lineage"} else value
            for key, value in metadata_row(source).items()
            if value is not None
        },
    }


def _adp_version() -> str:
    try:
        return package_metadata.version("adp")
    except package_metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


_ADP_VERSION = _adp_version()

# Parquet: one fixed schema per format; JSON-typed columns hold what has no fixed shape.
_JSON = pa.json_()
METADATA_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string()),
        pa.field("task_type", pa.string()),
        pa.field("batch", pa.string()),
        pa.field("policy", pa.string()),
        pa.field("model", pa.string()),
        pa.field("verifier", pa.string()),  # JSON text
        pa.field("n_steps", pa.int32()),
        pa.field("total_tokens", pa.int64()),
        pa.field("generation", pa.int32()),
        pa.field("lineage", pa.string()),  # JSON text
        pa.field("split", pa.string()),
    ]
)
_CHAT_FIELDS = [pa.field("messages", pa.list_(_JSON)), pa.field("tools", pa.list_(_JSON))]


@dataclass(frozen=True)
class Format:
    """One export format: how a record is built, how Parquet holds it, and who reads it."""

    name: ExportFormat
    record: Callable[[Source], dict[str, Any]]
    parquet_schema: pa.Schema
    summary: str  # one line: the CLI's help, the docs
    sidecar: bool = False  # adp's metadata in ``<name>.meta.<suffix>`` beside the file


def parquet_table(schema: pa.Schema, records: list[dict[str, Any]], what: str) -> pa.Table:
    """``records`` in ``schema``, free-form values (JSON-typed columns) as their JSON text.

    Raises:
        ExportError: a record holds a key ``schema`` has no column for: it would be lost.
    """
    names = set(schema.names)
    rows = []
    for record in records:
        if not names.issuperset(record):
            raise ExportError(f"{what}: the Parquet schema has no column for {sorted(set(record) - names)}")
        rows.append({field.name: _as_storage(field.type, record.get(field.name)) for field in schema})
    storage = pa.schema([field.with_type(_storage_type(field.type)) for field in schema])
    return pa.Table.from_pylist(rows, schema=storage).cast(schema)


def _storage_type(data_type: pa.DataType) -> pa.DataType:
    if isinstance(data_type, pa.JsonType):
        return pa.string()
    if pa.types.is_list(data_type) and isinstance(data_type.value_type, pa.JsonType):
        return pa.list_(pa.string())
    return data_type


def _as_storage(data_type: pa.DataType, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(data_type, pa.JsonType):
        return json_text(value)
    if pa.types.is_list(data_type) and isinstance(data_type.value_type, pa.JsonType):
        return [json_text(item) for item in value]
    return value


REGISTRY: dict[ExportFormat, Format] = {
    format_.name: format_
    for format_ in (
        Format(
            "openai",
            openai_record,
            pa.schema(_CHAT_FIELDS),
            "OpenAI fine-tuning lines (messages, tools; arguments as JSON text); metadata in FILE.meta.*",
            sidecar=True,
        ),
        Format(
            "trl",
            trl_record,
            pa.schema([*_CHAT_FIELDS, *METADATA_SCHEMA]),
            "Hugging Face / TRL conversations (arguments as objects) with adp's metadata columns",
        ),
        Format(
            "sharegpt",
            sharegpt_record,
            pa.schema(
                [
                    pa.field(
                        "conversations",
                        pa.list_(pa.struct([pa.field("from", pa.string()), pa.field("value", pa.string())])),
                    ),
                    pa.field("system", pa.string()),
                    pa.field("tools", pa.string()),
                    *METADATA_SCHEMA,
                ]
            ),
            "LLaMA-Factory sharegpt with tools (conversations, system, tools) with adp's metadata columns",
        ),
        Format(
            "atif",
            atif_record,
            pa.schema(
                [
                    pa.field("schema_version", pa.string()),
                    pa.field("session_id", pa.string()),
                    pa.field("agent", _JSON),
                    pa.field("steps", pa.list_(_JSON)),
                    pa.field("final_metrics", _JSON),
                    pa.field("extra", _JSON),
                ]
            ),
            f"Harbor's Agent Trajectory Interchange Format ({ATIF_VERSION}); adp's metadata in extra",
        ),
    )
}
FORMATS: tuple[ExportFormat, ...] = tuple(REGISTRY)
if set(FORMATS) != set(get_args(ExportFormat)):  # the setting's choices are the registry's
    raise RuntimeError(f"export formats {FORMATS} differ from ExportFormat {get_args(ExportFormat)}")

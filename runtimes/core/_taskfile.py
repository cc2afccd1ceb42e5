"""Parse a JSONL task file into accepted TaskSpecs and rejected lines, losing none.

Every non-blank line ends up in exactly one of the two lists, so a caller can always show
``accepted + rejected == non-blank lines``. A rejected line keeps its line number, the field
at fault (when one is), a reason a person can act on, and a bounded preview of its bytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ValidationError

from runtimes.core._errors import TaskFileError
from runtimes.core._protocol import TaskSpec

DEFAULT_MAX_LINE_BYTES = 256 * 1024
MEMORY_FIELD = "constraints.sandbox.memory_mb"
RAW_PREVIEW_CHARS = 2000
_UTF8_BOM = b"\xef\xbb\xbf"


class RejectedLine(BaseModel):
    """A line of a task file that did not become a task, and why."""

    source_file: str
    line_number: int
    field: str | None
    reason: str
    raw: str
    raw_bytes: int
    task_id: str | None = None


@dataclass(frozen=True)
class AcceptedTask:
    line_number: int
    task: TaskSpec


class LineWarning(BaseModel):
    """Something about an accepted line a person should know: it ran, but maybe not as meant."""

    line_number: int
    task_id: str
    field: str
    message: str


@dataclass
class ParsedTaskFile:
    source_file: str
    accepted: list[AcceptedTask] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)
    non_blank_lines: int = 0
    warnings: list[LineWarning] = field(default_factory=list)


@dataclass(frozen=True)
class _Line:
    number: int
    content: bytes | None  # None when the line is over the size limit
    preview: bytes
    size: int


def parse_task_file(
    path: Path,
    *,
    source_name: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    default_timeout: int | None = None,
    max_memory_mb: int | None = None,
) -> ParsedTaskFile:
    """Parse the task file at ``path``.

    Args:
        path: the JSONL file to read.
        source_name: the name recorded with rejects (defaults to ``str(path)``).
        max_line_bytes: lines longer than this are rejected unread, so one bad line cannot
            exhaust memory.
        default_timeout: the timeout given to tasks whose line has none (TASK_TIMEOUT).
        max_memory_mb: lines whose ``constraints.sandbox.memory_mb`` asks more are rejected
            (ADP_SANDBOX_MAX_MEMORY_MB; None: the format's own bound only).

    Raises:
        TaskFileError: the file cannot be opened or read.
    """
    name = source_name or str(path)
    try:
        with path.open("rb") as handle:
            lines = _read_lines(handle, max_line_bytes)
            return _parse_lines(lines, name, max_line_bytes, default_timeout, max_memory_mb=max_memory_mb)
    except OSError as exc:
        raise TaskFileError(f"{name}: cannot read task file: {exc.strerror or exc}") from exc


def parse_task_bytes(
    data: bytes,
    *,
    source_name: str,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    default_timeout: int | None = None,
    max_memory_mb: int | None = None,
) -> ParsedTaskFile:
    """Parse task-file content held in memory exactly as :func:`parse_task_file` parses a file
    (the same arguments).

    A writer of task files (synthesis) checks its lines with this before it writes them, so it
    never accepts a line that ingest would then refuse: one parser, one set of limits.
    """
    lines = _read_lines(io.BytesIO(data), max_line_bytes)
    return _parse_lines(lines, source_name, max_line_bytes, default_timeout, max_memory_mb=max_memory_mb)


def reject_known_task_ids(parsed: ParsedTaskFile, known: Mapping[str, str]) -> ParsedTaskFile:
    """Move tasks whose id was accepted in an earlier batch (``known``: task_id -> batch) to rejects."""
    result = ParsedTaskFile(
        parsed.source_file,
        rejected=list(parsed.rejected),
        non_blank_lines=parsed.non_blank_lines,
        warnings=list(parsed.warnings),
    )
    for item in parsed.accepted:
        earlier_batch = known.get(item.task.task_id)
        if earlier_batch is None:
            result.accepted.append(item)
            continue
        raw = item.task.model_dump_json()
        result.rejected.append(
            RejectedLine(
                source_file=parsed.source_file,
                line_number=item.line_number,
                field="task_id",
                reason=f"duplicate task_id {item.task.task_id!r}: already accepted in batch {earlier_batch}",
                raw=raw[:RAW_PREVIEW_CHARS],
                raw_bytes=len(raw.encode()),
                task_id=item.task.task_id,
            )
        )
    result.rejected.sort(key=lambda rejected: rejected.line_number)
    return result


def _read_lines(handle: BinaryIO, max_line_bytes: int) -> Iterator[_Line]:
    number = 0
    while True:
        chunk = handle.readline(max_line_bytes + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) <= max_line_bytes or chunk.endswith(b"\n"):
            yield _Line(number, chunk, chunk, len(chunk.rstrip(b"\r\n")))
            continue
        preview, size = chunk[:RAW_PREVIEW_CHARS], len(chunk)
        while not chunk.endswith(b"\n"):
            chunk = handle.readline(1 << 20)
            if not chunk:
                break
            size += len(chunk)
        yield _Line(number, None, preview, size - (1 if chunk.endswith(b"\n") else 0))


def _parse_lines(
    lines: Iterator[_Line],
    source: str,
    max_line_bytes: int,
    default_timeout: int | None,
    *,
    max_memory_mb: int | None = None,
) -> ParsedTaskFile:
    parsed = ParsedTaskFile(source)
    first_line_of: dict[str, int] = {}
    for line in lines:
        content = line.content
        if content is not None and line.number == 1 and content.startswith(_UTF8_BOM):
            content = content[len(_UTF8_BOM) :]
        if content is not None and not content.strip():
            continue
        parsed.non_blank_lines += 1

        def reject(reason: str, field: str | None = None, task_id: str | None = None, *, _line: _Line = line) -> None:
            parsed.rejected.append(
                RejectedLine(
                    source_file=source,
                    line_number=_line.number,
                    field=field,
                    reason=reason,
                    raw=_line.preview.decode("utf-8", errors="replace").rstrip("\r\n")[:RAW_PREVIEW_CHARS],
                    raw_bytes=_line.size,
                    task_id=task_id,
                )
            )

        if content is None:
            reject(f"line is {line.size} bytes, over the limit of {max_line_bytes} (ADP_MAX_TASK_LINE_BYTES)")
            continue
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            reject(f"line is not valid UTF-8: byte 0x{content[exc.start]:02x} at offset {exc.start}")
            continue
        try:
            data = json.loads(text, object_pairs_hook=_object_without_repeated_keys)
        except _RepeatedKeyError as exc:
            reject(f"key {exc.key!r} appears more than once in the object", field=exc.key)
            continue
        except json.JSONDecodeError as exc:
            reject(f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(data, dict):
            reject(f"expected a JSON object, got a JSON {_json_kind(data)}")
            continue
        task_id = data.get("task_id") if isinstance(data.get("task_id"), str) else None
        if default_timeout is not None:
            data.setdefault("timeout", default_timeout)
        try:
            task = TaskSpec.model_validate_json(json.dumps(data))
        except ValidationError as exc:
            field_name, reason = _describe_validation_error(exc)
            reject(reason, field=field_name, task_id=task_id)
            continue
        if (over := memory_over_ceiling(task, max_memory_mb)) is not None:
            reject(over, field=MEMORY_FIELD, task_id=task.task_id)
            continue
        if task.task_id in first_line_of:
            reject(
                f"duplicate task_id {task.task_id!r}: already on line {first_line_of[task.task_id]} of this file",
                field="task_id",
                task_id=task.task_id,
            )
            continue
        first_line_of[task.task_id] = line.number
        parsed.accepted.append(AcceptedTask(line.number, task))
        for key in task.constraints.model_extra or {}:
            parsed.warnings.append(
                LineWarning(
                    line_number=line.number,
                    task_id=task.task_id,
                    field=f"constraints.{key}",
                    message=f"unknown constraints key {key!r}: kept, but adp does not use it",
                )
            )
    return parsed


def memory_over_ceiling(task: TaskSpec, max_memory_mb: int | None) -> str | None:
    """Why ``task`` asks more sandbox memory than the ceiling ``max_memory_mb`` allows, or None."""
    sandbox = task.constraints.sandbox
    asked = sandbox.memory_mb if sandbox is not None else None
    if max_memory_mb is None or asked is None or asked <= max_memory_mb:
        return None
    return (
        f"field {MEMORY_FIELD!r}: asks {asked} MB of sandbox memory, over this deployment's ceiling of "
        f"{max_memory_mb} MB (ADP_SANDBOX_MAX_MEMORY_MB)"
    )


class _RepeatedKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _RepeatedKeyError(key)
        result[key] = value
    return result


def _json_kind(value: object) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _describe_validation_error(exc: ValidationError) -> tuple[str | None, str]:
    """The first error's field, and every error as 'field: message (got value)'."""
    parts: list[str] = []
    first_field: str | None = None
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or None
        first_field = first_field or location
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            parts.append(f"missing required field {location!r}")
        elif error["type"] == "extra_forbidden":
            parts.append(f"unknown field {location!r}")
        else:
            got = repr(error["input"])
            got = got if len(got) <= 60 else got[:57] + "..."
            parts.append(f"field {location!r}: {message} (got {got})")
    return first_field, "; ".join(parts)

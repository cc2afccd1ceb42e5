"""Parse a JSONL task file into accepted TaskSpecs and rejected lines, losing none.

Every non-blank line ends up in exactly one of the two, so a caller can always show
``accepted + rejected == non-blank lines``. :func:`iter_task_file` gives them one line at a
time, in file order (ingest writes them as they come: memory flat in the file's length);
:func:`parse_task_file` collects them into lists. A rejected line keeps its line number, the
field at fault (when one is), a reason a person can act on, and a bounded preview of its bytes.
Two bounds keep memory flat whatever the file: a line over ``max_line_bytes`` is rejected unread,
and past ``max_lines`` task lines the rest of the file is not parsed but becomes one reject that
names the lines left unread.

:func:`store_task_lines` writes the copy of a task file that adp keeps (``task_files/``): every
line as it is, except lines over the size limit, whose bytes are not kept. Each becomes a
placeholder line holding its number, its size and the sha256 of the whole original file; given
that sha256, the parser rejects the placeholder exactly as it rejected the line. No line of a
file can hold its own file's sha256, so a placeholder is never confused with a line a person
wrote.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import re
import secrets
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ValidationError

from runtimes.core._errors import TaskFileError
from runtimes.core._protocol import TaskSpec

DEFAULT_MAX_LINE_BYTES = 256 * 1024
DEFAULT_MAX_TASK_LINES = 1_000_000
MEMORY_FIELD = "constraints.sandbox.memory_mb"
RAW_PREVIEW_CHARS = 2000
_UTF8_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
# A placeholder is one JSON object, so a person reading the copy sees what stood there.
_NOT_STORED_PREFIX = b'{"adp_line_not_stored":{"file_sha256":"'
_NOT_STORED_REST = re.compile(rb'","line":(\d+),"bytes":(\d+),"limit":(\d+)\}\}\r?\n?')


class RejectedLine(BaseModel):
    """A line of a task file that did not become a task, and why."""

    source_file: str
    line_number: int
    field: str | None
    reason: str
    raw: str
    raw_bytes: int
    task_id: str | None = None


class LineWarning(BaseModel):
    """Something about an accepted line a person should know: it ran, but maybe not as meant."""

    line_number: int
    task_id: str
    field: str
    message: str


@dataclass(frozen=True)
class AcceptedTask:
    line_number: int
    task: TaskSpec
    warnings: tuple[LineWarning, ...] = ()


TaskLineOutcome = AcceptedTask | RejectedLine
"""What one non-blank line of a task file became."""


@dataclass
class ParsedTaskFile:
    source_file: str
    accepted: list[AcceptedTask] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)
    non_blank_lines: int = 0
    """Non-blank lines looked at. Past the line limit, the first unread line is counted and the
    rest are not: that line's reject row stands for all of them, so accepted + rejected still
    equals this."""
    warnings: list[LineWarning] = field(default_factory=list)


@dataclass(frozen=True)
class StoredTaskLines:
    """What :func:`store_task_lines` copied: the original's digest and size, and the lines left out."""

    sha256: str
    size: int
    lines_not_stored: int


@dataclass(frozen=True)
class _Line:
    number: int
    content: bytes | None  # None when the line is over the size limit, or a placeholder for one
    preview: bytes
    size: int  # of the line in the original file, without its line break
    ending: bytes  # b"\n", or b"" for a last line without one
    length: int  # bytes of the original file the line took, its line break included
    stored_limit: int | None = None  # a placeholder's: the size limit its line was left out under


def parse_task_file(
    path: Path,
    *,
    source_name: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_lines: int = DEFAULT_MAX_TASK_LINES,
    default_timeout: int | None = None,
    max_memory_mb: int | None = None,
    copy_of_sha256: str | None = None,
) -> ParsedTaskFile:
    """Parse the task file at ``path`` into lists of every accepted task and every reject
    (:func:`iter_task_file`, collected: for files a caller can afford to hold; same arguments)."""
    name = source_name or str(path)
    outcomes = iter_task_file(
        path,
        source_name=name,
        max_line_bytes=max_line_bytes,
        max_lines=max_lines,
        default_timeout=default_timeout,
        max_memory_mb=max_memory_mb,
        copy_of_sha256=copy_of_sha256,
    )
    return _collect(outcomes, name)


def iter_task_file(
    path: Path,
    *,
    source_name: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_lines: int = DEFAULT_MAX_TASK_LINES,
    default_timeout: int | None = None,
    max_memory_mb: int | None = None,
    copy_of_sha256: str | None = None,
) -> Generator[TaskLineOutcome, None, None]:
    """What each non-blank line of the task file at ``path`` became, in file order, one line
    read at a time: an accepted task (with its warnings) or a reject. Nothing of a line is kept
    once it is given, beyond the ids of the tasks accepted so far (duplicates within the file).

    Args:
        path: the JSONL file to read.
        source_name: the name recorded with rejects (defaults to ``str(path)``).
        max_line_bytes: lines longer than this are rejected unread, so one bad line cannot
            exhaust memory (ADP_MAX_TASK_LINE_BYTES).
        max_lines: non-blank lines parsed at most (ADP_MAX_TASK_LINES); the rest of the file
            becomes one reject naming the lines not read.
        default_timeout: the timeout given to tasks whose line has none (TASK_TIMEOUT).
        max_memory_mb: lines whose ``constraints.sandbox.memory_mb`` asks more are rejected
            (ADP_SANDBOX_MAX_MEMORY_MB; None: the format's own bound only).
        copy_of_sha256: ``path`` is a copy :func:`store_task_lines` made of the file with this
            sha256: its placeholders are rejected as the lines they stand for.

    Raises:
        TaskFileError: the file cannot be opened or read (when the iteration reaches it).
    """
    name = source_name or str(path)
    try:
        with path.open("rb") as handle:
            lines = _read_lines(handle, max_line_bytes, copy_of_sha256=copy_of_sha256)
            yield from _parse_lines(
                lines, name, max_line_bytes, max_lines, default_timeout, max_memory_mb=max_memory_mb
            )
    except OSError as exc:
        raise TaskFileError(f"{name}: cannot read task file: {exc.strerror or exc}") from exc


def parse_task_bytes(
    data: bytes,
    *,
    source_name: str,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_lines: int = DEFAULT_MAX_TASK_LINES,
    default_timeout: int | None = None,
    max_memory_mb: int | None = None,
) -> ParsedTaskFile:
    """Parse task-file content held in memory exactly as :func:`parse_task_file` parses a file
    (the same arguments).

    A writer of task files (synthesis) checks its lines with this before it writes them, so it
    never accepts a line that ingest would then refuse: one parser, one set of limits.
    """
    lines = _read_lines(io.BytesIO(data), max_line_bytes)
    outcomes = _parse_lines(lines, source_name, max_line_bytes, max_lines, default_timeout, max_memory_mb=max_memory_mb)
    return _collect(outcomes, source_name)


def _collect(outcomes: Iterable[TaskLineOutcome], source: str) -> ParsedTaskFile:
    parsed = ParsedTaskFile(source)
    for outcome in outcomes:
        parsed.non_blank_lines += 1  # one outcome per non-blank line looked at
        if isinstance(outcome, RejectedLine):
            parsed.rejected.append(outcome)
        else:
            parsed.accepted.append(outcome)
            parsed.warnings.extend(outcome.warnings)
    return parsed


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
        else:
            result.rejected.append(_already_accepted(item, parsed.source_file, earlier_batch))
    result.rejected.sort(key=lambda rejected: rejected.line_number)
    return result


def without_known_task_ids(
    outcomes: Iterable[TaskLineOutcome],
    known_of: Callable[[Sequence[str]], Mapping[str, str]],
    *,
    source_file: str,
    chunk: int = 1000,
) -> Iterator[TaskLineOutcome]:
    """``outcomes``, in order, with each task whose id was accepted in an earlier batch turned into
    a reject (as :func:`reject_known_task_ids` does).

    ``known_of(ids)`` gives those of ``ids`` accepted in an earlier batch, each with that batch.
    It is asked once per ``chunk`` outcomes, so at most ``chunk`` outcomes are held at a time,
    however long the file.
    """
    remaining = iter(outcomes)
    while part := list(itertools.islice(remaining, chunk)):
        ids = [outcome.task.task_id for outcome in part if isinstance(outcome, AcceptedTask)]
        known = known_of(ids) if ids else {}
        for outcome in part:
            if isinstance(outcome, AcceptedTask) and (earlier_batch := known.get(outcome.task.task_id)) is not None:
                yield _already_accepted(outcome, source_file, earlier_batch)
            else:
                yield outcome


def _already_accepted(item: AcceptedTask, source_file: str, earlier_batch: str) -> RejectedLine:
    raw = item.task.model_dump_json()
    return RejectedLine(
        source_file=source_file,
        line_number=item.line_number,
        field="task_id",
        reason=f"duplicate task_id {item.task.task_id!r}: already accepted in batch {earlier_batch}",
        raw=raw[:RAW_PREVIEW_CHARS],
        raw_bytes=len(raw.encode()),
        task_id=item.task.task_id,
    )


def store_task_lines(source: BinaryIO, target: BinaryIO, *, max_line_bytes: int) -> StoredTaskLines:
    """Copy the task file ``source`` into ``target``, except the bytes of lines over ``max_line_bytes``.

    Each such line becomes one placeholder line (its number, its size, ``max_line_bytes`` and the
    sha256 of all of ``source``), so the copy keeps the original's line numbers and non-blank
    lines, and :func:`parse_task_file` with ``copy_of_sha256`` gives the same result on the copy
    as on the original (but no preview of those lines). One line is held at a time, at most
    ``max_line_bytes`` of it: a 2 GB line is read through and neither kept nor copied.

    ``target`` is opened for reading and writing: the sha256 is known only at the end, so the
    placeholders are written with a random token of its width and it is written over them.
    """
    digest = hashlib.sha256()
    size = 0

    def seen(chunk: bytes) -> None:
        nonlocal size
        digest.update(chunk)
        size += len(chunk)

    token = secrets.token_hex(32).encode()  # unguessable, so no line of ``source`` holds it
    start = target.tell()
    not_stored = 0
    for line in _read_lines(source, max_line_bytes, on_read=seen):
        if line.content is not None:
            target.write(line.content)
            continue
        not_stored += 1
        target.write(_placeholder(token, line.number, line.size, max_line_bytes) + line.ending)
    sha256 = digest.hexdigest()
    if not_stored:
        _write_over_token(target, start, token, sha256.encode(), max_line_bytes)
    return StoredTaskLines(sha256, size, not_stored)


def _placeholder(file_sha256: bytes, number: int, size: int, limit: int) -> bytes:
    return _NOT_STORED_PREFIX + file_sha256 + b'","line":%d,"bytes":%d,"limit":%d}}' % (number, size, limit)


def _write_over_token(target: BinaryIO, start: int, token: bytes, sha256: bytes, max_line_bytes: int) -> None:
    marker = _NOT_STORED_PREFIX + token
    target.flush()
    target.seek(start)
    offset = start
    # Every line of the copy is at most max_line_bytes plus its break, or a short placeholder.
    while line := target.readline(max(max_line_bytes, 1024) + 2):
        if line.startswith(marker):
            target.seek(offset + len(_NOT_STORED_PREFIX))
            target.write(sha256)
            target.seek(offset + len(line))
        offset += len(line)
    target.flush()


def _read_lines(
    handle: BinaryIO,
    max_line_bytes: int,
    *,
    copy_of_sha256: str | None = None,
    on_read: Callable[[bytes], None] | None = None,
) -> Iterator[_Line]:
    """The lines of ``handle``, none held beyond ``max_line_bytes`` (+1); ``on_read`` sees every byte."""
    placeholder = _NOT_STORED_PREFIX + copy_of_sha256.encode() if copy_of_sha256 else None
    number = 0
    while True:
        chunk = handle.readline(max_line_bytes + 1)
        if not chunk:
            return
        if on_read:
            on_read(chunk)
        number += 1
        if len(chunk) <= max_line_bytes or chunk.endswith(b"\n"):
            ending = b"\n" if chunk.endswith(b"\n") else b""
            if placeholder and chunk.startswith(placeholder):
                stands_for = _NOT_STORED_REST.fullmatch(chunk, len(placeholder))
                if stands_for and int(stands_for[1]) == number:
                    size, limit = int(stands_for[2]), int(stands_for[3])
                    yield _Line(number, None, b"", size, ending, size + len(ending), stored_limit=limit)
                    continue
            yield _Line(number, chunk, chunk, len(chunk.rstrip(b"\r\n")), ending, len(chunk))
            continue
        preview, length = chunk[:RAW_PREVIEW_CHARS], len(chunk)
        while not chunk.endswith(b"\n"):
            chunk = handle.readline(_CHUNK)
            if not chunk:
                break
            if on_read:
                on_read(chunk)
            length += len(chunk)
        ending = b"\n" if chunk.endswith(b"\n") else b""
        yield _Line(number, None, preview, length - len(ending), ending, length)


def _parse_lines(
    lines: Iterator[_Line],
    source: str,
    max_line_bytes: int,
    max_lines: int,
    default_timeout: int | None,
    *,
    max_memory_mb: int | None = None,
) -> Iterator[TaskLineOutcome]:
    """One outcome per non-blank line of ``lines``; past ``max_lines`` of them, one reject for the rest."""
    non_blank_lines = 0
    first_line_of: dict[str, int] = {}  # the only thing kept across lines: a set of ids, in effect
    for line in lines:
        content = line.content
        if content is not None and line.number == 1 and content.startswith(_UTF8_BOM):
            content = content[len(_UTF8_BOM) :]
        if content is not None and not content.strip():
            continue
        if non_blank_lines == max_lines:
            yield _lines_not_read(source, line, lines, max_lines)
            return
        non_blank_lines += 1
        outcome = _parse_line(line, content, source, max_line_bytes, default_timeout, max_memory_mb, first_line_of)
        if isinstance(outcome, AcceptedTask):
            first_line_of[outcome.task.task_id] = line.number
        yield outcome


def _parse_line(
    line: _Line,
    content: bytes | None,
    source: str,
    max_line_bytes: int,
    default_timeout: int | None,
    max_memory_mb: int | None,
    first_line_of: Mapping[str, int],
) -> TaskLineOutcome:
    """What the non-blank ``line`` (``content``: its bytes, BOM removed; None: not read) became."""

    def reject(reason: str, field: str | None = None, task_id: str | None = None) -> RejectedLine:
        return RejectedLine(
            source_file=source,
            line_number=line.number,
            field=field,
            reason=reason,
            raw=line.preview.decode("utf-8", errors="replace").rstrip("\r\n")[:RAW_PREVIEW_CHARS],
            raw_bytes=line.size,
            task_id=task_id,
        )

    if content is None:
        return reject(_over_size(line, max_line_bytes))
    data, problem = _json_of_line(_without_line_break(content), line.number)
    if isinstance(problem, _RepeatedKeyError):
        return reject(f"key {problem.key!r} appears more than once in the object", field=problem.key)
    if problem is not None:
        return reject(problem)
    if not isinstance(data, dict):
        return reject(f"expected a JSON object, got a JSON {_json_kind(data)}")
    task_id = data.get("task_id") if isinstance(data.get("task_id"), str) else None
    if default_timeout is not None:
        data.setdefault("timeout", default_timeout)
    try:
        task = TaskSpec.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        field_name, reason = _describe_validation_error(exc)
        return reject(reason, field=field_name, task_id=task_id)
    if (over := memory_over_ceiling(task, max_memory_mb)) is not None:
        return reject(over, field=MEMORY_FIELD, task_id=task.task_id)
    if task.task_id in first_line_of:
        return reject(
            f"duplicate task_id {task.task_id!r}: already on line {first_line_of[task.task_id]} of this file",
            field="task_id",
            task_id=task.task_id,
        )
    warnings = tuple(
        LineWarning(
            line_number=line.number,
            task_id=task.task_id,
            field=f"constraints.{key}",
            message=f"unknown constraints key {key!r}: kept, but adp does not use it",
        )
        for key in task.constraints.model_extra or {}
    )
    return AcceptedTask(line.number, task, warnings)


def _over_size(line: _Line, max_line_bytes: int) -> str:
    if line.stored_limit is None or line.size > max_line_bytes:
        return f"line is {line.size} bytes, over the limit of {max_line_bytes} (ADP_MAX_TASK_LINE_BYTES)"
    # The limit was raised since the copy was made: the line would fit now, but it is gone.
    return (
        f"line is {line.size} bytes, over the limit of {line.stored_limit} (ADP_MAX_TASK_LINE_BYTES) when the "
        f"file was registered, so its bytes were not kept; register the file again (`adp run FILE`) to read it "
        f"under the limit of {max_line_bytes}"
    )


def _lines_not_read(source: str, first: _Line, rest: Iterator[_Line], max_lines: int) -> RejectedLine:
    """The one reject standing for ``first`` and every line after it: counted, never parsed."""
    last, task_lines, size = first.number, 1, first.length
    for line in rest:
        last, size = line.number, size + line.length
        task_lines += line.content is None or bool(line.content.strip())
    where = f"line {first.number}" if last == first.number else f"lines {first.number}\u2013{last}"
    return RejectedLine(
        source_file=source,
        line_number=first.number,
        field=None,
        reason=(
            f"the file has more than {max_lines} task lines (ADP_MAX_TASK_LINES): {where} "
            f"({task_lines} task line{'s' if task_lines > 1 else ''}, {size} bytes) not read"
        ),
        raw="",
        raw_bytes=size,
    )


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


def _without_line_break(content: bytes) -> bytes:
    """The line as a person sees it: a column counted on it is the column their editor shows.

    JSON takes the break as whitespace, so removing it changes no verdict; kept, a line cut short
    was reported at column 1 of a line after it (json counts lines from the break).
    """
    content = content.removesuffix(b"\n")
    return content.removesuffix(b"\r")


def _json_of_line(content: bytes, number: int) -> tuple[Any, str | _RepeatedKeyError | None]:
    """The JSON value of one line (its break removed), or why it has none, naming the line and
    the column (in characters, from 1) where reading stopped."""

    def at(position: int, problem: str, detail: str = "", text: str | None = None) -> str:
        end = " (end of line)" if text is not None and position >= len(text) else ""
        return f"{problem} at line {number}, column {position + 1}{end}" + (f": {detail}" if detail else "")

    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Everything before the first bad byte decoded, so its length in characters is the column.
        column = len(content[: exc.start].decode("utf-8"))
        return None, at(column, "not valid UTF-8", f"byte 0x{content[exc.start]:02x}")
    if (too_deep := _first_too_deep(text)) is not None:
        return None, at(too_deep, f"JSON nested more than {MAX_JSON_DEPTH} levels deep", text=text)
    try:
        data = _loads(text, object_pairs_hook=_object_without_repeated_keys)
    except _RepeatedKeyError as exc:
        return None, exc
    except _UnreadableNumberError as exc:
        return None, at(_token_position(text, exc.token), exc.problem, exc.detail, text)
    except json.JSONDecodeError as exc:
        return None, at(exc.pos, "invalid JSON", exc.msg.removesuffix(" at"), text)
    if (half := _first_unpaired_surrogate(text)) is not None:
        return None, at(
            half, "invalid JSON", f"{text[half : half + 6]} is half of a surrogate pair, no character", text
        )
    return data, None


MAX_JSON_DEPTH = 128
"""Arrays and objects nested in a task line at most. The stdlib parser recurses once per level (a
line of 200,000 ``[`` would end the whole ingest in a RecursionError) and pydantic refuses past
about 200; a task needs a handful."""
# A string to its closing quote, or to the end of an unclosed one: a match at every quote, so a scan
# never restarts inside a string it could not close (quadratic on a line of 256 KiB of \" pairs).
_STRING = r'"(?:[^"\\]|\\[\s\S]?)*+(?:"|\Z)'
_BRACKET_OR_STRING = re.compile(_STRING + r"|[\[\]{}]")
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


def _first_too_deep(text: str) -> int | None:
    """Where ``text`` opens its ``MAX_JSON_DEPTH + 1``-th nested level, or None."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:  # no more levels than brackets: most lines
        return None
    depth = 0
    for match in _BRACKET_OR_STRING.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return match.start()
        elif token in "]}":
            depth -= 1
    return None


def _first_unpaired_surrogate(text: str) -> int | None:
    """Where ``text`` escapes half a UTF-16 surrogate pair (``"\\ud800"``): json takes it, but it is
    no character, and nothing downstream can encode it."""
    if "\\u" not in text:
        return None
    pending: int | None = None  # where an escaped high surrogate waits for its low half
    end_of_pending = -1
    for match in _ESCAPE.finditer(text):
        unit = int(match[1], 16) if match[1] else None
        if pending is not None and (match.start() != end_of_pending or unit is None or not 0xDC00 <= unit <= 0xDFFF):
            return pending
        if pending is not None:
            pending = None
            continue
        if unit is not None and 0xD800 <= unit <= 0xDBFF:
            pending, end_of_pending = match.start(), match.end()
        elif unit is not None and 0xDC00 <= unit <= 0xDFFF:
            return match.start()
    return pending


def strict_json(text: str) -> Any:
    """``text``'s JSON value, with only the numbers a 64-bit float holds.

    Python's json (and pydantic's) read ``NaN`` and ``Infinity``, which JSON has no words for, and
    read a number past a double's range (``1e999``) as infinity: none of them may reach a float
    field, the lake's Parquet columns or an export. Use it for JSON adp did not write (a task
    file's line has its own reader, with the same rules, :func:`parse_task_bytes`).

    Raises:
        json.JSONDecodeError: ``text`` is not JSON, holds such a number, or nests deeper than
            ``MAX_JSON_DEPTH`` (its message says which; its ``pos``, ``lineno`` and ``colno`` where).
    """
    if (too_deep := _first_too_deep(text)) is not None:  # before the parser recurses that deep
        raise json.JSONDecodeError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep", text, too_deep)
    try:
        return _loads(text)
    except _UnreadableNumberError as exc:
        raise json.JSONDecodeError(f"{exc.problem}: {exc.detail}", text, _token_position(text, exc.token)) from None


class _UnreadableNumberError(ValueError):
    def __init__(self, token: str, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.token, self.problem, self.detail = token, problem, detail


def _not_a_json_constant(token: str) -> Any:
    # Python's json reads NaN and Infinity; JSON has neither, and a consumer of the lake would choke.
    raise _UnreadableNumberError(token, "invalid JSON", f"{token} is not a JSON number")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):  # 1e999: float() gives infinity for a number past a double's range
        raise _UnreadableNumberError(
            token, "JSON number out of range", f"{token} is beyond the largest 64-bit float (about 1.8e308)"
        )
    return value


def _bounded_int(token: str) -> int:
    try:
        return int(token)
    except ValueError as exc:  # Python's limit on the digits of an int (sys.get_int_max_str_digits)
        digits = len(token.lstrip("-"))
        raise _UnreadableNumberError(token, "JSON number too long", f"an integer of {digits} digits") from exc


def _loads(text: str, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """json.loads with JSON's numbers only: a finite double, or an int of bounded digits.

    Raises:
        _UnreadableNumberError: a number that is not one; json.JSONDecodeError: not JSON.
    """
    return json.loads(
        text,
        object_pairs_hook=object_pairs_hook,
        parse_constant=_not_a_json_constant,
        parse_float=_finite_float,
        parse_int=_bounded_int,
    )


def _token_position(text: str, token: str) -> int:
    """Where the number ``token`` first stands outside a string in ``text``: json reads in order and
    raised on its first occurrence, so that is the one."""
    number = re.compile(_STRING + r"|(?<![\w.+-])(" + re.escape(token) + r")(?![\w.])")
    for match in number.finditer(text):
        if match[1] is not None:
            return match.start(1)
    return 0  # unreachable for a token json just read


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
        if location is None:  # the line as a whole (its fields are each named below)
            parts.append(message)
        elif error["type"] == "missing":
            parts.append(f"missing required field {location!r}")
        elif error["type"] == "extra_forbidden":
            parts.append(f"unknown field {location!r}")
        else:
            got = repr(error["input"])
            got = got if len(got) <= 60 else got[:57] + "..."
            parts.append(f"field {location!r}: {message} (got {got})")
    return first_field, "; ".join(parts)

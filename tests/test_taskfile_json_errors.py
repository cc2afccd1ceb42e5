"""A line that is not JSON is rejected with the place a person fixes: its line number in the file and
the column (in characters, from 1, its line break not counted) where reading stopped. A line cut
short used to read "at column 1": the parser was given the line with its break and counted the
column on the line after it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runtimes.core import MAX_JSON_DEPTH, parse_task_bytes, parse_task_file
from tests.helpers import task_line

GOOD = task_line("good")
BAD_LINE = 3  # after a good line and a blank one: blank lines count in the numbering
LINE_BREAKS = pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])

# (before, after): the line is before + after, and reading stops at the first character of
# after (column len(before) + 1; at the end of the line when after is empty).
CASES: dict[str, tuple[str, str, str]] = {
    "truncated": ('{"task_id": "t", "task_type": ', "", "invalid JSON"),
    "truncated_in_a_string": ('{"task_id": "t", "description": ', '"unterminated', "invalid JSON"),
    "trailing_garbage": (GOOD + " ", "x", "invalid JSON"),
    "second_object": (GOOD, GOOD, "invalid JSON"),
    "invalid_escape": ('{"task_id": "café', '\\q"}', "invalid JSON"),
    "control_character": ('{"task_id": "a', '\tb"}', "invalid JSON"),
    "byte_order_mark_mid_file": ("", "\ufeff" + GOOD, "invalid JSON"),
    "nan": ('{"task_id": "NaN", "max_steps": ', "NaN}", "invalid JSON"),
    "infinity": ('{"task_id": "x", "timeout": [1, ', "-Infinity]}", "invalid JSON"),
    "integer_too_long": ('{"task_id": "' + "9" * 5000 + '", "max_steps": ', "9" * 5000 + "}", "JSON number too long"),
    "unpaired_high_surrogate": ('{"task_id": "a\\\\ud83d", "description": "x', '\\ud83d"}', "invalid JSON"),
    "unpaired_low_surrogate": ('{"task_id": "\\ud83d\\ude00 ', '\\ude00"}', "invalid JSON"),
    "nested_too_deep": (
        '{"task_id": "' + "[" * 300 + '", "c": ' + "[" * (MAX_JSON_DEPTH - 1),
        "[" + "]" * MAX_JSON_DEPTH + "}",
        f"JSON nested more than {MAX_JSON_DEPTH} levels deep",
    ),
    "nested_too_deep_unclosed": (
        '{"a": ' + "[" * (MAX_JSON_DEPTH - 1),
        "[" * 200_000,  # the stdlib parser recursed once per level: a RecursionError ended the ingest
        f"JSON nested more than {MAX_JSON_DEPTH} levels deep",
    ),
}


def _file(tmp_path: Path, bad: bytes, newline: bytes) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(newline.join([GOOD.encode(), b"", bad, task_line("after").encode(), b""]))
    return path


def _where(before: str, after: str) -> str:
    end = " (end of line)" if not after else ""
    return f"at line {BAD_LINE}, column {len(before) + 1}{end}"


@LINE_BREAKS
@pytest.mark.parametrize("case", CASES)
def test_a_line_that_is_not_json_names_its_line_and_the_column_where_reading_stopped(
    tmp_path: Path, case: str, newline: bytes
) -> None:
    before, after, problem = CASES[case]
    parsed = parse_task_file(_file(tmp_path, (before + after).encode(), newline))

    (rejected,) = parsed.rejected
    assert rejected.line_number == BAD_LINE
    assert rejected.reason.startswith(f"{problem} {_where(before, after)}"), rejected.reason
    assert rejected.field is None
    # The lines around it are read as they are, whatever their line breaks.
    assert [item.task.task_id for item in parsed.accepted] == ["good", "after"]
    assert parsed.non_blank_lines == 3


@LINE_BREAKS
def test_bad_utf8_is_placed_in_characters_not_bytes(tmp_path: Path, newline: bytes) -> None:
    before = '{"task_id": "研究 café '
    path = _file(tmp_path, before.encode() + b'\xff"}', newline)
    (rejected,) = parse_task_file(path).rejected
    assert rejected.reason == f"not valid UTF-8 {_where(before, 'x')}: byte 0xff"
    assert rejected.raw == before + '\ufffd"}'  # the preview shows what could be read


@LINE_BREAKS
def test_every_cut_of_a_task_line_is_placed_within_that_line(tmp_path: Path, newline: bytes) -> None:
    """A line cut anywhere (an upload stopped mid-line) is rejected at a column inside the line it
    was cut to, never at column 1 of the line after it; cut after a value, it is the end of the line."""
    line = task_line("cut", description='a "quoted" café', constraints={"verify": {"expected_answer": "42"}})
    cuts = [line[:n] for n in range(1, len(line))]
    data = newline.join([GOOD.encode(), b"", *(cut.encode() for cut in cuts)]) + newline
    parsed = parse_task_bytes(data, source_name="cuts.jsonl")

    assert [item.task.task_id for item in parsed.accepted] == ["good"] and len(parsed.rejected) == len(cuts)
    for number, (cut, rejected) in enumerate(zip(cuts, parsed.rejected, strict=True), BAD_LINE):
        where = re.fullmatch(rf"invalid JSON at line {number}, column (\d+)( \(end of line\))?: .+", rejected.reason)
        assert where, (cut, rejected.reason)
        column = int(where[1])
        assert 1 <= column <= len(cut) + 1, (cut, rejected.reason)
        assert (column == len(cut) + 1) == bool(where[2]), (cut, rejected.reason)
        if cut.rstrip()[-1] in ',:[{"' and not _inside_a_string(cut):
            assert where[2], (cut, rejected.reason)  # nothing wrong but the end: it is the end


def _inside_a_string(text: str) -> bool:
    """Whether ``text`` ends inside a JSON string (after an opening quote not yet closed)."""
    inside = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = inside
        elif char == '"':
            inside = not inside
    return inside


def test_an_empty_object_is_rejected_for_the_fields_it_lacks_on_its_line(tmp_path: Path) -> None:
    (rejected,) = parse_task_file(_file(tmp_path, b"{}", b"\r\n")).rejected
    assert rejected.line_number == BAD_LINE and rejected.field == "task_id"
    assert rejected.reason.startswith("missing required field 'task_id'; missing required field 'task_type'")
    assert "None" not in rejected.reason


def test_json_that_is_valid_stays_accepted(tmp_path: Path) -> None:
    """The checks above refuse what is not JSON, and nothing that is."""
    nested: object = "deep"
    for _ in range(MAX_JSON_DEPTH - 2):  # the line and constraints are the first two levels
        nested = [nested]
    lines = [
        task_line("pair", description="PAIR").replace("PAIR", r"smile \ud83d\ude00 and a \\ud800 that is text"),
        json.dumps(json.loads(task_line("escaped", description="😀 \\ud800")), ensure_ascii=True),
        task_line("numbers", constraints={"big": 10**4000, "neg": -1.5e300, "nan_text": "NaN Infinity"}),
        task_line("nested", constraints={"x": nested}),
        "  " + task_line("spaced") + " \t",
    ]
    path = tmp_path / "ok.jsonl"
    path.write_bytes("\r\n".join(lines).encode())
    parsed = parse_task_file(path)
    assert parsed.rejected == []
    accepted = {item.task.task_id: item.task for item in parsed.accepted}
    assert accepted["pair"].description == "smile \U0001f600 and a \\ud800 that is text"
    assert accepted["escaped"].description == "😀 \\ud800"
    assert set(accepted) == {"pair", "escaped", "numbers", "nested", "spaced"}

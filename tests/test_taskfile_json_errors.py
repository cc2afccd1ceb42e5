"""A line that is not JSON is rejected with the place a person fixes: its line number in the file and
the column (in characters, from 1, its line break not counted) where reading stopped. A line cut
short used to read "at column 1": the parser was given the line with its break and counted the
column on the line after it."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from runtimes.core import (
    MAX_JSON_DEPTH,
    StructuredAnswerError,
    TaskSpec,
    parse_task_bytes,
    parse_task_file,
    strict_json,
)
from runtimes.llm import LLMClient, LLMEndpoint
from runtimes.testing import MockLLMServer, MockScript, ScriptedTurn, ScriptRule
from synthesis.structured import ask
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
    # Python's json reads a number past a double's range as infinity: in a float field it was inf,
    # in a free-form value it was stored as null.
    "float_overflow": (
        '{"task_id": "x", "constraints": {"verify": {"miniwob_reward": ',
        "1e999}}}",
        "JSON number out of range",
    ),
    "float_overflow_free_form": (
        '{"task_id": "-1.5E+400", "constraints": {"x": [1, "-1.5E+400", ',  # the same text in strings first
        "-1.5E+400]}}",
        "JSON number out of range",
    ),
    "float_overflow_many_digits": ('{"max_steps": 1, "c": ', "2" * 400 + ".5}", "JSON number out of range"),
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
        task_line("numbers", constraints={"big": 10**4000, "neg": -1.5e300, "nan_text": "NaN Infinity 1e999"}),
        # The largest and the smallest doubles, and a number that rounds to 0: finite, so JSON.
        task_line(
            "edges", constraints={"verify": {"miniwob_reward": 1.7976931348623157e308}, "tiny": [5e-324]}
        ).replace("5e-324", "5e-324, 1e-999"),
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
    assert set(accepted) == {"pair", "escaped", "numbers", "nested", "spaced", "edges"}
    edges = accepted["edges"].constraints
    assert edges.verify is not None and edges.verify.miniwob_reward == 1.7976931348623157e308
    assert edges.model_extra == {"tiny": [5e-324, 0.0]}


def test_an_integer_too_large_for_a_float_field_is_rejected_with_the_field(tmp_path: Path) -> None:
    # JSON reads it as an integer (finite); the float field would have made it infinity.
    line = task_line("huge", constraints={"verify": {"miniwob_reward": 10**400}})
    (rejected,) = parse_task_file(_file(tmp_path, line.encode(), b"\n")).rejected
    assert (rejected.line_number, rejected.field) == (BAD_LINE, "constraints.verify.miniwob_reward")
    assert rejected.reason.startswith("field 'constraints.verify.miniwob_reward': Input should be a finite number")
    # The same from anywhere a task is read: a model's answer, a Redis task message.
    with pytest.raises(ValidationError, match="finite_number"):
        TaskSpec.model_validate_json(line)
    for number in ("NaN", "Infinity", "1e999"):
        with pytest.raises(ValidationError, match="finite_number"):
            TaskSpec.model_validate_json(line.replace("1" + "0" * 400, number))


@pytest.mark.parametrize(
    ("text", "problem", "where"),
    [
        ('{"a": "1e999",\n "b": 1e999}', "JSON number out of range: 1e999 is beyond", (2, 7)),
        ('[0.5, "NaN", NaN]', "invalid JSON: NaN is not a JSON number", (1, 14)),
        ('{"x": -Infinity}', "invalid JSON: -Infinity is not a JSON number", (1, 7)),
        ('{"x": 1' + "0" * 5000 + "}", "JSON number too long: an integer of 5001 digits", (1, 7)),
        ('{"x": [1, 2', "Expecting ',' delimiter", (1, 12)),
        ("\n" + "[" * 200_000, f"JSON nested more than {MAX_JSON_DEPTH} levels deep", (2, MAX_JSON_DEPTH + 1)),
    ],
)
def test_strict_json_refuses_numbers_json_has_not_and_says_where(
    text: str, problem: str, where: tuple[int, int]
) -> None:
    """The reader for JSON adp did not write (a model's structured answer): the task-file rules."""
    with pytest.raises(json.JSONDecodeError) as caught:
        strict_json(text)
    assert caught.value.msg.startswith(problem), caught.value.msg
    assert (caught.value.lineno, caught.value.colno) == where


def test_strict_json_reads_what_is_json() -> None:
    text = '{"big": 1' + "0" * 400 + ', "max": 1.7976931348623157e308, "s": "NaN 1e999", "n": [-0.0, 1e-999]}'
    assert strict_json(text) == {"big": 10**400, "max": 1.7976931348623157e308, "s": "NaN 1e999", "n": [-0.0, 0.0]}


class _Shape(BaseModel):
    score: float
    extra: dict[str, Any] = {}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-1e999"])
def test_a_model_answer_with_a_number_json_has_not_is_not_valid(number: str) -> None:
    """pydantic reads NaN, Infinity and 1e999 as floats; a free-form value was written as null,
    a plain float field kept nan. The model is told and asked again; its valid answer is taken."""
    bad = {"free": '{"score": 0.5, "extra": {"x": [' + number + "]}}", "typed": '{"score": ' + number + "}"}
    good = '{"score": 0.25, "extra": {"x": [1.5]}}'
    script = MockScript(
        rules=[
            ScriptRule(match="free", turns=[ScriptedTurn(content=bad["free"]), ScriptedTurn(content=good)]),
            ScriptRule(match="typed", turns=[ScriptedTurn(content=bad["typed"])] * 2),
        ]
    )

    async def go(base_url: str) -> tuple[_Shape, BaseException]:
        client = LLMClient(LLMEndpoint(provider="mock", base_url=base_url, model="m", api_key="x"), backoff_base=0.001)
        try:
            answer = await ask(client, "system", "free", _Shape)
            with pytest.raises(StructuredAnswerError) as caught:
                await ask(client, "system", "typed", _Shape, attempts=2)
            return answer, caught.value
        finally:
            await client.aclose()

    with MockLLMServer(script) as server:
        answer, error = asyncio.run(go(server.base_url))
        requests = server.stats.requests
    assert answer == _Shape(score=0.25, extra={"x": [1.5]})
    assert requests == 4  # the bad answer, the good one; the typed question twice
    assert number.lstrip("-") in str(error) and "line 1 column" in str(error), str(error)

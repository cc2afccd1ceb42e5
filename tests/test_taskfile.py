from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runtimes.core import RAW_PREVIEW_CHARS, TaskFileError, parse_task_file, reject_known_task_ids
from tests.helpers import EXAMPLES, MIXED, ONE_MB, task_line, write_mixed


def test_mixed_file_accepts_every_good_line_and_rejects_every_bad_one_with_its_reason(tmp_path: Path) -> None:
    parsed = parse_task_file(write_mixed(tmp_path / "mixed.jsonl"))

    expected_accepted = {n for n, (line, outcome) in enumerate(MIXED, 1) if outcome is None and line.strip()}
    expected_rejected = {n: outcome for n, (_, outcome) in enumerate(MIXED, 1) if outcome is not None}
    assert {item.line_number for item in parsed.accepted} == expected_accepted
    assert [item.task.task_id for item in parsed.accepted] == [
        "good_code",
        "good_web",
        "研究框架对比",
        "good_crlf",
        "free_constraint",
        "good_last",
    ]
    # Unknown constraints keys are the seeds' free dictionary: kept, and reported as warnings.
    assert [(w.line_number, w.task_id, w.field) for w in parsed.warnings] == [
        (22, "free_constraint", "constraints.verfy"),
        (22, "free_constraint", "constraints.language"),
    ]
    free = next(item.task for item in parsed.accepted if item.task.task_id == "free_constraint")
    assert free.constraints.model_extra == {"verfy": {}, "language": "python"}
    assert {rejected.line_number for rejected in parsed.rejected} == set(expected_rejected)
    for rejected in parsed.rejected:
        field, words = expected_rejected[rejected.line_number]
        assert rejected.field == field, rejected
        assert words in rejected.reason, rejected
        assert rejected.source_file.endswith("mixed.jsonl")
    non_blank = sum(1 for line, _ in MIXED if line.strip())
    assert parsed.non_blank_lines == non_blank
    assert len(parsed.accepted) + len(parsed.rejected) == non_blank


def test_a_rejected_line_keeps_a_bounded_preview_and_its_true_size(tmp_path: Path) -> None:
    parsed = parse_task_file(write_mixed(tmp_path / "mixed.jsonl"))
    huge = next(r for r in parsed.rejected if "over the limit" in r.reason)
    assert huge.raw_bytes == len(MIXED[10][0])
    assert huge.raw_bytes > ONE_MB
    assert len(huge.raw) <= RAW_PREVIEW_CHARS
    assert huge.raw.startswith('{"task_id": "huge"')
    latin1 = next(r for r in parsed.rejected if r.line_number == 10)
    assert "caf\ufffd" in latin1.raw and latin1.reason.startswith("not valid UTF-8 at line 10, column ")


def test_reasons_name_the_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(task_line("x", max_steps="ten") + "\n")
    (rejected,) = parse_task_file(path).rejected
    assert rejected.reason == "field 'max_steps': Input should be a valid integer (got 'ten')"
    assert rejected.task_id == "x"


def test_missing_timeout_takes_the_configured_default_and_explicit_values_win(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(task_line("a") + "\n" + task_line("b", timeout=7) + "\n")
    parsed = parse_task_file(path, default_timeout=42)
    assert [item.task.timeout for item in parsed.accepted] == [42, 7]
    assert [item.task.timeout for item in parse_task_file(path).accepted] == [300, 7]


def test_a_byte_order_mark_on_the_first_line_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + task_line("with_bom").encode() + b"\r\n")
    assert [item.task.task_id for item in parse_task_file(path).accepted] == ["with_bom"]


def test_line_limit_is_configurable_and_counts_bytes_not_characters(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    line = task_line("wide", description="字" * 1000)  # 3 bytes a character in UTF-8
    path.write_text(line + "\n")
    assert parse_task_file(path, max_line_bytes=len(line.encode())).accepted
    (rejected,) = parse_task_file(path, max_line_bytes=len(line.encode()) - 1).rejected
    assert rejected.raw_bytes == len(line.encode())


def test_tasks_accepted_by_another_batch_become_duplicates_with_the_batch_named(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join([task_line("old"), "oops", task_line("new")]) + "\n")
    parsed = reject_known_task_ids(parse_task_file(path), {"old": "first-batch-12345678"})
    assert [item.task.task_id for item in parsed.accepted] == ["new"]
    assert [(r.line_number, r.field) for r in parsed.rejected] == [(1, "task_id"), (2, None)]
    assert "already accepted in batch first-batch-12345678" in parsed.rejected[0].reason
    assert len(parsed.accepted) + len(parsed.rejected) == parsed.non_blank_lines == 3


def test_the_seed_task_lines_are_accepted_verbatim() -> None:
    seed_lines = [line for line in EXAMPLES.read_text().splitlines() if line.strip()][:6]
    assert json.loads(seed_lines[3])["task_id"] == "研究框架对比"
    parsed = parse_task_file(EXAMPLES)
    assert parsed.rejected == []
    assert {item.task.task_id for item in parsed.accepted} >= {json.loads(line)["task_id"] for line in seed_lines}


def test_an_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match=r"nope\.jsonl"):
        parse_task_file(tmp_path / "nope.jsonl")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.jsonl"
        locked.write_text(task_line("a"))
        locked.chmod(0)
        with pytest.raises(TaskFileError, match=r"locked\.jsonl"):
            parse_task_file(locked)


SEED_LINES = [  # verbatim from the seed documents (002, the demo and load-test files)
    '{"task_id": "demo_fib", "task_type": "code", "description": "写一个Python函数计算斐波那契数列第10项", '
    '"expected_tools": ["python_executor"], "constraints": {}, "max_steps": 5}',
    '{"task_id": "demo_search", "task_type": "web", "description": "搜索Python编程教程", '
    '"expected_tools": ["web_search"], "constraints": {"start_url": "https://www.google.com"}, "max_steps": 3}',
    '{"task_id": "load_web_1", "task_type": "web", "description": "Search for information about topic 1", '
    '"expected_tools": ["web_search"], "constraints": {"start_url": "https://www.google.com"}, "max_steps": 2}',
    '{"task_id": "seed_free", "task_type": "code", "description": "计算5的阶乘", '
    '"expected_tools": ["python_executor"], "constraints": {"language": "python", "difficulty": 2}, "max_steps": 5}',
]


def test_the_seed_documents_lines_are_accepted_with_web_search_and_free_constraints(tmp_path: Path) -> None:
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(SEED_LINES) + "\n")
    parsed = parse_task_file(path)
    assert parsed.rejected == []
    tasks = {item.task.task_id: item.task for item in parsed.accepted}
    assert tasks["demo_search"].expected_tools == ["browser"]  # web_search is the seeds' name for it
    assert tasks["seed_free"].constraints.model_extra == {"language": "python", "difficulty": 2}
    assert [(w.task_id, w.field) for w in parsed.warnings] == [
        ("seed_free", "constraints.language"),
        ("seed_free", "constraints.difficulty"),
    ]

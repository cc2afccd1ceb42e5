"""Bounded inputs: a per-file line limit with one reject for the rest, and a registered copy that
keeps the number and size of a line over the size limit, never its bytes."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import dagster as dg

from adp_pipeline.builder import build_definitions
from adp_pipeline.defs.jobs import process_task_file
from adp_pipeline.defs.partitions import task_files
from adp_pipeline.task_files import partition_key_for, register_task_file, registered_task_file, task_files_dir
from runtimes.core import parse_task_file
from runtimes.settings import Settings
from tests.helpers import ONE_MB, check_results, code_task, materialize_file, query, task_line

LIMIT = 2048  # ADP_MAX_TASK_LINE_BYTES in these tests (its minimum is 1024)
MARK = "PAYLOAD-OF-AN-OVERSIZED-LINE"


def big_task(task_id: str, size: int) -> bytes:
    """A valid task line of exactly ``size`` bytes whose description is MARK repeated."""
    line = task_line(task_id, description="")
    filler = (MARK * (size // len(MARK) + 1))[: size - len(line.encode())]
    encoded = task_line(task_id, description=filler).encode()
    assert len(encoded) == size
    return encoded


def materialize_task_batch(settings: Settings, instance: dg.DagsterInstance, key: str) -> dg.ExecuteInProcessResult:
    """Materialise ``task_batch`` of partition ``key`` again, from the registered copy alone."""
    job = build_definitions(settings).resolve_job_def(process_task_file.name)
    return job.execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("task_batch")]
    )


def lake_rows(settings: Settings, key: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    tasks = query(settings, "SELECT task_id, line_number FROM tasks WHERE batch = ? ORDER BY line_number", key)
    rejects = query(
        settings,
        "SELECT line_number, field, reason, raw, raw_bytes FROM task_rejects WHERE batch = ? ORDER BY line_number",
        key,
    )
    return tasks, rejects


def test_a_file_over_the_line_limit_runs_its_first_lines_and_one_reject_names_the_rest(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    settings = settings.model_copy(update={"max_task_lines": 4})
    lines = [
        code_task("t1", "print(1)", "1"),
        "",  # blank lines do not count against the limit
        code_task("t2", "print(2)", "2"),
        '{"task_id": "broken"',  # a reject still counts: it is a task line that was read
        code_task("t3", "print(3)", "3"),
        "   ",
        code_task("t4", "print(4)", "4"),  # line 7: the 5th task line, the first not read
        "",
        "not even json",
        code_task("t5", "print(5)", "5"),  # line 10, the last: no line break after it
    ]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(lines))

    result = materialize_file(path, settings, instance)

    assert result.success
    assert check_results(result)["every_line_accounted_for"]
    key = result.dagster_run.tags["dagster/partition"]
    tasks, rejects = lake_rows(settings, key)
    assert tasks == [("t1", 1), ("t2", 3), ("t3", 5)]
    assert [row[0] for row in rejects] == [4, 7]
    (_, field, reason, raw, raw_bytes) = rejects[1]
    assert field is None and raw == ""
    assert reason == (
        "the file has more than 4 task lines (ADP_MAX_TASK_LINES): lines 7\u201310 (3 task lines, "
        f"{raw_bytes} bytes) not read"
    )
    assert raw_bytes == len("\n".join(lines[6:]).encode())
    # The batch ran the tasks it accepted, and only those.
    ran = query(settings, "SELECT task_id, success FROM trajectories WHERE batch = ? ORDER BY task_id", key)
    assert ran == [("t1", True), ("t2", True), ("t3", True)]
    metadata = result.asset_materializations_for_node("task_batch")[0].metadata
    assert (metadata["accepted"].value, metadata["rejected"].value) == (3, 2)


def test_lines_past_the_limit_are_counted_in_bounded_memory_not_parsed_or_kept(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    good = task_line("keep").encode()
    with path.open("wb") as out:
        out.write(good + b"\n")
        out.write(b'{"task_id": "x"}\n' * 200_000)  # would be 200,000 rejects if parsed
        out.write(b"y" * (3 * ONE_MB) + b"\n\n")  # an oversized line past the limit: not held either
    tracemalloc.start()
    try:
        parsed = parse_task_file(path, max_lines=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [item.task.task_id for item in parsed.accepted] == ["keep"]
    (rest,) = parsed.rejected
    assert rest.line_number == 2
    assert "lines 2\u2013200003 (200001 task lines," in rest.reason
    assert rest.raw_bytes == path.stat().st_size - len(good) - 1
    assert len(parsed.accepted) + len(parsed.rejected) == parsed.non_blank_lines == 2
    assert peak < 4 * ONE_MB, peak  # the 3 MB line and 200,000 lines were streamed through


def test_an_oversized_line_is_kept_as_its_number_and_size_and_rematerialises_the_same(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    settings = settings.model_copy(update={"max_task_line_bytes": LIMIT})
    content = b"".join(
        [
            task_line("small_1").encode() + b"\n",
            big_task("big_1", 5000) + b"\r\n",  # a CRLF line: the \r is part of its size
            task_line("small_2").encode() + b"\n",
            b"\n",
            big_task("big_2", LIMIT + 1),  # the last line, no line break, one byte over
        ]
    )
    path = tmp_path / "wide.jsonl"
    path.write_bytes(content)

    first = materialize_task_batch_after_registering(path, settings, instance)

    key = partition_key_for("wide", hashlib.sha256(content).hexdigest())
    assert first.success and check_results(first)["every_line_accounted_for"]
    for stored in task_files_dir(settings.data_dir).iterdir():  # the copy and its record
        assert MARK.encode() not in stored.read_bytes(), stored
    copy = registered_task_file(settings.data_dir, key)
    assert copy.path.stat().st_size < len(content) - 5000
    assert len(copy.path.read_bytes().splitlines()) == 5  # every line keeps its number
    assert (copy.sha256, copy.size, copy.lines_not_stored) == (hashlib.sha256(content).hexdigest(), len(content), 2)

    tasks, rejects = lake_rows(settings, key)
    assert tasks == [("small_1", 1), ("small_2", 3)]
    assert rejects == [
        (2, None, f"line is 5001 bytes, over the limit of {LIMIT} (ADP_MAX_TASK_LINE_BYTES)", "", 5001),
        (5, None, f"line is {LIMIT + 1} bytes, over the limit of {LIMIT} (ADP_MAX_TASK_LINE_BYTES)", "", LIMIT + 1),
    ]
    again = materialize_task_batch(settings, instance, key)
    assert again.success and check_results(again)["every_line_accounted_for"]
    assert lake_rows(settings, key) == (tasks, rejects)

    # A raised limit cannot read bytes that were not kept: the reject says so, and what to do.
    raised = settings.model_copy(update={"max_task_line_bytes": 8192})
    assert materialize_task_batch(raised, instance, key).success
    reasons = {row[0]: row[2] for row in lake_rows(raised, key)[1]}
    assert "over the limit of 2048 (ADP_MAX_TASK_LINE_BYTES) when the file was registered" in str(reasons[2])
    assert "register the file again (`adp run FILE`)" in str(reasons[2])
    # Registering the file again under that limit stores the lines, under the same key.
    assert register_task_file(path, raised.data_dir, max_line_bytes=8192).key == key
    assert materialize_task_batch(raised, instance, key).success
    tasks, rejects = lake_rows(raised, key)
    assert tasks == [("small_1", 1), ("big_1", 2), ("small_2", 3), ("big_2", 5)]
    assert rejects == []


def materialize_task_batch_after_registering(
    path: Path, settings: Settings, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    key = register_task_file(path, settings.data_dir, max_line_bytes=settings.max_task_line_bytes).key
    instance.add_dynamic_partitions(task_files.name, [key])
    return materialize_task_batch(settings, instance, key)


def test_the_same_content_registers_to_the_same_key_whatever_the_limit_and_a_huge_line_is_never_held(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    path = tmp_path / "same.jsonl"
    huge = b'{"task_id": "huge", "description": "' + b"z" * (48 * ONE_MB) + b'"}'
    path.write_bytes(task_line("a").encode() + b"\n" + huge + b"\n" + task_line("b").encode() + b"\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    tracemalloc.start()
    try:
        first = register_task_file(path, data, max_line_bytes=LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * ONE_MB, peak  # read through in 1 MiB pieces, never whole
    assert first.key == partition_key_for("same", digest) and first.sha256 == digest
    assert first.size == path.stat().st_size and first.lines_not_stored == 1
    assert first.path.stat().st_size < 1024
    again = register_task_file(path, data, max_line_bytes=LIMIT)
    smaller = register_task_file(path, data, max_line_bytes=1024)
    default = register_task_file(path, data)
    assert first.key == again.key == smaller.key == default.key
    assert first.registered_at == default.registered_at  # the first registration is the record
    assert [p.name for p in sorted(task_files_dir(data).iterdir())] == [f"{first.key}.json", f"{first.key}.jsonl"]


def test_a_line_that_imitates_a_placeholder_is_an_ordinary_line(tmp_path: Path) -> None:
    """Only a placeholder holding the sha256 of the very file it stands in is one: a line a person
    wrote (or a copy registered as a task file in turn) cannot claim a size for itself."""
    data = tmp_path / "data"
    source = tmp_path / "orig.jsonl"
    source.write_bytes(big_task("big", 4000) + b"\n" + task_line("ok").encode() + b"\n")
    copy = register_task_file(source, data, max_line_bytes=LIMIT)
    placeholder = copy.path.read_bytes().splitlines()[0]
    assert json.loads(placeholder) == {
        "adp_line_not_stored": {"file_sha256": copy.sha256, "line": 1, "bytes": 4000, "limit": LIMIT}
    }

    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(copy.path.read_bytes())  # the copy, fed back in as a task file
    registered = register_task_file(forged, data, max_line_bytes=LIMIT)
    parsed = parse_task_file(registered.path, max_line_bytes=LIMIT, copy_of_sha256=registered.sha256)
    (rejected,) = parsed.rejected
    assert rejected.line_number == 1 and "over the limit" not in rejected.reason
    assert rejected.raw.startswith('{"adp_line_not_stored"')
    assert [item.task.task_id for item in parsed.accepted] == ["ok"]

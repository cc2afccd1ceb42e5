"""Ingest streams a task file into the lake (#19 point 1): memory flat in the file's length.

Run as a script to measure peak memory by file length (the numbers in the issue's report):
``.venv/bin/python -m tests.test_ingest_memory 2000 100000``.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pytest

from adp_pipeline.ingest import IngestSummary, ingest_task_file
from adp_pipeline.storage import Lake
from adp_pipeline.task_files import register_task_file
from tests.helpers import code_task, lake_task_row, task_line


def _ingest(data_dir: Path, source: Path, *, shown: int = 20) -> IngestSummary:
    lake = Lake(data_dir)
    registered = register_task_file(source, data_dir)
    return ingest_task_file(
        lake, registered, max_line_bytes=256 * 1024, default_timeout=300, max_memory_mb=4096, shown=shown
    )


def _write_code_tasks(path: Path, count: int, *, description_chars: int = 0) -> Path:
    with path.open("w") as handle:
        for number in range(count):
            fields = {"description": "d" * description_chars} if description_chars else {}
            handle.write(code_task(f"t{number:07d}", "print(6*7)", "42", **fields) + "\n")
    return path


def _peak_bytes_of_ingest(data_dir: Path, source: Path) -> tuple[int, IngestSummary]:
    tracemalloc.start()
    try:
        summary = _ingest(data_dir, source)
        return tracemalloc.get_traced_memory()[1], summary
    finally:
        tracemalloc.stop()


def test_ingest_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    # Warm up first (imports, DuckDB, Arrow, pydantic schemas): their one-time allocations are
    # not what is measured.
    _ingest(tmp_path / "warm", _write_code_tasks(tmp_path / "warm.jsonl", 10))
    # 6,000 tasks of ~3 KB: holding them all (as ingest once did) peaks at ~45 MiB of Python
    # objects; streaming holds about a thousand lines at a time (the id check's chunk, the
    # writer's row group) and peaks at ~14 MiB.
    source = _write_code_tasks(tmp_path / "tasks.jsonl", 6000, description_chars=3000)

    peak, summary = _peak_bytes_of_ingest(tmp_path / "data", source)

    assert (summary.accepted, summary.rejected, summary.non_blank_lines) == (6000, 0, 6000)
    assert peak < 24 * 2**20, f"ingest peaked at {peak / 2**20:.1f} MiB of Python objects for 6,000 lines"


def test_ids_of_other_batches_are_rejects_in_every_chunk_and_lines_stay_in_file_order(tmp_path: Path) -> None:
    # 2,500 lines: three chunks of the cross-batch id check, each with ids of an earlier batch.
    earlier_ids = {"t0000005", "t0001500", "t0002499"}
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text("".join(task_line(task_id) + "\n" for task_id in sorted(earlier_ids)))
    first = _ingest(tmp_path / "data", earlier)
    lines = [code_task(f"t{number:07d}", "print(1)", "1") for number in range(2500)]
    lines[999] = "not json"  # a parse reject at the end of the first chunk
    lines[1000] = task_line("t0001000", constraints={"language": "python"})  # accepted, with a warning
    lines[2000] = lines[1999]  # a duplicate within the file, in the last chunk
    source = tmp_path / "batch.jsonl"
    source.write_text("\n".join(lines) + "\n")

    summary = _ingest(tmp_path / "data", source, shown=3)

    lake = Lake(tmp_path / "data")
    with lake.connect() as connection:
        rejects = connection.execute(
            "SELECT line_number, field, reason FROM task_rejects WHERE batch = ?", [summary.batch]
        ).fetchall()  # as stored: the file's order
        tasks = connection.execute(
            "SELECT count(*), count(DISTINCT task_id) FROM tasks WHERE batch = ?", [summary.batch]
        )
        accepted, distinct = tasks.fetchone() or (0, 0)
    assert [(line, field) for line, field, _ in rejects] == [
        (6, "task_id"),
        (1000, None),
        (1501, "task_id"),
        (2001, "task_id"),
        (2500, "task_id"),
    ]
    assert f"already accepted in batch {first.batch}" in rejects[0][2]
    assert "already on line 2000 of this file" in rejects[3][2]
    assert (accepted, distinct) == (2495, 2495)
    assert (summary.accepted, summary.rejected, summary.non_blank_lines) == (2495, 5, 2500)
    assert summary.by_type["code"] == 2495
    assert [reject.line_number for reject in summary.rejects] == [6, 1000, 1501]  # the first `shown`, in order
    assert summary.warning_count == 1 and [w.line_number for w in summary.warnings] == [1001]


class _ReadError(Exception):
    pass


@pytest.mark.parametrize("failure", ["in_the_block", "writing_the_last_rows"])
def test_a_failed_write_changes_neither_partition_and_leaves_no_partial_file(tmp_path: Path, failure: str) -> None:
    lake = Lake(tmp_path / "data")
    lake.write_partition("task_rejects", "b-00000000", [])
    lake.write_partition("tasks", "b-00000000", [lake_task_row("kept")])
    before = {table: lake.partition_file(table, "b-00000000").read_bytes() for table in ("task_rejects", "tasks")}

    # The first thousand rows are in the temporary file when the error comes.
    with (
        pytest.raises(_ReadError if failure == "in_the_block" else pa.ArrowException),
        lake.partition_writers("b-00000000", ("task_rejects", "tasks")) as (add_reject, add_task),
    ):
        for number in range(1500):
            add_task(lake_task_row(f"t{number}"))
        add_reject({"source_file": "f", "line_number": 1, "reason": "r", "raw": "", "raw_bytes": 0})
        if failure == "in_the_block":
            raise _ReadError  # as a task file that cannot be read halfway through
        add_task({**lake_task_row("bad"), "max_steps": "many"})  # not an integer: the last write fails

    after = {table: lake.partition_file(table, "b-00000000").read_bytes() for table in ("task_rejects", "tasks")}
    assert after == before
    assert not list(lake.root.rglob("*.partial"))


def _main(counts: list[int]) -> None:
    """Peak Python memory (tracemalloc) and wall time of ingesting ``counts`` trivial code tasks."""
    import tempfile

    for count in counts:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            _ingest(root / "warm", _write_code_tasks(root / "warm.jsonl", 10))
            source = _write_code_tasks(root / "tasks.jsonl", count)
            start = time.perf_counter()
            peak, summary = _peak_bytes_of_ingest(root / "data", source)
            wall = time.perf_counter() - start
            print(f"{count} lines: {summary.accepted} accepted, peak {peak / 2**20:.1f} MiB, {wall:.1f} s (traced)")


if __name__ == "__main__":
    _main([int(argument) for argument in sys.argv[1:]] or [2000, 100_000])

"""A deterministic export: records in task-id order, so two exports of one lake (`adp export`,
JSON lines and Parquet) are the same bytes; the split a pure function of the task id, with the
same default validation share for `adp export` and the ``training_dataset`` asset."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from adp_pipeline.cli import main
from adp_pipeline.export import split_of
from adp_pipeline.storage import Lake
from runtimes.agent import tools_for
from runtimes.core import TaskType
from runtimes.settings import Settings
from tests.helpers import lake_trajectory_row

TASKS = 2400


def trajectory_row(number: int, tools: str, created_at: datetime) -> dict[str, object]:
    """A verified code trajectory of task ``bench_<number>``: one call, its result, the answer."""
    call = {"id": "call_0", "type": "function", "function": {"name": "python_executor", "arguments": "{}"}}
    messages = [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": f"Task {number}"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": str(number)},
    ]
    return {
        **lake_trajectory_row(f"bench_{number:07d}", messages, tools=tools, created_at=created_at),
        "final_result": str(number),
    }


def shuffled_lake(data: Path) -> list[str]:
    """A lake whose task ids lie shuffled across four partitions: file order is no id order."""
    tools = json.dumps(tools_for(TaskType.CODE))
    now = datetime.now(UTC)
    numbers = list(range(TASKS))
    random.Random(7).shuffle(numbers)
    lake = Lake(data)
    for partition in range(4):
        rows = [trajectory_row(n, tools, now) for n in numbers[partition::4]]
        lake.write_partition("trajectories", f"shuffled-{partition}", rows)
    return sorted(f"bench_{n:07d}" for n in numbers)


def export_twice(data: Path, folder: Path, name: str, *extra: str) -> list[dict[str, bytes]]:
    """Every file each of two `adp export` runs writes (the record file and any beside it), by name."""
    written = []
    for attempt in ("first", "second"):
        out = folder / attempt / name
        result = CliRunner().invoke(main, ["export", "--out", str(out), "--data-dir", str(data), *extra])
        assert result.exit_code == 0, result.output
        written.append({path.name: path.read_bytes() for path in sorted(out.parent.iterdir())})
    return written


@pytest.mark.parametrize("export_format", ["trl", "openai"])
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_two_exports_of_one_lake_are_the_same_bytes_in_task_id_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, export_format: str
) -> None:
    monkeypatch.delenv("ADP_EXPORT_VAL_FRACTION", raising=False)
    data = tmp_path / "data"
    task_ids = shuffled_lake(data)
    first, second = export_twice(data, tmp_path, f"train{suffix}", "--format", export_format)
    # openai's metadata is in its sidecar, written beside the file and as deterministic
    names = {f"train{suffix}"} | ({f"train.meta{suffix}"} if export_format == "openai" else set())
    assert first == second and set(first) == names and all(first.values())

    path = tmp_path / "first" / (f"train.meta{suffix}" if export_format == "openai" else f"train{suffix}")
    if suffix == ".parquet":
        records = pq.read_table(path, columns=["task_id", "split"]).to_pylist()
    else:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    assert [r["task_id"] for r in records] == task_ids
    # The split is the task id's alone, at the default share that training_dataset uses too.
    fraction = Settings().export_val_fraction
    assert fraction == 0.05
    assert [r["split"] for r in records] == [split_of(task_id, fraction) for task_id in task_ids]
    assert 0 < sum(r["split"] == "validation" for r in records) < TASKS // 10


def test_the_split_is_a_pure_function_of_the_task_id() -> None:
    ids = [f"task-{n}" for n in range(2000)]
    splits = [split_of(task_id, 0.25) for task_id in ids]
    assert splits == [split_of(task_id, 0.25) for task_id in reversed(ids)][::-1]
    assert 400 < splits.count("validation") < 600
    assert all(split_of(task_id, 0.0) == "train" for task_id in ids)
    # A larger share only adds ids to validation: a task never moves back to train.
    assert all(split_of(t, 0.5) == "validation" for t, s in zip(ids, splits, strict=True) if s == "validation")

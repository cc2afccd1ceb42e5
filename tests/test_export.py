"""The training-set export round trip: real trajectories out of the lake, through every format,
into Hugging Face `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import datasets
import pytest

from adp_pipeline.export import FORMATS, export_training_set, sidecar_path, split_of
from adp_pipeline.storage import Lake, ensure_catalog
from runtimes.settings import Settings
from tests.helpers import code_task, materialize_file, task_line


@pytest.fixture
def lake(tmp_path: Path, settings: Settings, instance: dg.DagsterInstance) -> Lake:
    """Real trajectories of a batch (verified, one failing), plus one with broken messages."""
    path = tmp_path / "batch.jsonl"
    lines = [code_task(f"sum_{n}", f"print(sum(range({n})))", str(sum(range(n)))) for n in range(2, 12)]
    lines.append(code_task("wrong", "print(1)", "1", tests="assert False"))  # fails its verifier: not exported
    lines.append(task_line("web_page", "web", constraints={"reference_tool_calls": [
        {"name": "browser", "arguments": {"action": "goto", "url": "http://adp.local/inventory.html"}},
        {"name": "complete_task", "arguments": {"answer": "opened"}},
    ], "verify": {"url_contains": "inventory"}}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    assert materialize_file(path, settings, instance).success
    lake = Lake(settings.data_dir)
    # A trajectory whose tool result answers a call that was never made (a broken writer).
    with lake.connect() as connection:
        (row,) = (
            connection.sql("SELECT * EXCLUDE (batch) FROM trajectories WHERE task_id = 'sum_5'")
            .to_arrow_table()
            .to_pylist()
        )
    messages = json.loads(row["messages"])
    next(m for m in messages if m["role"] == "tool")["tool_call_id"] = "call_never_made"
    lake.write_partition(
        "trajectories", "broken-00000000", [{**row, "task_id": "broken", "messages": json.dumps(messages)}]
    )
    ensure_catalog(settings.data_dir)
    return lake


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
@pytest.mark.parametrize("export_format", FORMATS)
def test_every_format_loads_with_datasets_with_its_metadata_and_split(
    lake: Lake, tmp_path: Path, export_format: str, suffix: str
) -> None:
    """The round trip of a small lake: the broken trajectory left out with its reason, every
    other record loaded by ``datasets`` with adp's metadata where its format keeps it (columns,
    ATIF's ``extra``, OpenAI's sidecar). The consumers' own checks: test_export_consumers.py."""
    out = tmp_path / f"train-{export_format}{suffix}"
    summary = export_training_set(lake, out, export_format=export_format, val_fraction=0.3)  # type: ignore[arg-type]
    expected = {f"sum_{n}" for n in range(2, 12)} | {"web_page"}
    assert summary.rows == len(expected)
    assert summary.excluded == [("broken", "message 3: a tool result answers no open call ('call_never_made')")]

    def load(path: Path) -> datasets.Dataset:
        kind = "parquet" if suffix == ".parquet" else "json"
        return datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))

    loaded = load(out)
    if export_format == "openai":
        assert summary.sidecar == sidecar_path(out) == out.with_name(f"train-openai.meta{suffix}")
        metadata = list(load(summary.sidecar))
        assert set(loaded.column_names) == {"messages", "tools"} and len(metadata) == len(loaded)
    elif export_format == "atif":
        metadata = [row["extra"] for row in loaded]
    else:
        metadata = list(loaded)
    assert sorted(row["task_id"] for row in metadata) == sorted(expected)
    assert {row["task_id"]: row["split"] for row in metadata} == {t: split_of(t, 0.3) for t in expected}
    assert {row["split"] for row in metadata} == {"train", "validation"}
    for row in metadata:
        # JSON text in columns (every datasets version reads a string), an object in ATIF's extra
        verifier = row["verifier"] if export_format == "atif" else json.loads(row["verifier"])
        assert row["policy"] == "oracle" and row["n_steps"] >= 2 and verifier["passed"] is True


def test_failed_trajectories_only_on_request_and_where_filters(lake: Lake, tmp_path: Path) -> None:
    everything = export_training_set(lake, tmp_path / "all.jsonl", include_failed=True)
    assert everything.rows == 12  # 10 sums, the web task, and the failed one
    code_only = export_training_set(lake, tmp_path / "code.jsonl", where="task_type = 'code'")
    assert code_only.rows == 10 and dict(code_only.by_type) == {"code": 10}
    assert code_only.by_split == {"train": 10}  # no validation fraction: all train

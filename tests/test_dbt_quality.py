"""The dbt quality project builds over a real lake, and its tests fail on bad data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from adp_pipeline.storage import Lake, ensure_catalog
from runtimes.settings import Settings
from tests.conftest import REPO, materialize_file, task_line

DBT = str(Path(sys.executable).with_name("dbt"))
PROJECT = REPO / "dbt_quality"


def dbt(command: str, data_dir: Path, work: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADP_DATA_DIR": str(data_dir), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    args = [DBT, command, "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT)]
    args += ["--target-path", str(work / "target"), "--log-path", str(work / "logs")]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_dbt_build_passes_on_a_clean_lake_and_fails_on_a_duplicated_task_id(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(task_line("a") + "\n" + task_line("b", "web") + "\nnot json\n")
    assert materialize_file(path, settings, instance).success

    built = dbt("build", settings.data_dir, tmp_path)
    assert built.returncode == 0, built.stdout[-3000:]
    assert "ERROR=0" in built.stdout

    # Two batches that raced each other and both accepted task "a".
    with Lake(settings.data_dir).connect() as connection:
        rows = connection.sql("SELECT * EXCLUDE (batch) FROM tasks WHERE task_id = 'a'").to_arrow_table()
    Lake(settings.data_dir).write_partition("tasks", "raced-00000000", rows.to_pylist())
    ensure_catalog(settings.data_dir)

    tested = dbt("test", settings.data_dir, tmp_path)
    assert tested.returncode != 0
    assert "FAIL 1 unique_stg_tasks_task_id" in tested.stdout

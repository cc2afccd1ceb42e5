from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from adp_pipeline.storage import Lake, ensure_catalog, open_catalog
from adp_pipeline.storage.tables import COMPUTED_COLUMNS, TABLES
from tests.helpers import lake_task_row


def test_views_have_every_column_before_any_batch(tmp_path: Path) -> None:
    with open_catalog(tmp_path) as connection:
        for table, schema in TABLES.items():
            columns = [c[0] for c in connection.execute(f"DESCRIBE {table}").fetchall()]
            assert columns == [*schema.names, "batch", *COMPUTED_COLUMNS.get(table, {})]
            assert connection.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_rewriting_a_partition_replaces_it_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    first = lake.write_partition("tasks", "b-00000001", [lake_task_row("a"), lake_task_row("b")])
    second = lake.write_partition("tasks", "b-00000001", [lake_task_row("c")])
    assert first == second
    assert pq.read_table(second).column("task_id").to_pylist() == ["c"]
    leftovers = [p.name for p in (tmp_path / "lake").rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    assert leftovers == []


def test_rows_that_do_not_fit_the_schema_are_refused_and_the_old_partition_stays(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.write_partition("tasks", "b-00000001", [lake_task_row("a")])
    with pytest.raises((TypeError, ValueError)):
        lake.write_partition("tasks", "b-00000001", [{**lake_task_row("b"), "max_steps": "many"}])
    with lake.connect() as connection:
        assert connection.execute("SELECT task_id FROM tasks").fetchall() == [("a",)]
    with pytest.raises(ValueError, match="unknown lake table"):
        lake.write_partition("nope", "b-00000001", [])
    # Every key a hive scan would read back as another partition, or fail every query on.
    for key in ("../escape", "", ".hidden", "a/b", "a=b", "a?b", "a%2Fb", "a b", "a\nb", "é"):
        with pytest.raises(ValueError, match="invalid batch key"):
            lake.partition_file("tasks", key)


def test_the_catalog_follows_the_data_dir_when_it_moves(tmp_path: Path) -> None:
    Lake(tmp_path / "old").write_partition("tasks", "b-00000001", [lake_task_row("a")])
    ensure_catalog(tmp_path / "old")
    shutil.move(tmp_path / "old", tmp_path / "new")
    with open_catalog(tmp_path / "new") as connection:
        assert connection.execute("SELECT task_id, batch FROM tasks").fetchall() == [("a", "b-00000001")]

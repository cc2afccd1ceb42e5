"""A dbt mart materialised alone is as current as the lake. A person can materialise any one mart
from the UI; one that read another mart (``success_by_type`` summed ``success_by_day``) then gave
the numbers of that mart's last build. So marts read staging views and sources only."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from adp_pipeline.builder import build_definitions
from adp_pipeline.defs.quality.assets import QUALITY_GROUP
from adp_pipeline.storage import Lake, ensure_catalog, open_catalog
from runtimes.settings import Settings
from tests.helpers import REPO, lake_task_row, lake_trajectory_row

MARTS = {path.stem for path in (REPO / "dbt_quality" / "models" / "marts").glob("*.sql")}


def test_no_mart_reads_another_mart(settings: Settings) -> None:
    graph = build_definitions(settings).resolve_asset_graph()
    quality = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).group_name == QUALITY_GROUP}
    assert MARTS and quality >= MARTS  # every mart file is an asset of the quality group
    staging = {name for name in quality if name.startswith("stg_")}
    assert staging and not staging & MARTS
    read_marts = {
        mart: sorted(parents & MARTS)
        for mart in MARTS
        if (parents := {key.to_user_string() for key in graph.get(dg.AssetKey(mart)).parent_keys}) & MARTS
    }
    assert read_marts == {}
    assert graph.get(dg.AssetKey("success_by_type")).parent_keys == {dg.AssetKey("stg_trajectories")}


def _add_batch(data_dir: Path, batch: str, outcomes: dict[str, bool]) -> None:
    """A batch of code tasks in the lake, each verified successful or failed as ``outcomes`` says."""
    lake = Lake(data_dir)
    lake.write_partition("tasks", batch, [lake_task_row(task_id) for task_id in outcomes])
    lake.write_partition(
        "trajectories",
        batch,
        [{**lake_trajectory_row(task_id, []), "success": ok, "verified": ok} for task_id, ok in outcomes.items()],
    )
    ensure_catalog(data_dir)


def _rows(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    with open_catalog(data_dir) as connection:
        return connection.execute(sql).fetchall()


def test_success_by_type_materialised_alone_counts_the_whole_lake(
    settings: Settings, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(settings)
    # success_by_day too: the mart success_by_type used to be summed from.
    built = [dg.AssetKey(name) for name in ("stg_tasks", "stg_trajectories", "success_by_day", "success_by_type")]
    everything = defs.resolve_implicit_global_asset_job_def()
    _add_batch(settings.data_dir, "first-00000001", {"a": True, "b": False})
    assert everything.execute_in_process(instance=instance, asset_selection=built, raise_on_error=False).success
    by_type = "SELECT task_type, trajectories, verified_successes, success_rate FROM success_by_type"
    assert _rows(settings.data_dir, by_type) == [("code", 2, 1, 0.5)]

    # A new batch; then only success_by_type, as from its asset page in the UI.
    _add_batch(settings.data_dir, "second-00000002", {"c": True, "d": True})
    alone = everything.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("success_by_type")], raise_on_error=False
    )
    assert alone.success
    assert [event.asset_key for event in alone.get_asset_materialization_events()] == [dg.AssetKey("success_by_type")]
    assert _rows(settings.data_dir, by_type) == [("code", 4, 3, 0.75)]
    # success_by_day was not rebuilt: read from it, the mart would still say 2 trajectories.
    assert _rows(settings.data_dir, "SELECT sum(trajectories) FROM success_by_day") == [(2,)]

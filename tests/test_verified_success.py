"""One definition of a verified success (the ``trajectories`` view's ``verified_success``): a task
without a verifier ends ``success`` but is no verified success, for the Dagster check, the dbt
test, the batch summary and every other count alike."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg

from adp_pipeline.builder import build_definitions
from adp_pipeline.defs.jobs import nightly
from adp_pipeline.storage import Lake
from adp_pipeline.storage.tables import COMPUTED_COLUMNS
from runtimes.settings import Settings
from tests.helpers import check_results, code_task, materialize_file, query, task_line

REPOSITORY = Path(__file__).resolve().parents[1]


def no_verifier_task(task_id: str) -> str:
    """A code task the oracle completes, with no ``verify``: its run succeeds, nothing verifies it."""
    calls = [
        {"name": "python_executor", "arguments": {"code": "print(5)"}},
        {"name": "complete_task", "arguments": {"answer": "5"}},
    ]
    return task_line(task_id, "code", constraints={"reference_tool_calls": calls})


def test_a_task_without_a_verifier_fails_the_dagster_check_and_the_dbt_test_alike(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    assert settings.success_threshold == 0.8
    path = tmp_path / "mixed.jsonl"
    path.write_text(code_task("checked", "print(2)", "2") + "\n" + no_verifier_task("unchecked") + "\n")
    result = materialize_file(path, settings, instance)
    assert result.success

    rows = query(settings, "SELECT task_id, success, verified, verified_success FROM trajectories ORDER BY task_id")
    assert rows == [("checked", True, True, True), ("unchecked", True, None, False)]
    # Both ran to success (2/2 = 100 %); verified, 1/2 = 50 % < 80 %: the check fails.
    assert check_results(result)["success_rate_per_type"] is False
    (materialization,) = result.asset_materializations_for_node("trajectories")
    assert materialization.metadata["succeeded"].value == 1  # the batch summary counts the same way

    nightly_run = (
        build_definitions(settings)
        .resolve_job_def(nightly.name)
        .execute_in_process(instance=instance, raise_on_error=False)
    )
    assert nightly_run.success  # the dbt test is a warning: reported, the run goes on
    dbt_verdict = {e.check_name: e.passed for e in nightly_run.get_asset_check_evaluations()}
    assert dbt_verdict["success_rate_above_threshold"] is False  # the same verdict as the Dagster check
    (export,) = nightly_run.asset_materializations_for_node("training_dataset")
    assert export.metadata["records"].value == 1  # only "checked" goes into the training set

    # The staging model takes the view's column, not a definition of its own.
    staged = (REPOSITORY / "dbt_quality/models/staging/stg_trajectories.sql").read_text().lower()
    assert "success and" not in staged and "verified_success," in staged


def test_verified_success_is_the_views_column_and_the_only_definition(settings: Settings) -> None:
    """Every count reads the view's column: no SQL in the package spells the definition again."""
    definition = COMPUTED_COLUMNS["trajectories"]["verified_success"]
    assert definition == "success AND coalesce(verified, false)"
    spelled = []
    for pattern in ("adp_pipeline/**/*.py", "dbt_quality/models/**/*.sql", "dbt_quality/tests/**/*.sql"):
        for file in REPOSITORY.glob(pattern):
            text = " ".join(file.read_text().lower().split())
            if re.search(r"success and coalesce\((\w+\.)?verified", text):
                spelled.append(str(file.relative_to(REPOSITORY)))
    assert spelled == ["adp_pipeline/storage/tables.py"]

    with Lake(settings.data_dir).connect() as connection:
        columns = [row[0] for row in connection.execute("DESCRIBE trajectories").fetchall()]
    assert columns.count("verified_success") == 1

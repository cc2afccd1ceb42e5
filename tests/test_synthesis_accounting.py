"""Synthesis accounting: the ``synthesis_by_generation`` mart counts a composition task's tokens
once (not once per parent essence), its dbt test says so in a real nightly run, and the
synthesis asset checks fail when a generation's verified success or the near-duplicate rate is
out of bounds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from adp_pipeline.builder import build_definitions
from adp_pipeline.defs.jobs import nightly
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.defs.synthesis.checks import accepted_near_duplicate_rate, synthesized_success_per_generation
from adp_pipeline.storage import Lake, ensure_catalog
from adp_pipeline.storage.catalog import quality_path
from runtimes.settings import Settings
from tests.helpers import code_task, materialize_file

MART = "synthesis_by_generation"
TOKENS_TEST = "synthesis_tokens_counted_once"


def accepted_row(
    task_id: str, mutation: str, essence_ids: list[str], tokens: int, generation: int = 1
) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "task_type": "code",
        "generation": generation,
        "mutation": mutation,
        "parent_task_ids": [f"parent-of-{essence_id}" for essence_id in essence_ids],
        "essence_ids": essence_ids,
        "description": f"task {task_id}",
        "task": json.dumps({"task_id": task_id}),
        "task_file": f"/tasks/synth-{task_id}.jsonl",
        "tokens": tokens,
        "created_at": datetime.now(UTC),
    }


def run_nightly(settings: Settings, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def(nightly.name)
    return job.execute_in_process(instance=instance, raise_on_error=False)


def test_a_composition_tasks_tokens_are_counted_once_in_synthesis_by_generation(
    settings: Settings, instance: dg.DagsterInstance
) -> None:
    lake = Lake(settings.data_dir)
    # A composition of two essences (one task, 700 tokens), a one-parent mutation, and one
    # with no recorded essence: per group, tokens are the sum over tasks, each task once.
    lake.write_partition(
        "synthesized_tasks",
        "seed-00000001",
        [
            accepted_row("composed", "composition", ["e1", "e2"], 700),
            accepted_row("param", "parameter", ["e1"], 300),
            accepted_row("param2", "parameter", ["e3"], 50),
            accepted_row("orphan", "parameter", [], 5, generation=2),
        ],
    )
    ensure_catalog(settings.data_dir)

    result = run_nightly(settings, instance)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks[TOKENS_TEST].passed, checks[TOKENS_TEST].description
    assert checks[TOKENS_TEST].asset_key == dg.AssetKey(MART)
    # The mart is a table in dbt's own database.
    with duckdb.connect(str(quality_path(settings.data_dir)), read_only=True) as connection:
        rows = connection.execute(
            f"SELECT generation, mutation, accepted, parent_essences, tokens FROM {MART} ORDER BY ALL"
        ).fetchall()
    assert rows == [
        (1, "composition", 1, 2, 700),  # 700, not 1,400
        (1, "parameter", 2, 2, 350),
        (2, "parameter", 1, 0, 5),
    ]


KNOWN = (
    "Write a Python function running_median(values) that keeps a sorted window of the last seven "
    "readings from a temperature sensor, returns the median after each new reading, ignores readings "
    "marked as missing, and report the medians for the sample series"
)


def unique_text(i: int) -> str:
    """A description that shares no word pair worth counting with any other one here."""
    return f"Compute quantity{i} from input{i} with helper{i} then report value{i} rounded to place{i}"


def write_accepted(lake: Lake, batch: str, texts: list[str], generation: int = 1) -> None:
    rows = []
    for i, text in enumerate(texts):
        row = accepted_row(f"{batch}-{i}", "parameter", [f"{batch}-e{i}"], 10, generation)
        rows.append({**row, "description": text})
    lake.write_partition("synthesized_tasks", batch, rows)


def test_the_near_duplicate_check_fails_at_five_percent_and_passes_under(settings: Settings) -> None:
    lake = Lake(settings.data_dir)
    adp = AdpResource.from_settings(settings)
    write_accepted(lake, "earlier", [KNOWN])
    near = KNOWN.removesuffix("series") + "readings"  # one word changed: a near duplicate

    write_accepted(lake, "mine", [unique_text(i) for i in range(19)] + [near])  # 1 of 20: 5 %
    result = accepted_near_duplicate_rate(adp, "mine")
    assert not result.passed
    assert result.metadata["accepted"].value == 20 and result.metadata["duplicates"].value == 1
    assert result.metadata["rate"].value == 0.05
    (example,) = result.metadata["examples"].value
    assert example == "mine-19: near of earlier-0"

    write_accepted(lake, "mine", [unique_text(i) for i in range(19)] + [KNOWN, near])  # a copy, its copy: 2 of 21
    result = accepted_near_duplicate_rate(adp, "mine")
    assert not result.passed and result.metadata["duplicates"].value == 2

    write_accepted(lake, "mine", [unique_text(i) for i in range(24)] + [near])  # 1 of 25: 4 %
    result = accepted_near_duplicate_rate(adp, "mine")
    assert result.passed and result.metadata["duplicates"].value == 1


def test_a_generation_below_the_minimum_verified_success_fails_its_check(
    settings: Settings, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    lake = Lake(settings.data_dir)
    lineage = {
        "parent_task_ids": ["seed"],
        "mutation": "parameter",
        "generation": 1,
        "created_at": "2026-01-01T00:00:00Z",
    }
    tasks = [
        ("g1_ok", "print(2)", "2", None),
        ("g1_bad", "print(3)", "3", "assert False"),  # runs, but its verifier fails
    ]
    # Written by synthesis (an accepted row with the same id and text): only such tasks count.
    lake.write_partition(
        "synthesized_tasks",
        "synth-source",
        [{**accepted_row(task_id, "parameter", ["e"], 10), "description": f"do {task_id}"} for task_id, *_ in tasks],
    )
    path = tmp_path / "synth.jsonl"
    path.write_text(
        "".join(code_task(i, code, answer, tests=check, lineage=lineage) + "\n" for i, code, answer, check in tasks)
    )
    result = materialize_file(path, settings, instance)
    assert result.success  # a WARN check: the run goes on
    evaluation = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "synthesized_success_per_generation"
    )
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == f"below {settings.synth_min_success:.0%} in generation [1]"
    assert "| 1 | 2 | 1 | 50.0% |" in evaluation.metadata["rates"].value

    # At the threshold is enough: the same batch passes with ADP_SYNTH_MIN_SUCCESS=0.5.
    batch = result.dagster_run.tags["dagster/partition"]
    at_half = AdpResource.from_settings(settings.model_copy(update={"synth_min_success": 0.5}))
    assert synthesized_success_per_generation(at_half, batch).passed

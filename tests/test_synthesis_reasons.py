"""Synthesis says why it made no candidate: ``no_candidates_because`` in the ``synthesized_tasks``
metadata and a warning in the run's log, in the words `adp run` prints (synthesis off, a budget
used up, no model for the essences there are, no essences and why). Real runs on a real lake;
the model, where one is configured, is the scripted mock server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner

from adp_pipeline.cli import main
from adp_pipeline.essences import extract_batch_essences
from adp_pipeline.instance import open_instance
from adp_pipeline.materialize import failure_reason
from adp_pipeline.storage import Lake
from adp_pipeline.storage.rows import task_row
from adp_pipeline.synthesize import NO_MODEL, model_missing, synthesize_batch
from runtimes.core import ConfigError, TaskSpec
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript
from synthesis.essence import Essence, SuccessPattern
from synthesis.stages import Stage
from tests.helpers import code_task, materialize_file, query, synthesis_only, task_line

SOLVED = code_task("solved", "print(6 * 7)", "42")
# A URL with no model name: settings that contradict each other. Nothing listens on port 9; nothing
# may call it either.
HALF_CONFIGURED = "http://127.0.0.1:9/v1"
CONTRADICTORY = (
    "ADP_LLM_BASE_URL is set but ADP_LLM_MODEL is not; set the model name to use; "
    "until then only MiniWoB tasks are reseeded"
)
UNSOLVED = code_task("unsolved", "print(6 * 7)", "42", tests="assert False")  # runs; its check fails


@pytest.fixture
def model() -> Iterator[MockLLMServer]:
    with MockLLMServer(MockScript()) as server:
        yield server


def test_adp_run_and_the_metadata_give_the_same_reason_and_each_setting_its_own(
    settings: Settings, model: MockLLMServer, tmp_path: Path
) -> None:
    # `adp run` with no model: the code batch is verified, its essence made, and no candidate.
    solved, unsolved = tmp_path / "solved.jsonl", tmp_path / "unsolved.jsonl"
    solved.write_text(SOLVED + "\n")
    unsolved.write_text(UNSOLVED + "\n")
    args = ["run", str(solved), str(unsolved), "--data-dir", str(settings.data_dir), "--policy", "oracle"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # the console wraps long lines
    assert model_missing(settings) == NO_MODEL
    assert printed.count(NO_MODEL) == 1 and f"synthesis: {NO_MODEL}" in printed

    with open_instance(settings) as instance:
        records = instance.fetch_materializations(dg.AssetKey("synthesized_tasks"), limit=10).records
        by_batch = {
            str(materialization.partition).rsplit("-", 1)[0]: materialization.metadata
            for record in records
            if (materialization := record.asset_materialization) is not None
        }
    first = {key: value.value for key, value in by_batch["solved"].items()}
    assert (first["essences"], first["candidates"]) == (1, 0)
    assert first["no_candidates_because"] == NO_MODEL
    assert first["skipped"] == {"no model configured for the mutation operators": 1}
    other = by_batch["unsolved"]["no_candidates_because"].value
    assert other == (
        "the batch has no essences: no verified success among its 1 trajectory "
        "(essences are made from verified successes only)"
    )

    # The same batch again, under each setting that stops synthesis: each gives its own reason,
    # logged as a warning too. A configured model out of tokens is not a missing model, and is
    # not asked.
    (batch,) = [str(r.partition_key) for r in records if str(r.partition_key).startswith("solved-")]
    with_model = {"llm_base_url": model.base_url, "llm_model": "scripted", "enable_cache": False}
    cases = {
        "synthesis is off (ADP_SYNTH_MAX_GENERATION=0)": {"synth_max_generation": 0},
        "the daily task budget (ADP_SYNTH_DAILY_TASKS=0) is used up": {"synth_daily_tasks": 0},
        "no candidate is asked for (ADP_SYNTH_CANDIDATES=0)": {"synth_candidates": 0},
        "the daily token budget (ADP_SYNTH_DAILY_TOKENS=0) is used up": {**with_model, "synth_daily_tokens": 0},
        NO_MODEL: {},
    }
    for reason, updates in cases.items():
        metadata, warnings = synthesis_only(settings.model_copy(update=updates), batch)
        assert (metadata["candidates"], metadata["no_candidates_because"]) == (0, reason), updates
        assert any(reason in warning for warning in warnings), (reason, warnings)
    assert model.stats.requests == 0

    # Essences not made yet, and a partition with nothing at all.
    Lake(settings.data_dir).write_partition("essences", batch, [])
    metadata, _ = synthesis_only(settings, batch)
    assert metadata["no_candidates_because"] == (
        "the batch has no essences yet, though it has 1 verified success: materialise task_essences first"
    )
    metadata, _ = synthesis_only(settings, "nothing-00000000")
    assert metadata["no_candidates_because"] == (
        "the batch has no essences: it has no trajectories (materialise trajectories, then task_essences)"
    )
    # The rows are as they were: reasons are metadata, not candidates.
    with Lake(settings.data_dir).connect() as connection:
        assert connection.execute("SELECT count(*) FROM synthesis_rejects").fetchall() == [(0,)]
        assert connection.execute("SELECT count(*) FROM synthesized_tasks").fetchall() == [(0,)]


def _essence(task: TaskSpec, essence_id: str) -> dict[str, Any]:
    """``task``'s essence as a row of ``essences``."""
    essence = Essence(
        essence_id=essence_id,
        task_id=task.task_id,
        task_type=task.task_type,
        generation=0,
        query=task.description,
        complexity=1,
        tools=list(task.expected_tools),
        n_steps=2,
        success_pattern=SuccessPattern(key_steps=[], execution_pattern="", success_indicators=[]),
        verifier_kind="expected_answer",
        extractor="structural",
    )
    return {
        **essence.model_dump(exclude={"success_pattern", "task_type"}),
        "task_type": essence.task_type.value,
        "success_pattern": essence.success_pattern.model_dump_json(),
        "created_at": datetime.now(UTC),
    }


def test_essences_left_out_for_several_reasons_are_each_counted_in_the_reason(settings: Settings) -> None:
    lake = Lake(settings.data_dir)
    batch = "mixed-00000001"
    code = TaskSpec.model_validate_json(SOLVED, strict=False)
    elsewhere = TaskSpec.model_validate_json(
        task_line(
            "elsewhere", "web", constraints={"start_url": "https://example.com/", "verify": {"url_contains": "x"}}
        ),
        strict=False,
    )
    gone = code.model_copy(update={"task_id": "gone"})  # an essence whose task the batch lacks
    now = datetime.now(UTC)
    tasks = [
        task_row(task, source_file="f.jsonl", line_number=i, ingested_at=now)
        for i, task in enumerate([code, elsewhere], 1)
    ]
    lake.write_partition("tasks", batch, tasks)
    lake.write_partition("essences", batch, [_essence(code, "e1"), _essence(elsewhere, "e2"), _essence(gone, "e3")])

    summary = synthesize_batch(lake, batch, settings)
    assert summary.candidates == [] and summary.essences == 3
    assert summary.no_candidates_because == (
        "no essence could be mutated: its task is not in the batch (1 essence); "
        "a web task neither on adp's site nor a MiniWoB++ episode (1 essence); "
        "no model configured for the mutation operators (1 essence)"
    )
    assert summary.task_files == {}
    # With LLM settings that contradict each other, the essence left out for want of a model says why.
    summary = synthesize_batch(lake, batch, settings.model_copy(update={"llm_base_url": HALF_CONFIGURED}))
    assert summary.no_candidates_because == (
        "no essence could be mutated: its task is not in the batch (1 essence); "
        "a web task neither on adp's site nor a MiniWoB++ episode (1 essence); "
        f"no model configured for the mutation operators (1 essence): {CONTRADICTORY}"
    )


def test_the_stored_stage_values_are_the_documented_ones() -> None:
    # Stored in synthesis_rejects and read by dbt and people: never renamed.
    assert [stage.value for stage in Stage] == ["model", "validation", "self_check", "dedupe", "guard"]
    documented = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    assert "stage (`model`, `validation`, `self_check`, `dedupe`, `guard`)" in documented


def test_the_reason_for_no_model_names_contradictory_model_settings(settings: Settings) -> None:
    assert model_missing(settings) == NO_MODEL
    assert model_missing(settings.model_copy(update={"synth_max_generation": 0})) is None  # off: nothing to say
    half = settings.model_copy(update={"llm_base_url": HALF_CONFIGURED})
    assert model_missing(half) == CONTRADICTORY
    assert model_missing(half.model_copy(update={"llm_model": "m"})) is None
    vllm = settings.model_copy(update={"vllm_url": "http://127.0.0.1:9"})  # vLLM's URL, no model name either
    assert model_missing(vllm) == (
        "VLLM_URL is set but no model is; set ADP_LLM_MODEL to the model vLLM serves; "
        "until then only MiniWoB tasks are reseeded"
    )


@pytest.mark.parametrize("variable", ["ADP_LLM_BASE_URL", "VLLM_URL"])
def test_an_oracle_run_with_contradictory_llm_settings_succeeds_and_synthesis_says_why(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # A URL without a model name: the oracle needs no model, so the run succeeds; synthesis runs
    # no model operator and says why, once in `adp run`'s output and in the asset's metadata.
    monkeypatch.setenv(variable, HALF_CONFIGURED)
    monkeypatch.delenv("ADP_LLM_MODEL", raising=False)
    monkeypatch.delenv("VLLM_MODEL", raising=False)
    reason = model_missing(Settings())  # built as `adp run` builds it, from the environment
    assert reason is not None and reason.startswith(variable) and reason.endswith("only MiniWoB tasks are reseeded")
    solved = tmp_path / "solved.jsonl"
    solved.write_text(SOLVED + "\n")
    args = ["run", str(solved), "--data-dir", str(settings.data_dir), "--policy", "oracle"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # the console wraps long lines
    assert printed.count(reason) == 1 and f"synthesis: {reason}" in printed
    assert NO_MODEL not in printed and "Traceback" not in printed

    with open_instance(settings) as instance:
        (record,) = instance.fetch_materializations(dg.AssetKey("synthesized_tasks"), limit=10).records
        assert record.asset_materialization is not None
        metadata = {key: value.value for key, value in record.asset_materialization.metadata.items()}
    assert (metadata["essences"], metadata["candidates"]) == (1, 0)
    assert metadata["no_candidates_because"] == reason
    assert metadata["skipped"] == {"no model configured for the mutation operators": 1}

    # The llm essence extractor does need a model: it fails naming the setting that asks for one
    # and the one that is wrong, before it reads or writes anything (the batch keeps its essences).
    batch = str(record.partition_key)
    lake = Lake(settings.data_dir)
    extractor = settings.model_copy(update={"essence_extractor": "llm", "llm_base_url": HALF_CONFIGURED})
    with pytest.raises(ConfigError, match=r"^ADP_ESSENCE_EXTRACTOR=llm needs a model: ADP_LLM_BASE_URL is set but"):
        extract_batch_essences(lake, batch, extractor)
    with lake.connect() as connection:
        assert connection.execute("SELECT count(*) FROM essences WHERE batch = ?", [batch]).fetchall() == [(1,)]


def test_the_llm_essence_extractor_without_a_model_fails_the_run_at_its_first_step(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    """Not after every task ran: the essences step would refuse, so the run says so before it starts."""
    path = tmp_path / "batch.jsonl"
    path.write_text(code_task("one", "print(1)", "1") + "\n")
    extractor = settings.model_copy(update={"essence_extractor": "llm"})  # policy oracle: it needs no model
    result = materialize_file(path, extractor, instance)
    assert not result.success
    reason = failure_reason(result)
    assert reason.startswith("task_batch: ADP_ESSENCE_EXTRACTOR=llm needs a model: set ADP_LLM_BASE_URL"), reason
    assert query(extractor, "SELECT count(*) FROM trajectories") == [(0,)]
    assert materialize_file(path, settings, instance).success  # the structural extractor needs none

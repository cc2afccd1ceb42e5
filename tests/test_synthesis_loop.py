"""The closed loop end to end: seed batch → essences → synthesized file → the sensor's run →
its trajectories → the next generation, with the model scripted by the mock LLM server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from adp_pipeline.materialize import run_task_files
from adp_pipeline.storage import Lake
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript, ScriptedTurn, ScriptRule
from synthesis.essence import EXTRACT_INSTRUCTIONS
from synthesis.mutate import MUTATION_INSTRUCTIONS, OPERATOR_INSTRUCTIONS
from tests.helpers import Daemon, code_task, materialize_file


def _task(description: str, code: str, answer: str, tests: str | None) -> dict[str, Any]:
    return {"description": description, "code": code, "answer": answer, "tests": tests}


SEED_1 = _task(
    "Write a Python function sum_to(n) that returns the sum of the integers from 1 to n inclusive, "
    "and report sum_to(100).",
    "def sum_to(n):\n    return n * (n + 1) // 2\n\nprint(sum_to(100))",
    "5050",
    "assert sum_to(10) == 55",
)
SEED_2 = _task(
    "Write a Python function count_vowels(text) that counts the vowels a, e, i, o and u in a lower-case "
    "string, and report count_vowels('programming').",
    "def count_vowels(text):\n    return sum(c in 'aeiou' for c in text)\n\nprint(count_vowels('programming'))",
    "3",
    "assert count_vowels('aeiou') == 5",
)
# What the scripted model answers, per (parent, operator): two genuinely new tasks, and one of
# each kind of candidate the filters must stop.
GOOD_1 = _task(
    "Write a Python function sum_of_squares(n) returning 1*1 + 2*2 + ... + n*n; report sum_of_squares(10).",
    "def sum_of_squares(n):\n    return sum(i * i for i in range(1, n + 1))\n\nprint(sum_of_squares(10))",
    "385",
    "assert sum_of_squares(3) == 14",
)
GOOD_2 = _task(
    "Count how many whitespace-separated words a string has with a function count_words(text); "
    "report count_words('the quick brown fox').",
    "def count_words(text):\n    return len(text.split())\n\nprint(count_words('the quick brown fox'))",
    "4",
    "assert count_words('a b') == 2\nassert count_words('') == 0",
)
GOLD_FAILS = _task(  # its test is wrong: the even numbers up to 10 sum to 30
    "Write a Python function sum_even_to(n) returning the sum of the even integers up to n; report sum_even_to(100).",
    "def sum_even_to(n):\n    return sum(range(2, n + 1, 2))\n\nprint(sum_even_to(100))",
    "2550",
    "assert sum_even_to(10) == 31",
)
NULL_PASSES = {  # its only check is a test that cannot fail
    **_task(
        "Write a Python function mean_of(values) that returns the arithmetic mean of a list of numbers.",
        "def mean_of(values):\n    return sum(values) / len(values)\n\nprint(mean_of([1, 2, 3]))",
        "2.0",
        "assert mean_of([1, 2]) is None or True",
    ),
    "expected": None,
}
EXACT_COPY = {**SEED_2}  # the other seed's own text
PARAPHRASE = {**SEED_1, "description": SEED_1["description"].replace("the sum of", "the total of")}
NO_CHECK = {**GOOD_2, "description": "Reverse a string with a function flip(text).", "tests": None, "expected": None}
# Generation 2, from the generation-1 tasks.
NEXT_1 = _task(
    "Write a Python function product_to(n) that multiplies the integers from 1 to n; report product_to(5).",
    "def product_to(n):\n    out = 1\n    for i in range(2, n + 1):\n        out *= i\n    return out\n\n"
    "print(product_to(5))",
    "120",
    "assert product_to(4) == 24",
)
NEXT_2 = _task(
    "Write a Python function reverse_words(text) returning the words of a string in reverse order, "
    "joined by single spaces; report reverse_words('one two three').",
    "def reverse_words(text):\n    return ' '.join(text.split()[::-1])\n\nprint(reverse_words('one two three'))",
    "three two one",
    "assert reverse_words('a b') == 'b a'",
)


def _candidate(task: dict[str, Any]) -> str:
    answer = {
        "description": task["description"],
        "solution_code": task["code"],
        "answer": task["answer"],
        "python_tests": task["tests"],
        "expected_answer": task.get("expected", task["answer"]),
        "max_steps": 4,
    }
    return json.dumps(answer)


def _rule(match: str, system: str, content: str) -> ScriptRule:
    return ScriptRule(match=match, system=system, turns=[ScriptedTurn(content=content)])


def _essence(task: dict[str, Any], domain: str) -> str:
    pattern = {"key_steps": ["write the function", "print its value"], "execution_pattern": "code then answer"}
    return json.dumps(
        {
            "domain": domain,
            "query": f"Write a small {domain} function and report one value.",
            "complexity": 2,
            "success_pattern": {**pattern, "success_indicators": ["python_tests", "expected_answer"]},
        }
    )


def synthesis_script() -> MockScript:
    """The model's answers: essences of every task, and per (parent, operator) one candidate."""
    rules = [
        _rule(task["description"], EXTRACT_INSTRUCTIONS, _essence(task, domain))
        for task, domain in ((SEED_1, "arithmetic"), (SEED_2, "strings"), (GOOD_1, "arithmetic"), (GOOD_2, "strings"))
    ]
    answers = [
        (SEED_1, "parameter", GOOD_1),
        (SEED_1, "complexity", GOLD_FAILS),
        (SEED_1, "breadth", NULL_PASSES),
        # Composition prompts hold both seeds: this rule, listed first, answers both orders.
        (SEED_1, "composition", EXACT_COPY),
        (SEED_2, "parameter", PARAPHRASE),
        (SEED_2, "complexity", GOOD_2),
        (SEED_2, "breadth", NO_CHECK),
    ]
    rules += [
        _rule(parent["description"], OPERATOR_INSTRUCTIONS[operator], _candidate(candidate))
        for parent, operator, candidate in answers
    ]
    # Every operator on a generation-1 task gives one answer: the repeats are exact copies.
    rules += [_rule(GOOD_1["description"], MUTATION_INSTRUCTIONS, _candidate(NEXT_1))]
    rules += [_rule(GOOD_2["description"], MUTATION_INSTRUCTIONS, _candidate(NEXT_2))]
    return MockScript(rules=rules)


@pytest.fixture
def model() -> Iterator[MockLLMServer]:
    """The scripted model; :func:`with_model` makes it the endpoint the essence extractor and operators use."""
    with MockLLMServer(synthesis_script()) as server:
        yield server


def with_model(settings: Settings, server: MockLLMServer, **updates: object) -> Settings:
    """``settings`` with the scripted model as the llm endpoint (no cache) and essence extractor, and ``updates``."""
    model = {"llm_base_url": server.base_url, "llm_model": "scripted", "enable_cache": False}
    return settings.model_copy(update={**model, "essence_extractor": "llm", **updates})


def seed_file(path: Path, *tasks: dict[str, Any], prefix: str = "seed") -> Path:
    lines = [
        code_task(f"{prefix}_{i}", task["code"], task["answer"], tests=task["tests"], description=task["description"])
        for i, task in enumerate(tasks, start=1)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def query(settings: Settings, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with Lake(settings.data_dir).connect() as connection:
        return connection.execute(sql, list(params)).fetchall()


def synthesis_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node("synthesized_tasks")
    return {key: value.value for key, value in materialization.metadata.items()}


def test_two_generations_close_the_loop_with_lineage_and_every_candidate_accounted_for(
    settings: Settings, instance: dg.DagsterInstance, model: MockLLMServer, tmp_path: Path
) -> None:
    settings = with_model(settings, model, policy="mock", synth_candidates=8, synth_max_generation=2)
    (seed_run,) = run_task_files([seed_file(tmp_path / "seed.jsonl", SEED_1, SEED_2)], settings)
    assert seed_run.success, seed_run.failure
    seed_batch = seed_run.registered.key

    # Essences by the (scripted) model, one per verified seed trajectory.
    essences = query(settings, "SELECT task_id, extractor, domain FROM essences WHERE batch = ? ORDER BY 1", seed_batch)
    assert essences == [("seed_1", "scripted", "arithmetic"), ("seed_2", "scripted", "strings")]
    # Every candidate ends accepted or rejected with its stage and reason.
    accepted = query(
        settings, "SELECT description, generation, mutation FROM synthesized_tasks WHERE batch = ?", seed_batch
    )
    assert sorted(accepted) == sorted(
        [(GOOD_1["description"], 1, "parameter"), (GOOD_2["description"], 1, "complexity")]
    )
    rejects = query(
        settings, "SELECT description, stage, reason FROM synthesis_rejects WHERE batch = ? ORDER BY 2, 1", seed_batch
    )
    by_text = {description: (stage, reason) for description, stage, reason in rejects}
    assert by_text[GOLD_FAILS["description"]][0] == "self_check"
    assert "gold solution fails its own check" in by_text[GOLD_FAILS["description"]][1]
    assert "AssertionError" in by_text[GOLD_FAILS["description"]][1]
    assert by_text[NULL_PASSES["description"]] == (
        "self_check",
        "its check passes a null solution (return None, an empty answer): a check that cannot fail",
    )
    assert by_text[PARAPHRASE["description"]][0] == "dedupe"
    assert by_text[PARAPHRASE["description"]][1].startswith("near duplicate of task seed_1")
    copies = [(stage, reason) for description, stage, reason in rejects if description == EXACT_COPY["description"]]
    assert copies == [("dedupe", "exact copy of task seed_2")] * 2  # both orders of the composition
    assert by_text[NO_CHECK["description"]] == (
        "validation",
        "the task has no check (neither python_tests nor expected_answer)",
    )
    assert len(accepted) + len(rejects) == 8

    # The accepted tasks are a task file in the inbox; the sensor runs it like any other.
    synth_file = settings.tasks_dir / f"synth-{seed_batch}-g1.jsonl"
    assert synth_file.is_file()
    daemon = Daemon(settings, instance)
    job = daemon.defs.resolve_job_def(daemon.sensor.job_name)
    (request,) = daemon.tick()
    generation_1 = request.partition_key
    assert generation_1.startswith(f"synth-{seed_batch}-g1-")
    result = job.execute_in_process(partition_key=generation_1, instance=instance)
    assert result.success
    assert query(
        settings, "SELECT count(*), count(*) FILTER (WHERE success AND verified) FROM trajectories WHERE batch = ?",
        generation_1,
    ) == [(2, 2)]  # fmt: skip
    # Generation-1 trajectories become essences, and those the next generation's tasks.
    assert query(settings, "SELECT generation, count(*) FROM essences WHERE batch = ? GROUP BY 1", generation_1) == [
        (1, 2)
    ]
    assert synthesis_metadata(result)["accepted"] == 2
    assert "no_candidates_because" not in synthesis_metadata(result)  # it made candidates
    evaluations = result.get_asset_check_evaluations()
    checks = {e.check_name: e for e in evaluations if e.asset_key == dg.AssetKey("synthesized_tasks")}
    assert checks["synthesized_success_per_generation"].passed
    assert "| 1 | 2 | 2 | 100.0% |" in checks["synthesized_success_per_generation"].metadata["rates"].value
    assert checks["accepted_near_duplicate_rate"].passed
    assert checks["accepted_near_duplicate_rate"].metadata["accepted"].value == 2
    assert query(settings, "SELECT * FROM synthesis_stats") == [
        (1, "complexity", "code", 1, 1, 1, 1.0),
        (1, "parameter", "code", 1, 1, 1, 1.0),
    ]

    (request,) = daemon.tick()
    generation_2 = request.partition_key
    result = job.execute_in_process(partition_key=generation_2, instance=instance)
    assert result.success
    # Lineage resolves in DuckDB: each generation-2 task's parents are generation-1 tasks,
    # whose parents are the seeds.
    lineage = query(
        settings,
        """
        SELECT t.description, p.generation, p.description, gp.task_id
        FROM tasks t
        JOIN tasks p ON p.task_id = json_extract_string(t.lineage, '$.parent_task_ids[0]')
        JOIN tasks gp ON gp.task_id = json_extract_string(p.lineage, '$.parent_task_ids[0]')
        WHERE t.generation = 2 ORDER BY 1
        """,
    )
    assert lineage == sorted(
        [
            (NEXT_1["description"], 1, GOOD_1["description"], "seed_1"),
            (NEXT_2["description"], 1, GOOD_2["description"], "seed_2"),
        ]
    )
    # The loop guard: generation 2 is ADP_SYNTH_MAX_GENERATION, so no generation 3.
    metadata = synthesis_metadata(result)
    assert metadata["candidates"] == 0
    assert metadata["stopped"] == ["every essence is at the generation limit (ADP_SYNTH_MAX_GENERATION=2)"]
    assert metadata["no_candidates_because"] == metadata["stopped"][0]
    assert metadata["skipped"] == {"generation limit (2) reached": 2}
    assert not list(settings.tasks_dir.glob("*-g3.jsonl"))
    assert daemon.tick() == []


def test_the_daily_task_budget_stops_acceptance_then_synthesis(
    settings: Settings, model: MockLLMServer, tmp_path: Path
) -> None:
    settings = with_model(settings, model, policy="mock", synth_candidates=8, synth_daily_tasks=1)
    (first,) = run_task_files([seed_file(tmp_path / "first.jsonl", SEED_1, SEED_2)], settings)
    assert first.success, first.failure
    assert query(settings, "SELECT count(*) FROM synthesized_tasks") == [(1,)]
    guard = query(settings, "SELECT description, reason FROM synthesis_rejects WHERE stage = 'guard'")
    assert len(guard) == 1
    assert guard[0][0] in {GOOD_1["description"], GOOD_2["description"]}
    assert guard[0][1] == "the daily task budget (ADP_SYNTH_DAILY_TASKS=1) is used up"

    requests_before = model.stats.requests
    (second,) = run_task_files([seed_file(tmp_path / "second.jsonl", SEED_2, SEED_1, prefix="again")], settings)
    assert second.success, second.failure
    batch = second.registered.key
    assert query(settings, "SELECT count(*) FROM essences WHERE batch = ?", batch) == [(2,)]
    assert query(settings, "SELECT count(*) FROM synthesis_rejects WHERE batch = ?", batch) == [(0,)]
    assert query(settings, "SELECT count(*) FROM synthesized_tasks") == [(1,)]
    # Only the two essence extractions asked the model: no mutation was attempted.
    assert model.stats.requests - requests_before == 2


def test_the_daily_token_budget_stops_the_model_operators(
    settings: Settings, instance: dg.DagsterInstance, model: MockLLMServer, tmp_path: Path
) -> None:
    # One call at a time, and a budget the first candidate's answer uses up.
    settings = with_model(
        settings, model, policy="mock", synth_candidates=8, llm_max_concurrency=1, synth_daily_tokens=10
    )
    result = materialize_file(seed_file(tmp_path / "seed.jsonl", SEED_1, SEED_2), settings, instance)
    assert result.success
    batch = result.dagster_run.tags["dagster/partition"]
    made = query(
        settings,
        "SELECT tokens FROM synthesized_tasks UNION ALL "
        "SELECT tokens FROM synthesis_rejects WHERE stage <> 'guard' OR tokens > 0",
    )
    assert len(made) == 1 and made[0][0] > 10  # the one candidate made, and what it spent
    # Every candidate the budget stopped is a guard row with its reason: none is lost.
    metadata = synthesis_metadata(result)
    accepted = query(settings, "SELECT count(*) FROM synthesized_tasks WHERE batch = ?", batch)[0][0]
    stages = dict(query(settings, "SELECT stage, count(*) FROM synthesis_rejects WHERE batch = ? GROUP BY 1", batch))
    assert metadata["candidates"] == 8 and accepted + sum(stages.values()) == metadata["candidates"]
    assert stages["guard"] == metadata["rejected_guard"] == 7
    budget = "the daily token budget (ADP_SYNTH_DAILY_TOKENS=10) is used up"
    assert query(
        settings, "SELECT DISTINCT reason, tokens, candidate_id FROM synthesis_rejects WHERE stage = 'guard'"
    ) == [(f"{budget}: the candidate was not made", 0, None)]
    assert metadata["stopped"] == [f"{budget}: 7 candidates not made"]
    # The next batch of the day makes no candidate with the model at all.
    (again,) = run_task_files([seed_file(tmp_path / "again.jsonl", SEED_1, SEED_2, prefix="again")], settings)
    assert again.success, again.failure
    assert query(settings, "SELECT count(*) FROM synthesis_rejects WHERE batch = ?", again.registered.key) == [(0,)]
    assert query(settings, "SELECT count(*) FROM synthesized_tasks WHERE batch = ?", again.registered.key) == [(0,)]

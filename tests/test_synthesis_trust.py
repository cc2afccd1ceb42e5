"""Synthesis that neither resets nor loses: the daily budgets across re-materialisations of a
partition, accepted tasks kept in their files and the lake (or proposable again), candidates
held to ingest's limits, dedupe that invisible characters, case and spacing do not fool, and a
person's ``lineage`` kept as a claim but never counted as a synthesized generation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adp_pipeline.materialize import run_task_files
from adp_pipeline.storage import Lake
from adp_pipeline.storage.synthesis import index_path, known_tasks
from adp_pipeline.synthesize import Candidate, SynthesisSummary, _check_lines
from runtimes.core import DEFAULT_MAX_LINE_BYTES, RAW_PREVIEW_CHARS, TaskSpec, parse_task_file
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript, ScriptedTurn, ScriptRule
from synthesis.dedupe import DedupeIndex, Duplicate, normalise
from synthesis.mutate import OPERATOR_INSTRUCTIONS
from synthesis.sampler import Job
from tests.helpers import code_task, synthesis_only

SEED = (
    "Write a Python function sum_to(n) that returns the sum of the integers from 1 to n inclusive, "
    "and report sum_to(100)."
)
# The model's candidates: small code tasks whose gold passes their check and whose null fails it.
TRIPLE = (
    "Write a Python function triple(n) that returns three times n; report triple(14).",
    "def triple(n):\n    return 3 * n\n\nprint(triple(14))",
    "42",
    "assert triple(2) == 6",
)
IS_EVEN = (
    "Write a Python function is_even(n) returning True exactly when n is even; report is_even(10).",
    "def is_even(n):\n    return n % 2 == 0\n\nprint(is_even(10))",
    "True",
    "assert is_even(4) and not is_even(3)",
)
LAST_DIGIT = (
    "Write a Python function last_digit(n) that gives the last decimal digit of a non-negative integer; "
    "report last_digit(1234).",
    "def last_digit(n):\n    return n % 10\n\nprint(last_digit(1234))",
    "4",
    "assert last_digit(90) == 0",
)
COUNT_A = (
    "Count the letters a in a string with a function count_a(text); report count_a('banana').",
    "def count_a(text):\n    return text.count('a')\n\nprint(count_a('banana'))",
    "3",
    "assert count_a('aa') == 2",
)
Answer = tuple[str, str, str, str]  # description, gold code, answer, python_tests


def _answer(candidate: Answer) -> str:
    description, code, answer, tests = candidate
    return json.dumps(
        {
            "description": description,
            "solution_code": code,
            "answer": answer,
            "python_tests": tests,
            "expected_answer": answer,
            "max_steps": 4,
        }
    )


def script(**by_operator: Answer) -> MockScript:
    """The model's answer to each operator's prompt about the seed."""
    return MockScript(
        rules=[
            ScriptRule(match=SEED, system=OPERATOR_INSTRUCTIONS[operator], turns=[ScriptedTurn(content=_answer(c))])
            for operator, c in by_operator.items()
        ]
    )


@pytest.fixture
def model() -> Iterator[MockLLMServer]:
    """The scripted model; :func:`with_model` makes it the operators' endpoint (essences stay
    structural: no model needed)."""
    with MockLLMServer(MockScript()) as server:
        yield server


def with_model(settings: Settings, server: MockLLMServer, **updates: object) -> Settings:
    """``settings`` with the scripted model as the llm endpoint (no cache), and ``updates``."""
    model = {"llm_base_url": server.base_url, "llm_model": "scripted", "enable_cache": False}
    return settings.model_copy(update={**model, **updates})


def seed_batch(settings: Settings, tmp_path: Path, **fields: object) -> str:
    """Run a file of the one seed task through the whole job; its partition key."""
    line = code_task(
        "seed_1",
        "def sum_to(n):\n    return n * (n + 1) // 2\n\nprint(sum_to(100))",
        "5050",
        tests="assert sum_to(10) == 55",
        description=SEED,
        **fields,
    )
    path = tmp_path / "seeds" / "seed.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(line + "\n")
    (run,) = run_task_files([path], settings)
    assert run.success, run.failure
    return run.registered.key


def query(settings: Settings, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with Lake(settings.data_dir).connect() as connection:
        return connection.execute(sql, list(params)).fetchall()


def accepted(settings: Settings, batch: str) -> list[str]:
    return sorted(d for (d,) in query(settings, "SELECT description FROM synthesized_tasks WHERE batch = ?", batch))


def assert_nothing_lost(settings: Settings) -> None:
    """Every accepted row's line is in the file it names, and the dedupe index holds exactly the
    lake's known tasks: a task the index would refuse is one the lake still has."""
    for task_id, line, task_file in query(settings, "SELECT task_id, task, task_file FROM synthesized_tasks"):
        assert line in Path(task_file).read_text().splitlines(), f"{task_id} is not in {task_file}"
    index = DedupeIndex.load(index_path(settings.data_dir))
    assert sorted(index.keys) == sorted(known_tasks(Lake(settings.data_dir)))


def test_rematerialising_a_partition_gets_only_what_is_left_of_the_days_task_budget(
    settings: Settings, model: MockLLMServer, tmp_path: Path
) -> None:
    settings = with_model(settings, model, synth_candidates=2, synth_daily_tasks=3)
    model.script = script(parameter=TRIPLE, complexity=IS_EVEN)
    batch = seed_batch(settings, tmp_path)
    assert accepted(settings, batch) == sorted([TRIPLE[0], IS_EVEN[0]])

    # The same partition again, with two new tasks: one task of the day's three is left.
    model.script = script(parameter=LAST_DIGIT, complexity=COUNT_A)
    metadata, _ = synthesis_only(settings, batch)
    assert (metadata["accepted"], metadata["rejected_guard"]) == (1, 1)
    assert metadata["stopped"] == ["the daily task budget (ADP_SYNTH_DAILY_TASKS=3) is used up"]
    assert len(accepted(settings, batch)) == 3
    guard = query(settings, "SELECT description FROM synthesis_rejects WHERE batch = ? AND stage = 'guard'", batch)
    assert len(guard) == 1 and guard[0][0] in {LAST_DIGIT[0], COUNT_A[0]}

    # And again: nothing is left, so the model is not even asked.
    requests = model.stats.requests
    metadata, _ = synthesis_only(settings, batch)
    assert metadata["candidates"] == 0
    assert metadata["stopped"] == ["the daily task budget (ADP_SYNTH_DAILY_TASKS=3) is used up"]
    assert model.stats.requests == requests
    assert len(accepted(settings, batch)) == 3
    assert_nothing_lost(settings)


def test_rematerialising_a_partition_gets_only_what_is_left_of_the_days_token_budget(
    settings: Settings, model: MockLLMServer, tmp_path: Path
) -> None:
    # One call at a time, and a budget the first candidate's answer uses up.
    settings = with_model(settings, model, synth_candidates=2, llm_max_concurrency=1, synth_daily_tokens=10)
    model.script = script(parameter=TRIPLE, complexity=IS_EVEN)
    batch = seed_batch(settings, tmp_path)
    spent = query(settings, "SELECT sum(tokens) FROM synthesized_tasks WHERE batch = ?", batch)[0][0]
    assert spent > 10 and accepted(settings, batch) == [TRIPLE[0]]

    requests = model.stats.requests
    metadata, _ = synthesis_only(settings, batch)
    assert metadata["candidates"] == 0
    assert metadata["stopped"] == ["the daily token budget (ADP_SYNTH_DAILY_TOKENS=10) is used up"]
    assert model.stats.requests == requests  # the batch's own earlier spending counts
    assert accepted(settings, batch) == [TRIPLE[0]]


def test_a_rematerialisation_keeps_every_accepted_task_in_its_file_and_the_lake(
    settings: Settings, model: MockLLMServer, tmp_path: Path
) -> None:
    settings = with_model(settings, model, synth_candidates=2)
    model.script = script(parameter=TRIPLE, complexity=IS_EVEN)
    batch = seed_batch(settings, tmp_path)
    first_file = settings.tasks_dir / f"synth-{batch}-g1.jsonl"
    first_content = first_file.read_bytes()
    assert len(first_content.splitlines()) == 2

    # Again: one new task, and a copy of one accepted the first time.
    model.script = script(parameter=LAST_DIGIT, complexity=TRIPLE)
    metadata, _ = synthesis_only(settings, batch)
    second_file = settings.tasks_dir / f"synth-{batch}-g1-r2.jsonl"
    assert metadata["task_files"] == {"1": str(second_file)}
    assert first_file.read_bytes() == first_content  # never replaced
    assert [json.loads(line)["description"] for line in second_file.read_text().splitlines()] == [LAST_DIGIT[0]]
    assert accepted(settings, batch) == sorted([TRIPLE[0], IS_EVEN[0], LAST_DIGIT[0]])
    ((triple_id,),) = query(settings, "SELECT task_id FROM synthesized_tasks WHERE description = ?", TRIPLE[0])
    assert query(settings, "SELECT stage, reason FROM synthesis_rejects WHERE batch = ?", batch) == [
        ("dedupe", f"exact copy of task {triple_id}")  # refused because it is still there
    ]
    assert_nothing_lost(settings)

    # If the lake loses the batch's rows some other way (as a re-materialisation did), the
    # index forgets exactly them: their text may be proposed, and accepted, again.
    Lake(settings.data_dir).write_partition("synthesized_tasks", batch, [])
    model.script = script(parameter=IS_EVEN, complexity=COUNT_A)
    metadata, _ = synthesis_only(settings, batch)
    assert (metadata["accepted"], metadata["rejected_dedupe"]) == (2, 0)
    assert accepted(settings, batch) == sorted([IS_EVEN[0], COUNT_A[0]])
    assert_nothing_lost(settings)


def test_a_candidate_over_ingests_limits_is_rejected_at_validation_and_an_invisible_copy_at_dedupe(
    settings: Settings, model: MockLLMServer, tmp_path: Path
) -> None:
    huge = (TRIPLE[0] + " " + "Mind the details. " * 47_200, *TRIPLE[1:])  # 849 KB
    # The seed's text with a zero-width space in every word, other case and other spacing.
    disguised = "\u00a0 ".join(word[0] + "\u200b" + word[1:].upper() for word in SEED.split(" "))
    settings = with_model(settings, model, synth_candidates=3)
    model.script = script(parameter=huge, complexity=(disguised, *IS_EVEN[1:]), breadth=LAST_DIGIT)
    batch = seed_batch(settings, tmp_path)

    assert accepted(settings, batch) == [LAST_DIGIT[0]]
    rejects = query(
        settings,
        "SELECT mutation, stage, reason, length(description), task FROM synthesis_rejects WHERE batch = ? ORDER BY 1",
        batch,
    )
    (complexity, parameter) = rejects
    assert complexity[:4] == ("complexity", "dedupe", "exact copy of task seed_1", len(disguised))
    mutation, stage, reason, kept, line = parameter
    assert (mutation, stage, kept, line) == ("parameter", "validation", RAW_PREVIEW_CHARS, None)
    size = int(reason.split()[2])
    assert size > 849_000
    # Ingest's words, limit and setting: the line would have been refused there.
    assert reason == f"line is {size} bytes, over the limit of {DEFAULT_MAX_LINE_BYTES} (ADP_MAX_TASK_LINE_BYTES)"
    too_long = tmp_path / "too_long.jsonl"
    too_long.write_text(code_task("t", "print(1)", "1", description="x" * size) + "\n")
    (refused,) = parse_task_file(too_long).rejected
    assert refused.reason.endswith(f"over the limit of {DEFAULT_MAX_LINE_BYTES} (ADP_MAX_TASK_LINE_BYTES)")
    for (task_file,) in query(settings, "SELECT DISTINCT task_file FROM synthesized_tasks"):
        assert len(Path(task_file).read_bytes()) < DEFAULT_MAX_LINE_BYTES


def test_candidate_lines_that_ingest_would_refuse_are_validation_rejects_not_crashes(settings: Settings) -> None:
    line = json.loads(code_task("t", "print(1)", "1"))
    fields: list[dict[str, Any]] = [
        {"description": "half a pair \ud83d here"},  # a lone surrogate: no UTF-8 for it
        {"constraints": {**line["constraints"], "sandbox": {"memory_mb": 8192}}},  # over the memory ceiling
        {"description": "a whole pair \U0001f600 here"},
    ]
    tasks = [
        TaskSpec.model_validate({**line, **extra, "task_id": f"t{i}"}, strict=False) for i, extra in enumerate(fields)
    ]
    summary = SynthesisSummary("b", 0, [Candidate(Job("parameter", (), ()), task) for task in tasks])
    _check_lines(summary, settings.model_copy(update={"sandbox_max_memory_mb": 1024}))
    lone, greedy, fine = summary.candidates
    assert (lone.stage, lone.line) == ("validation", None)
    assert lone.reason.startswith("the task cannot be written as UTF-8 text")
    assert (greedy.stage, greedy.line) == ("validation", None)
    assert greedy.reason.endswith("over this deployment's ceiling of 1024 MB (ADP_SANDBOX_MAX_MEMORY_MB)")
    assert fine.stage is None and fine.line is not None and "\U0001f600" in json.loads(fine.line)["description"]


KNOWN = (
    "Write a Python function that returns the sum of the squares of the even numbers in the first list "
    "of integers, and name it after the street Strasse."
)
VARIANTS = {
    "zero-width space": KNOWN.replace("sum", "s\u200bum").replace("Python", "Py\u200bthon"),
    "joiners, word joiner, BOM": KNOWN.replace("function", "fun\u200cc\u200dti\u2060on\ufeff"),
    "soft hyphen, Mongolian vowel separator": KNOWN.replace("squares", "squ\u00adares\u180e"),
    "variation selector, Hangul filler, tag": KNOWN.replace("even", "ev\ufe0fen\u3164").replace(
        "list", "li\U000e0041st"
    ),
    "bidi controls": KNOWN.replace("numbers", "\u202enum\u202cbers\u2066"),
    "control character": KNOWN.replace("integers", "inte\x00gers"),
    "upper case": KNOWN.upper(),
    "case folding (sharp s)": KNOWN.replace("Strasse", "STRAßE"),
    "full-width letters (NFKC)": KNOWN.replace("Python", "\uff30\uff59\uff54\uff48\uff4f\uff4e"),
    "ligature (NFKC)": KNOWN.replace("first", "\ufb01rst"),
    "tabs, newlines, no-break and wide spaces": KNOWN.replace(" ", "\t \n\u00a0\u3000\u2003 "),
    "line and paragraph separators": KNOWN.replace(" the ", "\u2028the\u2029"),
}


def test_dedupe_normalises_invisible_characters_case_and_spacing() -> None:
    index = DedupeIndex()
    index.add(["known"], [KNOWN])
    # Each variant is the same text to a reader: an exact copy.
    verdicts = index.check(list(VARIANTS.values()))
    assert {name: verdict for name, verdict in zip(VARIANTS, verdicts, strict=True)} == {
        name: Duplicate("exact", "known", 1.0) for name in VARIANTS
    }
    assert normalise("STRASSE") == normalise("Straße") == "strasse"
    assert normalise("\ufb01nd \uff21\uff22\uff23") == "find abc"
    # A genuinely different text is still new, and words stay apart.
    assert index.check(["Write a Python function that reverses the words of a sentence."]) == [None]
    assert normalise("a\u00a0b\u200bc") == "a bc"


def test_an_index_saved_with_another_normalisation_is_rebuilt_and_sync_forgets_what_is_gone(tmp_path: Path) -> None:
    # An index of the earlier format (hashes of lower-cased text, no version): not loaded.
    old = tmp_path / "old.npz"
    np.savez(old, keys=np.array(["a"]), exact=np.array(["x"]), exact_ids=np.array([0]),
             signatures=np.zeros((1, 120), dtype=np.uint64), settings=np.array([0.7, 1.0]))  # fmt: skip
    assert DedupeIndex.load(old).keys == []

    index = DedupeIndex()
    index.add(["a", "b", "c"], ["first task text here", "second task text here", "third task text here"])
    path = tmp_path / "index.npz"
    index.save(path)
    index = DedupeIndex.load(path)
    # "b" left the lake, "c" changed its text, "d" arrived.
    forgotten, added = index.sync({"a": "first task text here", "c": "another third text", "d": "fourth one"})
    assert (forgotten, added) == (2, 2)
    assert sorted(index.keys) == ["a", "c", "d"]
    assert index.check(["second task text here", "third task text here"]) == [None, None]
    assert index.check(["FIRST task\u200b text here", "another third text"]) == [
        Duplicate("exact", "a", 1.0),
        Duplicate("exact", "c", 1.0),
    ]


def test_a_persons_lineage_is_kept_as_a_claim_but_never_counted_as_a_generation(
    settings: Settings, model: MockLLMServer, tmp_path: Path
) -> None:
    claim = {
        "parent_task_ids": ["exists_nowhere"],
        "mutation": "composition",
        "generation": 2,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
    }
    settings = with_model(settings, model, synth_candidates=1, synth_max_generation=1)
    model.script = script(parameter=TRIPLE)
    batch = seed_batch(settings, tmp_path, lineage=claim)

    # Kept: the task and its trajectory carry the claim as written.
    ((lineage, generation),) = query(settings, "SELECT lineage, generation FROM tasks WHERE batch = ?", batch)
    assert json.loads(lineage)["parent_task_ids"] == ["exists_nowhere"] and generation == 2
    assert query(settings, "SELECT count(*) FROM trajectories WHERE batch = ? AND verified", batch) == [(1,)]
    # Not counted: no synthesized generation 2, and the seed's child is generation 1 (the seed
    # is generation 0 to synthesis, so the generation limit of 1 did not stop it).
    assert query(settings, "SELECT * FROM synthesis_stats") == []
    ((child, child_generation, task_file),) = query(
        settings, "SELECT task, generation, task_file FROM synthesized_tasks WHERE batch = ?", batch
    )
    child_lineage = TaskSpec.model_validate_json(child, strict=False).lineage
    assert child_generation == 1 and child_lineage is not None and child_lineage.generation == 1
    assert child_lineage.parent_task_ids == ["seed_1"]

    # Once the child runs, it is the one synthesized task counted.
    (run,) = run_task_files([Path(task_file)], settings)
    assert run.success, run.failure
    assert query(settings, "SELECT * FROM synthesis_stats") == [(1, "parameter", "code", 1, 1, 1, 1.0)]

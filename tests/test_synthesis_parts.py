"""The loop's parts on their own: the null solution, the sampler's feedback, MiniWoB reseed,
web mutation on adp's site."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from adp_pipeline.materialize import run_task_files
from adp_pipeline.storage import Lake
from adp_pipeline.synthesize import skipped_in_words
from runtimes.core import TaskSpec, TaskType
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript, ScriptedTurn, ScriptRule
from synthesis.essence import Essence, SuccessPattern
from synthesis.mutate import OPERATOR_INSTRUCTIONS
from synthesis.sampler import Feedback, SkipReason, plan
from synthesis.selfcheck import null_code, null_variant
from tests.helpers import EXAMPLES, REPO, code_task


def with_model(settings: Settings, server: MockLLMServer, **updates: object) -> Settings:
    """``settings`` with the scripted model as the llm endpoint (no cache), and ``updates``."""
    model = {"llm_base_url": server.base_url, "llm_model": "scripted", "enable_cache": False}
    return settings.model_copy(update={**model, **updates})


def test_the_null_solution_keeps_the_gold_codes_signatures_and_does_nothing() -> None:
    gold = (
        "import math\nfrom itertools import count\nLIMIT = 10\n\n"
        "@staticmethod\ndef area(r, *, scale=1):\n    return math.pi * r * r * scale\n\n"
        "class Shape:\n    sides = 3\n    def perimeter(self, n):\n        return n * self.sides\n\n"
        "print(area(2))\n"
    )
    null = null_code(gold)
    namespace: dict[str, object] = {}
    exec(null, namespace)  # the null solution defines what the tests call, and prints nothing
    assert namespace["area"](2, scale=3) is None  # type: ignore[operator]
    assert namespace["Shape"]().perimeter(4) is None  # type: ignore[attr-defined, operator]
    assert "LIMIT" not in namespace and "print" not in null
    assert null_code("this is not python (") == "None\n"

    task = TaskSpec.model_validate_json(code_task("t", gold, "12.57", tests="assert area(2) > 12"), strict=False)
    variant = null_variant(task)
    assert variant.task_id == "t--null"
    calls = variant.constraints.reference_tool_calls or []
    assert [call.name for call in calls] == ["python_executor", "complete_task"]
    assert calls[0].arguments["code"] == null and calls[1].arguments == {"answer": ""}
    assert variant.constraints.verify == task.constraints.verify


def _essence(task_id: str, generation: int = 0) -> Essence:
    return Essence(
        essence_id=f"e-{task_id}",
        task_id=task_id,
        task_type=TaskType.CODE,
        generation=generation,
        query=task_id,
        complexity=1,
        tools=["python_executor"],
        n_steps=2,
        success_pattern=SuccessPattern(key_steps=[], execution_pattern="", success_indicators=[]),
        verifier_kind="expected_answer",
        extractor="structural",
    )


def test_the_sampler_prefers_essences_never_mutated_and_avoids_those_whose_children_fail() -> None:
    ids = ("fresh", "good_children", "failing_children")
    parents = {
        task_id: TaskSpec.model_validate_json(code_task(task_id, "print(1)", "1"), strict=False) for task_id in ids
    }
    essences = [_essence(task_id) for task_id in ids]
    feedback = {"e-good_children": Feedback(4, 4, 4), "e-failing_children": Feedback(4, 4, 0)}
    first = Counter(
        plan(essences, parents, feedback, count=1, max_generation=3, with_model=True, seed=str(seed))
        .jobs[0]
        .parents[0]
        .task_id
        for seed in range(600)
    )
    assert first["fresh"] > first["good_children"] > first["failing_children"] > 0

    # The generation limit and a missing model keep essences out, and say why.
    work = plan(
        [_essence("fresh", generation=3), _essence("good_children")],
        parents,
        {},
        count=4,
        max_generation=3,
        with_model=False,
        seed="s",
    )
    assert work.jobs == []
    assert work.skipped == {SkipReason.GENERATION_LIMIT: 1, SkipReason.NO_MODEL: 1}
    # The metadata says them in words, the limit named.
    assert skipped_in_words(work.skipped, 3) == {
        "generation limit (3) reached": 1,
        "no model configured for the mutation operators": 1,
    }
    # A model that is configured but out of tokens is not a missing model: the caller says which.
    work = plan(
        [_essence("good_children")],
        parents,
        {},
        count=4,
        max_generation=3,
        with_model=False,
        without_model_because=SkipReason.TOKEN_BUDGET,
        seed="s",
    )
    assert work.skipped == {SkipReason.TOKEN_BUDGET: 1}


def test_miniwob_reseed_makes_new_episodes_verified_in_chromium_without_a_model(
    settings: Settings, tmp_path: Path
) -> None:
    lines = (REPO / "examples" / "miniwob.jsonl").read_text().splitlines()
    chosen = [next(line for line in lines if f'"task":"{kind}"' in line) for kind in ("click-button", "enter-text")]
    task_file = tmp_path / "miniwob.jsonl"
    task_file.write_text("\n".join(chosen) + "\n")
    settings = settings.model_copy(update={"synth_candidates": 2})
    (run,) = run_task_files([task_file], settings)
    assert run.success, run.failure
    with Lake(settings.data_dir).connect() as connection:
        made = connection.execute("SELECT task, mutation, generation FROM synthesized_tasks").fetchall()
        rejects = connection.execute("SELECT stage, reason FROM synthesis_rejects").fetchall()
    assert len(made) + len(rejects) == 2
    assert made, rejects
    parents = {json.loads(line)["task_id"]: json.loads(line) for line in chosen}
    for line, mutation, generation in made:
        task = TaskSpec.model_validate_json(line, strict=False)
        assert (mutation, generation, task.generation) == ("miniwob_reseed", 1, 1)
        assert task.lineage is not None and len(task.lineage.parent_task_ids) == 1
        parent = parents[task.lineage.parent_task_ids[0]]
        assert task.constraints.miniwob is not None
        assert task.constraints.miniwob.task == parent["constraints"]["miniwob"]["task"]
        assert task.constraints.miniwob.seed != parent["constraints"]["miniwob"]["seed"]
        # The description is the episode's own instruction, read from the page.
        assert task.description.startswith(f"MiniWoB++ {task.constraints.miniwob.task}: ")
        assert "follow the instruction shown on the page" not in task.description
    written = settings.tasks_dir / f"synth-{run.registered.key}-g1.jsonl"
    assert len(written.read_text().splitlines()) == len(made)


def test_web_mutation_on_adps_site_is_self_checked_in_chromium(settings: Settings, tmp_path: Path) -> None:
    """A model's web task on adp's shop is kept only if its actions pass its page check in
    Chromium and doing nothing fails it; a task that starts off adp's site is refused."""
    (parent_line,) = [line for line in EXAMPLES.read_text().splitlines() if '"web_order_pens"' in line]
    parent = json.loads(parent_line)

    def web_answer(description: str, page_contains: str, start_url: str = "http://adp.local/inventory.html") -> str:
        actions = [
            {"action": "select", "selector": "#item", "value": "notebook"},
            {"action": "fill", "selector": "#qty", "text": "2"},
            {"action": "click", "selector": "#place"},
        ]
        return json.dumps(
            {
                "description": description,
                "start_url": start_url,
                "actions": actions,
                "answer": "done",
                "page_contains": page_contains,
            }
        )

    answers = {
        "parameter": web_answer("On the adp shop's inventory page, order 2 notebooks.", "Ordered 2 x notebook"),
        # "Place order" is the button's label: the page shows it before anything is done.
        "complexity": web_answer("Order two notebooks from the adp shop and confirm it.", "Place order"),
        "breadth": web_answer("Order notebooks on another shop.", "Ordered", start_url="https://example.com/"),
    }
    rules = [
        ScriptRule(match=parent["description"], system=OPERATOR_INSTRUCTIONS[op], turns=[ScriptedTurn(content=text)])
        for op, text in answers.items()
    ]
    task_file = tmp_path / "web.jsonl"
    task_file.write_text(parent_line + "\n")
    with MockLLMServer(MockScript(rules=rules)) as server:
        (run,) = run_task_files([task_file], with_model(settings, server, synth_candidates=3))
    assert run.success, run.failure
    with Lake(settings.data_dir).connect() as connection:
        made = connection.execute("SELECT mutation, task FROM synthesized_tasks").fetchall()
        rejects = connection.execute("SELECT mutation, stage, reason FROM synthesis_rejects ORDER BY 1").fetchall()
    assert [mutation for mutation, _ in made] == ["parameter"]
    task = TaskSpec.model_validate_json(made[0][1], strict=False)
    assert task.constraints.start_url == "http://adp.local/inventory.html"
    assert task.constraints.verify is not None and task.constraints.verify.page_contains == "Ordered 2 x notebook"
    assert [call.name for call in task.constraints.reference_tool_calls or []] == ["browser"] * 3 + ["complete_task"]
    assert rejects == [
        ("breadth", "validation", "start_url 'https://example.com/' is not a page of http://adp.local/"),
        (
            "complexity",
            "self_check",
            "its check passes a null solution (return None, an empty answer): a check that cannot fail",
        ),
    ]

"""Dedupe of synthesized tasks: exact copies, paraphrases, genuinely new tasks, persistence."""

from __future__ import annotations

import random
from pathlib import Path

from synthesis.dedupe import DedupeIndex, Duplicate

KNOWN = {
    "sum_even_squares": "Write a Python function sum_even_squares(numbers) that returns the sum of the squares "
    "of the even numbers in a list of integers, and print the result for the list 1, 2, 3, 4.",
    "order_pens": "Open the adp example shop, go to the inventory page and order three pens with the order form.",
}


def index() -> DedupeIndex:
    known = DedupeIndex(threshold=0.7)
    known.add(list(KNOWN), list(KNOWN.values()))
    return known


def test_an_exact_copy_and_a_paraphrase_are_duplicates_and_a_different_task_is_new() -> None:
    candidates = [
        KNOWN["sum_even_squares"].upper().replace(",", " ,"),  # case and punctuation do not make it new
        KNOWN["sum_even_squares"].replace("returns the sum", "computes the sum").replace("a list", "a given list"),
        "Write a Python function that reverses the order of the words in a sentence and print it for 'a b c'.",
        "Open the adp example shop and read the price of the backpack from the price list page.",
    ]
    verdicts = index().check(candidates)
    assert verdicts[0] == Duplicate("exact", "sum_even_squares", 1.0)
    assert verdicts[1] is not None and (verdicts[1].kind, verdicts[1].of) == ("near", "sum_even_squares")
    assert verdicts[1].similarity >= 0.7
    assert verdicts[2:] == [None, None]


def test_candidates_are_checked_against_each_other_and_only_new_ones_are_added(tmp_path: Path) -> None:
    known = index()
    text = "Compute the factorial of twelve with a loop in Python and print it, then answer with the number."
    verdicts = known.add_new(["a", "b", "c"], [text, text + " ", text.replace("twelve", "twelve exactly")])
    assert verdicts[0] is None
    assert verdicts[1] == Duplicate("exact", "#0", 1.0)
    assert verdicts[2] is not None and (verdicts[2].kind, verdicts[2].of) == ("near", "#0")
    assert len(known) == 3  # the two known tasks and "a"
    assert known.check([text])[0] == Duplicate("exact", "a", 1.0)

    path = tmp_path / "synthesis" / "dedupe.npz"
    known.save(path)
    again = DedupeIndex.load(path)
    assert again.keys == known.keys
    assert again.check([text, KNOWN["order_pens"].lower()]) == [
        Duplicate("exact", "a", 1.0),
        Duplicate("exact", "order_pens", 1.0),
    ]
    assert DedupeIndex.load(tmp_path / "missing.npz").keys == []


def test_unrelated_tasks_at_scale_are_all_new() -> None:
    # 5000 random 20-word tasks over a 3000-word vocabulary share almost no word pairs.
    rng = random.Random(7)
    words = [f"word{i}" for i in range(3000)]
    texts = [" ".join(rng.choice(words) for _ in range(20)) for _ in range(5000)]
    known = DedupeIndex()
    known.add([str(i) for i in range(2500)], texts[:2500])
    assert known.check(texts[2500:]) == [None] * 2500
    assert known.check(texts[:50]) == [Duplicate("exact", str(i), 1.0) for i in range(50)]

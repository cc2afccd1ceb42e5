"""Synthesis throughput, each number next to its baseline, in one run.

    .venv/bin/python -m bench.bench_synthesis [--known 100000] [--candidates 100000]

Rows:
  exact-hash dedupe         a set of normalised-text hashes (baseline: what any dedupe costs);
  MinHash LSH dedupe        adp's index: build over the known tasks, then check every
                            candidate against them and against the earlier candidates.
The texts are random 20-word tasks over a 5000-word vocabulary, with 1 % exact copies and 1 %
paraphrases (one word of twenty changed: Jaccard 0.81 over word pairs) of known tasks mixed
in. Mutation operators (candidates/s with the mock LLM) join this bench when they exist.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from rich.console import Console
from rich.table import Table

from synthesis.dedupe import DedupeIndex, text_hash


def corpus(known: int, candidates: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]

    def task() -> str:
        return " ".join(rng.choice(words) for _ in range(20))

    known_texts = [task() for _ in range(known)]
    candidate_texts = [task() for _ in range(candidates)]
    for i in range(0, candidates, 100):  # 1 % exact copies, 1 % paraphrases
        candidate_texts[i] = known_texts[rng.randrange(known)]
        paraphrase = known_texts[rng.randrange(known)].split()
        paraphrase[9] = rng.choice(words)
        candidate_texts[min(i + 1, candidates - 1)] = " ".join(paraphrase)
    return known_texts, candidate_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--known", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=100_000)
    args = parser.parse_args()
    console = Console(stderr=True)
    known, candidates = corpus(args.known, args.candidates)

    console.print("exact-hash dedupe ...")
    started = time.perf_counter()
    hashes = {text_hash(text) for text in known}
    exact_found = sum(text_hash(text) in hashes for text in candidates)
    exact_seconds = time.perf_counter() - started

    console.print("MinHash LSH dedupe ...")
    started = time.perf_counter()
    index = DedupeIndex()
    index.add([str(i) for i in range(len(known))], known)
    built = time.perf_counter() - started
    verdicts = index.check(candidates)
    lsh_seconds = time.perf_counter() - started
    near = sum(1 for verdict in verdicts if verdict is not None and verdict.kind == "near")
    exact = sum(1 for verdict in verdicts if verdict is not None and verdict.kind == "exact")

    table = Table(title=f"adp synthesis bench ({args.candidates} candidates against {args.known} known tasks)")
    for column in ("measure", "seconds", "ratio", "found"):
        table.add_column(column, justify="left" if column in ("measure", "found") else "right")
    table.add_row("exact-hash dedupe (baseline)", f"{exact_seconds:.1f}", "1.0", f"{exact_found} exact")
    table.add_row(
        "MinHash LSH dedupe (build + check)",
        f"{lsh_seconds:.1f}",
        f"{lsh_seconds / exact_seconds:.1f}",
        f"{exact} exact, {near} near (index built in {built:.1f} s)",
    )
    Console(width=120).print(table)
    print(json.dumps({"exact_s": round(exact_seconds, 2), "lsh_s": round(lsh_seconds, 2), "near": near}))


if __name__ == "__main__":
    main()

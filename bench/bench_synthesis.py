"""Synthesis throughput, each number next to its baseline, in one run.

    .venv/bin/python -m bench.bench_synthesis [--part all|operators|dedupe]
        [--essences 64] [--latency 1.0] [--in-flight 64] [--known 100000] [--candidates 100000]

operators: one batch of ``--essences`` seed code tasks is run, then ``synthesize_batch`` makes
  4 candidates per essence with the mock LLM answering after ``--latency`` s, ``--in-flight``
  calls at once: the model step, the self-check (gold and null solution of every candidate in
  the warm sandbox pool) and the dedupe. Baseline: the same number of bare calls to the same
  mock with the same concurrency (what the model alone costs).
dedupe: exact-hash dedupe (baseline: a set of normalised-text hashes) against adp's MinHash LSH
  index: build over ``--known`` tasks, check ``--candidates`` against them and each other. The
  texts are random 20-word tasks over a 5000-word vocabulary, with 1 % exact copies and 1 %
  paraphrases (one word of twenty changed: Jaccard 0.81 over word pairs) of known tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from adp_pipeline.materialize import run_task_files
from adp_pipeline.storage import Lake
from adp_pipeline.synthesize import synthesize_batch
from runtimes.llm import LLMConfig
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript, ScriptedTurn, ScriptRule
from synthesis.dedupe import DedupeIndex, text_hash
from synthesis.mutate import MODEL_OPERATORS, OPERATOR_INSTRUCTIONS


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


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))


def _code_task(rng: random.Random, task_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A seed task line, and a candidate answer (new text, own gold and check) made from it."""
    value, new_value = rng.randrange(10**6), rng.randrange(10**6)
    seed = {
        "task_id": task_id,
        "task_type": "code",
        "description": f"Write value() returning the {_words(rng, 12)} number, then report it.",
        "expected_tools": ["python_executor"],
        "max_steps": 4,
        "constraints": {
            "reference_tool_calls": [
                {"name": "python_executor", "arguments": {"code": f"def value():\n    return {value}\nprint(value())"}},
                {"name": "complete_task", "arguments": {"answer": str(value)}},
            ],
            "verify": {"expected_answer": str(value), "python_tests": f"assert value() == {value}"},
        },
    }
    candidate = {
        "description": f"Write result() giving the {_words(rng, 14)} count, then report it.",
        "solution_code": f"def result():\n    return {new_value}\nprint(result())",
        "answer": str(new_value),
        "python_tests": f"assert result() == {new_value}",
        "expected_answer": str(new_value),
        "max_steps": 4,
    }
    return seed, candidate


async def _bare_calls(base_url: str, calls: int, in_flight: int) -> float:
    config = LLMConfig(base_url=base_url, model="mock", max_concurrency=in_flight)
    endpoint = config.endpoint()
    assert endpoint is not None
    client = config.client(endpoint)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(client.chat([{"role": "user", "content": f"call {i}"}]) for i in range(calls)))
    finally:
        await client.aclose()
    return time.perf_counter() - started


def bench_operators(essences: int, latency: float, in_flight: int, console: Console) -> dict[str, Any]:
    rng = random.Random(0)
    seeds, rules = [], []
    for i in range(essences):
        seed, _ = _code_task(rng, f"seed_{i}")
        seeds.append(seed)
        for operator in MODEL_OPERATORS:
            _, candidate = _code_task(rng, "")
            content = json.dumps(candidate)
            system = OPERATOR_INSTRUCTIONS[operator]
            rules.append(ScriptRule(match=seed["description"], system=system, turns=[ScriptedTurn(content=content)]))
    with tempfile.TemporaryDirectory() as folder, MockLLMServer(MockScript(rules=rules), latency=latency) as mock:
        root = Path(folder)
        settings = Settings(
            data_dir=root / "data",
            tasks_dir=root / "inbox",
            output_dir_override=root / "output",
            policy="oracle",
            enable_cache=False,
            llm_base_url=mock.base_url,
            llm_model="mock",
            llm_max_concurrency=in_flight,
            synth_max_generation=0,  # the seed run only; synthesis is timed on its own below
        )
        task_file = root / "seed.jsonl"
        task_file.write_text("".join(json.dumps(seed) + "\n" for seed in seeds))
        console.print(f"operators: running {essences} seed tasks ...")
        (run,) = run_task_files([task_file], settings)
        assert run.success, run.failure
        console.print(f"operators: {essences * 4} bare calls to the mock (baseline) ...")
        bare = asyncio.run(_bare_calls(mock.base_url, essences * 4, in_flight))
        console.print("operators: synthesize_batch ...")
        synth = settings.model_copy(update={"synth_max_generation": 3, "synth_candidates": essences * 4})
        started = time.perf_counter()
        summary = synthesize_batch(Lake(settings.data_dir), run.registered.key, synth)
        total = time.perf_counter() - started
    return {
        "candidates": len(summary.candidates),
        "accepted": len(summary.accepted),
        "rejected": summary.rejected,
        "seconds": round(total, 2),
        "steps": summary.seconds,
        "bare_calls_s": round(bare, 2),
    }


def bench_dedupe(known_count: int, candidate_count: int, console: Console) -> dict[str, Any]:
    known, candidates = corpus(known_count, candidate_count)
    console.print("dedupe: exact-hash baseline ...")
    started = time.perf_counter()
    hashes = {text_hash(text) for text in known}
    exact_found = sum(text_hash(text) in hashes for text in candidates)
    exact_seconds = time.perf_counter() - started
    console.print("dedupe: MinHash LSH ...")
    started = time.perf_counter()
    index = DedupeIndex()
    index.add([str(i) for i in range(len(known))], known)
    built = time.perf_counter() - started
    verdicts = index.check(candidates)
    lsh_seconds = time.perf_counter() - started
    return {
        "known": known_count,
        "candidates": candidate_count,
        "exact_s": round(exact_seconds, 2),
        "exact_found": exact_found,
        "lsh_s": round(lsh_seconds, 2),
        "built_s": round(built, 2),
        "exact": sum(1 for v in verdicts if v is not None and v.kind == "exact"),
        "near": sum(1 for v in verdicts if v is not None and v.kind == "near"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "operators", "dedupe"), default="all")
    parser.add_argument("--essences", type=int, default=64)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--known", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=100_000)
    args = parser.parse_args()
    console = Console(stderr=True)
    table = Table(title="adp synthesis bench")
    for column in ("measure", "seconds", "ratio", "rate / found"):
        table.add_column(column, justify="left" if column in ("measure", "rate / found") else "right")
    results: dict[str, Any] = {}
    if args.part in ("all", "operators"):
        ops = results["operators"] = bench_operators(args.essences, args.latency, args.in_flight, console)
        bare = ops["bare_calls_s"]
        table.add_row(
            f"{ops['candidates']} bare mock calls, {args.latency:g} s each, {args.in_flight} in flight (baseline)",
            f"{bare:.1f}",
            "1.0",
            f"{ops['candidates'] / bare:.1f} calls/s",
        )
        table.add_row(
            f"synthesize_batch: {ops['candidates']} candidates from {args.essences} essences",
            f"{ops['seconds']:.1f}",
            f"{ops['seconds'] / bare:.1f}",
            f"{ops['candidates'] / ops['seconds']:.1f} candidates/s, {ops['accepted'] / ops['seconds']:.1f} accepted/s "
            f"({ops['accepted']} accepted; steps {ops['steps']})",
        )
    if args.part in ("all", "dedupe"):
        dd = results["dedupe"] = bench_dedupe(args.known, args.candidates, console)
        table.add_row(
            f"exact-hash dedupe, {dd['candidates']} against {dd['known']} (baseline)",
            f"{dd['exact_s']:.1f}",
            "1.0",
            f"{dd['exact_found']} exact",
        )
        table.add_row(
            "MinHash LSH dedupe (build + check)",
            f"{dd['lsh_s']:.1f}",
            f"{dd['lsh_s'] / dd['exact_s']:.1f}",
            f"{dd['exact']} exact, {dd['near']} near (index built in {dd['built_s']:.1f} s)",
        )
    Console(width=140).print(table)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""MiniWoB reseed: new episodes of a solved MiniWoB++ kind, with no model.

A reseeded task is a new seed of its parent's kind. Its instruction is read from the page by a
probe run (:func:`probe_task`: the episode opened, nothing done), its gold script is derived
from that instruction by the kind's solver (:mod:`synthesis.miniwob_solvers`), and it is
kept only if the gold script then earns the full reward in Chromium (the self-check).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from runtimes.core import CandidateError, TaskSpec
from synthesis.essence import Essence
from synthesis.miniwob_solvers import SOLVERS, solve

PROBE_SUFFIX = "--probe"


def reseedable(task: TaskSpec) -> bool:
    """A MiniWoB++ episode of a kind adp can solve from its instruction."""
    episode = task.constraints.miniwob
    return episode is not None and episode.task in SOLVERS


def new_seed(parent: TaskSpec, salt: str) -> int:
    """A seed for a new episode of ``parent``'s kind, fixed by ``salt`` (reproducible, and different
    from the parent's)."""
    assert parent.constraints.miniwob is not None
    seed = int.from_bytes(hashlib.sha256(f"{parent.task_id}\0{salt}".encode()).digest()[:4], "big") % 1_000_000
    return seed + 1 if seed == parent.constraints.miniwob.seed else seed


def episode_task(
    task_id: str,
    kind: str,
    seed: int,
    calls: list[dict[str, Any]],
    *,
    description: str | None = None,
    **fields: Any,
) -> TaskSpec:
    """A task of MiniWoB++ episode ``seed`` of ``kind``, checked by its reward and solved by
    ``calls``; ``fields`` add or override task fields (max_steps, timeout, lineage, ...)."""
    line: dict[str, Any] = {
        "task_id": task_id,
        "task_type": "web",
        "description": description or f"MiniWoB++ {kind}: follow the instruction shown on the page.",
        "expected_tools": ["browser", "complete_task"],
        "max_steps": 8,
        "timeout": 60,
        "constraints": {
            "miniwob": {"task": kind, "seed": seed},
            "verify": {"miniwob_reward": 1.0},
            "reference_tool_calls": calls,
        },
        **fields,
    }
    return TaskSpec.model_validate(line, strict=False)


def probe_task(parent: TaskSpec, seed: int) -> TaskSpec:
    """The episode ``seed`` of ``parent``'s kind, run to read its instruction (the trajectory's
    ``metadata["utterance"]``); it does nothing, so it must not earn the reward."""
    kind = _kind(parent)
    done = [{"name": "complete_task", "arguments": {"answer": "done"}}]
    return episode_task(
        f"{_stem(parent, kind, seed)}{PROBE_SUFFIX}", kind, seed, done, max_steps=2, timeout=parent.timeout
    )


def reseeded(parent: TaskSpec, essence: Essence, seed: int, utterance: str, *, created_at: datetime) -> TaskSpec:
    """The new task for episode ``seed``, whose page says ``utterance``, with its gold script.

    Raises:
        CandidateError: stage ``model``: the kind's solver cannot read the instruction.
    """
    kind = _kind(parent)
    try:
        calls = solve(kind, utterance)
    except (AssertionError, IndexError, ValueError, KeyError) as exc:
        raise CandidateError("model", f"the {kind} solver cannot read {utterance!r}: {exc!r}") from None
    lineage = {
        "parent_task_ids": [parent.task_id],
        "essence_ids": [essence.essence_id],
        "mutation": "miniwob_reseed",
        "generation": parent.generation + 1,
        "created_at": created_at.isoformat(),
    }
    return episode_task(
        _stem(parent, kind, seed),
        kind,
        seed,
        calls,
        description=f"MiniWoB++ {kind}: {utterance}",
        expected_tools=parent.expected_tools,
        max_steps=max(parent.max_steps, len(calls) + 2),
        timeout=parent.timeout,
        priority=parent.priority,
        lineage=lineage,
    )


def _kind(parent: TaskSpec) -> str:
    if not reseedable(parent):
        raise ValueError(f"task {parent.task_id!r} is not a MiniWoB++ episode of a kind adp can solve")
    assert parent.constraints.miniwob is not None
    return parent.constraints.miniwob.task


def _stem(parent: TaskSpec, kind: str, seed: int) -> str:
    return f"miniwob_{kind.replace('-', '_')}_{seed}-reseed-g{parent.generation + 1}"

"""Which essences to mutate, and how: the sampler of the loop, fed back by how children fared.

An essence that was never mutated weighs most; one whose children ran and were verified keeps
its weight; one whose children fail is chosen less (weight ``(verified + 1) / (ran + 2)``).
Essences are drawn without replacement by weight (Efraimidis-Spirakis), from a generator seeded
by the caller, so a batch's plan is reproducible. MiniWoB++ essences are reseeded (no model);
code, reasoning and adp-site web essences get the model operators in turn, ``composition``
pairing an essence with the next drawn one of the same type. An essence left out is counted
under its :class:`SkipReason`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from runtimes.core import MutationName, TaskSpec, TaskType
from synthesis.essence import Essence
from synthesis.mutate import MODEL_OPERATORS, on_adp_site
from synthesis.reseed import reseedable

_NEVER_MUTATED_WEIGHT = 2.0


class SkipReason(StrEnum):
    """Why the sampler left an essence out; the value says it in words (the ``skipped`` metadata)."""

    NOT_IN_BATCH = "its task is not in the batch"
    GENERATION_LIMIT = "generation limit reached"  # the caller adds the limit: "generation limit (3) reached"
    WEB_ELSEWHERE = "a web task neither on adp's site nor a MiniWoB++ episode"
    NO_MODEL = "no model configured for the mutation operators"
    TOKEN_BUDGET = "the daily token budget of the mutation operators is used up"


@dataclass(frozen=True)
class Feedback:
    """How an essence's children fared: accepted tasks, those that ran, those verified."""

    children: int = 0
    ran: int = 0
    verified: int = 0

    @property
    def weight(self) -> float:
        if self.children == 0:
            return _NEVER_MUTATED_WEIGHT
        return (self.verified + 1) / (self.ran + 2)


@dataclass(frozen=True)
class Job:
    """One candidate to make: the operator, its essences and their tasks, and (reseed) a salt."""

    operator: MutationName
    essences: tuple[Essence, ...]
    parents: tuple[TaskSpec, ...]
    salt: str = ""


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    skipped: Counter[SkipReason] = field(default_factory=Counter)  # essences not mutated, by reason


def plan(
    essences: Sequence[Essence],
    parents: Mapping[str, TaskSpec],
    feedback: Mapping[str, Feedback],
    *,
    count: int,
    max_generation: int,
    with_model: bool,
    seed: str,
    without_model_because: SkipReason = SkipReason.NO_MODEL,
) -> Plan:
    """Up to ``count`` jobs from ``essences`` (each of whose task is in ``parents`` by id).

    Args:
        feedback: by essence id; an essence missing from it was never mutated.
        max_generation: essences of this generation or later are not mutated (the loop guard).
        with_model: whether the model operators may run; without them only MiniWoB reseed runs.
        seed: seeds the draw (the batch's partition key, say).
        without_model_because: what an essence that needs the model operators is skipped for when
            ``with_model`` is false (no model configured, or the day's token budget is spent).
    """
    result = Plan()
    eligible: list[Essence] = []
    for essence in essences:
        parent = parents.get(essence.task_id)
        if parent is None:
            result.skipped[SkipReason.NOT_IN_BATCH] += 1
        elif essence.generation >= max_generation:
            result.skipped[SkipReason.GENERATION_LIMIT] += 1
        elif essence.task_type is TaskType.WEB and not (reseedable(parent) or on_adp_site(parent)):
            result.skipped[SkipReason.WEB_ELSEWHERE] += 1
        elif not reseedable(parent) and not with_model:
            result.skipped[without_model_because] += 1
        else:
            eligible.append(essence)
    rng = random.Random(seed)
    order = sorted(
        eligible,
        key=lambda e: rng.random() ** (1 / (feedback.get(e.essence_id) or Feedback()).weight),
        reverse=True,
    )
    for round_ in range(len(MODEL_OPERATORS)):
        for position, essence in enumerate(order):
            if len(result.jobs) >= count:
                return result
            parent = parents[essence.task_id]
            if reseedable(parent):
                result.jobs.append(Job("miniwob_reseed", (essence,), (parent,), salt=f"{seed}:{round_}"))
                continue
            operator = MODEL_OPERATORS[(position + round_) % len(MODEL_OPERATORS)]
            partner = _partner(order, position, parents) if operator == "composition" else None
            if partner is None:
                operator = "parameter" if operator == "composition" else operator
                result.jobs.append(Job(operator, (essence,), (parent,)))
            else:
                result.jobs.append(Job(operator, (essence, partner), (parent, parents[partner.task_id])))
    return result


def _partner(order: Sequence[Essence], position: int, parents: Mapping[str, TaskSpec]) -> Essence | None:
    """The next drawn essence of the same type and another task that a model may mutate, wrapping around."""
    essence = order[position]
    for offset in range(1, len(order)):
        other = order[(position + offset) % len(order)]
        mutable = not reseedable(parents[other.task_id])
        if other.task_type is essence.task_type and other.task_id != essence.task_id and mutable:
            return other
    return None

"""Essences in, verified new tasks out: the work behind the ``synthesized_tasks`` asset.

For one batch: the sampler picks essences (fed back by how earlier children fared), the
operators make candidates, and every candidate goes through the filters in order, ending
accepted or as a ``synthesis_rejects`` row with its stage and reason:

1. ``model`` / ``validation``: the operator gave a valid task (strict ``TaskSpec``) whose task-file
   line ingest accepts (checked by ingest's own parser: line bytes, UTF-8, every field);
2. ``self_check``: its gold solution passes its own check and a null solution fails it, both
   run on the same execution path as any task (this process, or the Redis workers);
3. ``dedupe``: it is neither a copy nor a near duplicate of any known task (all batches, all
   generations: the index in ``<data>/synthesis/``) or of an earlier candidate;
4. ``guard``: the daily task budget has room (a candidate the daily token budget stopped
   before it was made is a ``guard`` row too, with that reason).

The generation limit and the daily token budget stop work before a candidate is made: the
summary says so, and when no candidate is made at all it says why (``no_candidates_because``:
synthesis off, a budget used up, no essences and why, no model for the essences there are).
The daily budgets count every row of the UTC day in both tables, this batch's earlier
materialisations included, so materialising a partition again never resets them.

Accepted is for good. Accepted tasks are written atomically as ``synth-<batch>-g<N>.jsonl`` in
TASKS_DIR, where the sensor picks them up like any task file; a later materialisation of the
same batch never replaces that file (it writes ``synth-<batch>-g<N>-r<M>.jsonl``) and adds its
rows to the batch's partitions, keeping the earlier ones. The dedupe index is a cache of the
tasks in the lake: on each use it forgets any task no longer there, so a task is either in the
lake (and its file) or can be proposed again, never neither. Checking the budget, deduplicating,
writing the files and the rows, and saving the index happen under one lock.

Only tasks that adp's synthesis wrote count as a generation: a person's line may carry a
``lineage`` (it is kept, as a claim), but such a parent is generation 0 here, so its children
are generation 1 and the generation limit applies to what adp made.

This module decides; what it reads from and writes to the lake, the task files and the index's
place are :mod:`adp_pipeline.storage.synthesis`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic_core import PydanticSerializationError

from adp_pipeline.execute import run_task_specs
from adp_pipeline.storage import Lake
from adp_pipeline.storage.locks import file_lock
from adp_pipeline.storage.rows import task_line
from adp_pipeline.storage.synthesis import (
    AcceptedTask,
    RejectedCandidate,
    as_synthesized,
    batch_runs,
    earlier_rows,
    feedback,
    index_path,
    known_tasks,
    load_essences,
    spent_today,
    store_candidates,
    tasks_of,
    write_task_files,
)
from runtimes.core import (
    CandidateError,
    ConfigError,
    LLMError,
    TaskSpec,
    TokenUsage,
    Trajectory,
    parse_task_bytes,
)
from runtimes.llm import LLMClient, LLMEndpoint
from runtimes.settings import Settings
from synthesis.dedupe import DedupeIndex, Duplicate
from synthesis.essence import Essence
from synthesis.mutate import mutate
from synthesis.reseed import new_seed, probe_task, reseeded
from synthesis.sampler import Job, Plan, SkipReason, plan
from synthesis.selfcheck import judge, null_variant
from synthesis.stages import Stage

SYNTHESIS_OFF = "synthesis is off (ADP_SYNTH_MAX_GENERATION=0)"
NO_MODEL = (
    "no model configured, so only MiniWoB tasks are reseeded; code and reasoning tasks are "
    "mutated once a model is (ADP_LLM_BASE_URL and ADP_LLM_MODEL, or a provider's key)"
)


@dataclass
class Candidate:
    job: Job
    task: TaskSpec | None = None
    tokens: int = 0
    stage: Stage | None = None  # the filter that rejected it; None while it is in the running
    reason: str = ""
    description: str | None = None  # the text of a task that failed validation
    line: str | None = None  # its task-file line, once ingest's parser accepted it

    def reject(self, stage: Stage, reason: str) -> None:
        self.stage, self.reason = stage, reason


@dataclass
class SynthesisSummary:
    batch: str
    essences: int
    candidates: list[Candidate] = field(default_factory=list)
    task_files: dict[int, Path] = field(default_factory=dict)  # the files written, by generation
    stopped: list[str] = field(default_factory=list)  # what the loop guard stopped, in words
    skipped: Counter[SkipReason] = field(default_factory=Counter)  # essences not mutated, by reason
    no_candidates_because: str | None = None  # in words, when no candidate was made
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step: make, self_check, dedupe

    @property
    def accepted(self) -> list[TaskSpec]:
        return [c.task for c in self.candidates if c.stage is None and c.task is not None]

    @property
    def rejected(self) -> dict[Stage, int]:
        counts = Counter(c.stage for c in self.candidates if c.stage is not None)
        return {stage: counts[stage] for stage in Stage if counts[stage]}

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.candidates)


def synthesize_batch(
    lake: Lake, batch: str, settings: Settings, log: Callable[[str], None] | None = None
) -> SynthesisSummary:
    """Make, filter and write the new tasks of ``batch``'s essences; add them to its synthesis rows.

    ``log`` hears one line per step (what it did, how long it took), for long batches. When no
    candidate is made, ``no_candidates_because`` says why.
    """
    created_at = datetime.now(UTC)
    pool = load_essences(lake, batch)
    summary = SynthesisSummary(batch, pool.total)
    spent = spent_today(lake, created_at)
    tasks_left = settings.synth_daily_tasks - spent.tasks
    tokens_left = settings.synth_daily_tokens - spent.tokens
    why: str | None = None
    if settings.synth_max_generation == 0:
        why = SYNTHESIS_OFF
        summary.stopped.append(why)
    elif tasks_left <= 0:
        why = _used_up("ADP_SYNTH_DAILY_TASKS", settings.synth_daily_tasks, "task")
        summary.stopped.append(why)
    elif settings.synth_candidates == 0:
        why = "no candidate is asked for (ADP_SYNTH_CANDIDATES=0)"
    elif not pool.essences:
        why = _why_no_essences(lake, batch)
    else:
        model = _model(settings)
        work = _plan(summary, lake, pool.essences, settings, model, tokens_left)
        if not work.jobs:
            why = _why_none_mutated(work.skipped, settings, model)
        summary.candidates = [Candidate(job) for job in work.jobs]
        with _timed(summary, "make", log):
            _make(summary, settings, model, tokens_left, created_at)
            _check_lines(summary, settings)
        with _timed(summary, "self_check", log):
            _self_check(summary, settings)
    with _timed(summary, "dedupe", log) if summary.candidates else contextlib.nullcontext():
        _dedupe_guard_and_write(summary, lake, settings, created_at)
    summary.no_candidates_because = None if summary.candidates else why
    return summary


def model_missing(settings: Settings) -> str | None:
    """Why synthesis makes MiniWoB reseeds only (no model for the mutation operators), or None when
    a model is configured or synthesis is off: what the ``synthesized_tasks`` metadata and `adp run`
    say, in the same words."""
    if settings.synth_max_generation == 0:
        return None
    model = _model(settings)
    return None if isinstance(model, LLMEndpoint) else model


def _model(settings: Settings) -> LLMEndpoint | str:
    """The endpoint the mutation operators use, or why there is none, in words.

    The one place synthesis reads the endpoint. LLM settings that contradict each other are no
    model here, with their own reason: the operators that need one do not run, and the run (under
    ``oracle`` or ``mock``, which need no model) goes on with the MiniWoB reseeds, as it says.
    """
    try:
        endpoint = settings.llm_config.endpoint()
    except ConfigError as exc:
        return f"{exc}; until then only MiniWoB tasks are reseeded"
    return NO_MODEL if endpoint is None else endpoint


def skipped_in_words(skipped: Counter[SkipReason], max_generation: int) -> dict[str, int]:
    """The essences the sampler left out, by reason in words (the limit named where there is one)."""
    order = list(SkipReason)  # the most essences first, then in the sampler's order of checks
    return {
        f"generation limit ({max_generation}) reached" if reason is SkipReason.GENERATION_LIMIT else reason.value: n
        for reason, n in sorted(skipped.items(), key=lambda item: (-item[1], order.index(item[0])))
    }


def _plan(
    summary: SynthesisSummary,
    lake: Lake,
    essences: list[Essence],
    settings: Settings,
    model: LLMEndpoint | str,
    tokens_left: int,
) -> Plan:
    """The sampler's jobs for ``essences``; what it left out is counted in ``summary``."""
    endpoint = model if isinstance(model, LLMEndpoint) else None
    if endpoint is not None and tokens_left <= 0:
        summary.stopped.append(_used_up("ADP_SYNTH_DAILY_TOKENS", settings.synth_daily_tokens, "token"))
    parents = as_synthesized(lake, tasks_of(lake, summary.batch, [essence.task_id for essence in essences]))
    essences = [
        essence.model_copy(update={"generation": parents[essence.task_id].generation})
        if essence.task_id in parents
        else essence
        for essence in essences
    ]
    work = plan(
        essences,
        parents,
        feedback(lake),
        count=settings.synth_candidates,
        max_generation=settings.synth_max_generation,
        with_model=endpoint is not None and tokens_left > 0,
        without_model_because=SkipReason.NO_MODEL if endpoint is None else SkipReason.TOKEN_BUDGET,
        seed=summary.batch,
    )
    summary.skipped = work.skipped
    if SkipReason.GENERATION_LIMIT in work.skipped and not work.jobs:
        limit = f"the generation limit (ADP_SYNTH_MAX_GENERATION={settings.synth_max_generation})"
        at_limit = work.skipped[SkipReason.GENERATION_LIMIT]
        summary.stopped.append(
            f"every essence is at {limit}" if at_limit == len(essences) else f"{at_limit} essences are at {limit}"
        )
    return work


def _why_no_essences(lake: Lake, batch: str) -> str:
    """Why ``batch`` has no essence to mutate, from its trajectories."""
    runs = batch_runs(lake, batch)
    if runs.trajectories == 0:
        return "the batch has no essences: it has no trajectories (materialise trajectories, then task_essences)"
    if runs.verified == 0:
        trajectories = _counted(runs.trajectories, "trajectory", "trajectories")
        return (
            f"the batch has no essences: no verified success among its {trajectories} "
            "(essences are made from verified successes only)"
        )
    verified = _counted(runs.verified, "verified success", "verified successes")
    return f"the batch has no essences yet, though it has {verified}: materialise task_essences first"


def _why_none_mutated(skipped: Counter[SkipReason], settings: Settings, model: LLMEndpoint | str) -> str:
    """Why the sampler made no job of any essence: one reason said whole (as the CLI says it), or
    each reason with its count (and why there is no model, when that is not simply none configured)."""
    missing = model if isinstance(model, str) else NO_MODEL
    if len(skipped) == 1:
        (reason,) = skipped
        if reason is SkipReason.NO_MODEL:
            return missing
        if reason is SkipReason.TOKEN_BUDGET:
            return _used_up("ADP_SYNTH_DAILY_TOKENS", settings.synth_daily_tokens, "token")
        if reason is SkipReason.GENERATION_LIMIT:
            return (
                f"every essence is at the generation limit (ADP_SYNTH_MAX_GENERATION={settings.synth_max_generation})"
            )
    parts: list[str] = []
    for words, n in skipped_in_words(skipped, settings.synth_max_generation).items():
        parts.append(f"{words} ({_counted(n, 'essence', 'essences')})")
        if words == SkipReason.NO_MODEL.value and missing != NO_MODEL:  # the LLM settings contradict each other
            parts[-1] += f": {missing}"
    listed = "; ".join(parts)
    return f"no essence could be mutated: {listed or 'the sampler drew none'}"


def _counted(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _used_up(variable: str, value: int, what: str) -> str:
    return f"the daily {what} budget ({variable}={value}) is used up"


@contextlib.contextmanager
def _timed(summary: SynthesisSummary, step: str, log: Callable[[str], None] | None) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        summary.seconds[step] = round(time.perf_counter() - started, 3)
        if log is not None:
            left = sum(1 for c in summary.candidates if c.stage is None)
            seconds = summary.seconds[step]
            log(f"synthesis {step}: {left} of {len(summary.candidates)} candidates left ({seconds:.1f} s)")


def _make(
    summary: SynthesisSummary, settings: Settings, model: LLMEndpoint | str, tokens_left: int, created_at: datetime
) -> None:
    """Fill each candidate's task (or its model/validation rejection)."""
    reseeds = [c for c in summary.candidates if c.job.operator == "miniwob_reseed"]
    models = [c for c in summary.candidates if c.job.operator != "miniwob_reseed"]
    if reseeds:
        _make_reseeds(summary.batch, reseeds, settings, created_at)
    if models:
        assert isinstance(model, LLMEndpoint)  # the plan has model jobs only when a model is configured
        asyncio.run(_make_with_model(summary, models, settings, model, tokens_left, created_at))


def _make_reseeds(batch: str, candidates: list[Candidate], settings: Settings, created_at: datetime) -> None:
    seeds = [new_seed(c.job.parents[0], c.job.salt) for c in candidates]
    probes = [probe_task(c.job.parents[0], seed) for c, seed in zip(candidates, seeds, strict=True)]
    unique = list({probe.task_id: probe for probe in probes}.values())
    runs = {t.task_id: t for t in run_task_specs(f"{batch}--synth-probe", unique, _oracle(settings))}
    for candidate, seed, probe in zip(candidates, seeds, probes, strict=True):
        utterance = runs[probe.task_id].metadata.get("utterance")
        if not utterance:
            error = runs[probe.task_id].error_message or "no instruction on the page"
            candidate.reject(Stage.MODEL, f"the probe run could not read episode {seed}'s instruction: {error}")
            continue
        try:
            candidate.task = reseeded(
                candidate.job.parents[0], candidate.job.essences[0], seed, str(utterance), created_at=created_at
            )
        except CandidateError as exc:
            candidate.reject(Stage(exc.stage), exc.reason)


async def _make_with_model(
    summary: SynthesisSummary,
    candidates: list[Candidate],
    settings: Settings,
    endpoint: LLMEndpoint,
    tokens_left: int,
    created_at: datetime,
) -> None:
    client: LLMClient = settings.llm_config.client(endpoint, settings.llm_cache)
    spent = TokenUsage()
    over_budget: list[Candidate] = []

    # A candidate starts only when a slot is free, and then looks at the budget: what the calls
    # in flight spend is added as each ends, so the budget is overshot by at most those calls.
    slots = asyncio.Semaphore(settings.llm_max_concurrency)

    async def one(candidate: Candidate) -> None:
        async with slots:
            if spent.total_tokens >= tokens_left:
                over_budget.append(candidate)
                return
            usage = TokenUsage()
            try:
                candidate.task = await mutate(
                    client, candidate.job.operator, candidate.job.essences, candidate.job.parents,
                    created_at=created_at, usage=usage,
                )  # fmt: skip
            except CandidateError as exc:
                candidate.reject(Stage(exc.stage), exc.reason)
                candidate.description = exc.description
            except LLMError as exc:
                candidate.reject(Stage.MODEL, str(exc).splitlines()[0][:2000])
            finally:
                candidate.tokens = usage.total_tokens
                spent.total_tokens += usage.total_tokens

    try:
        await asyncio.gather(*(one(candidate) for candidate in candidates))
    finally:
        await client.aclose()
    if over_budget:
        budget = _used_up("ADP_SYNTH_DAILY_TOKENS", settings.synth_daily_tokens, "token")
        summary.stopped.append(f"{budget}: {len(over_budget)} candidates not made")
        # Planned but never made: each is still a candidate, and ends as a row like any other.
        for candidate in over_budget:
            candidate.reject(Stage.GUARD, f"{budget}: the candidate was not made")


def _self_check(summary: SynthesisSummary, settings: Settings) -> None:
    """Run every valid candidate with its gold and its null solution; reject those that fail."""
    valid = [c for c in summary.candidates if c.stage is None and c.task is not None]
    first: dict[str, Candidate] = {}
    for candidate in valid:
        assert candidate.task is not None
        if (earlier := first.setdefault(candidate.task.task_id, candidate)) is not candidate:
            candidate.reject(Stage.DEDUPE, f"exact copy of candidate {earlier.task.task_id if earlier.task else '?'}")
    checked = [c for c in valid if c.stage is None]
    runs: list[TaskSpec] = [c.task for c in checked if c.task] + [null_variant(c.task) for c in checked if c.task]
    if not runs:
        return
    results = run_task_specs(f"{summary.batch}--synth-check", runs, _oracle(settings))
    gold: list[Trajectory] = results[: len(checked)]
    null: list[Trajectory] = results[len(checked) :]
    for candidate, gold_run, null_run in zip(checked, gold, null, strict=True):
        if (problem := judge(gold_run, null_run)) is not None:
            candidate.reject(Stage.SELF_CHECK, problem)


def _check_lines(summary: SynthesisSummary, settings: Settings) -> None:
    """Reject (``validation``) every made candidate whose task-file line ingest would refuse.

    The line is read back by ingest's own parser with ingest's limits (ADP_MAX_TASK_LINE_BYTES,
    ADP_SANDBOX_MAX_MEMORY_MB), so synthesis never accepts a task that the next step rejects.
    """
    for candidate in summary.candidates:
        if candidate.stage is not None or candidate.task is None:
            continue
        try:
            line = task_line(candidate.task)
            data = f"{line}\n".encode()
        except (PydanticSerializationError, UnicodeEncodeError) as exc:
            problem: str | None = f"the task cannot be written as UTF-8 text: {str(exc).splitlines()[0]}"
        else:
            parsed = parse_task_bytes(
                data,
                source_name="candidate",
                max_line_bytes=settings.max_task_line_bytes,
                max_memory_mb=settings.sandbox_max_memory_mb,
            )
            problem = parsed.rejected[0].reason if parsed.rejected else None
        if problem is None:
            candidate.line = line
        else:
            candidate.reject(Stage.VALIDATION, problem)
            candidate.description = candidate.task.description


def _dedupe_guard_and_write(summary: SynthesisSummary, lake: Lake, settings: Settings, created_at: datetime) -> None:
    """Check the passing candidates against every known task and each other, then the task
    budget; write the accepted tasks' files and every candidate's row; the accepted join the index.

    All under one lock, in an order that never puts the index ahead of the lake: the budget and
    the known tasks are read, the files and rows written, and only then the index saved. A
    crash before the save loses nothing: the next :meth:`DedupeIndex.sync` adds what the lake has.
    """
    passing = [c for c in summary.candidates if c.stage is None and c.task is not None]
    path = index_path(settings.data_dir)
    with file_lock(path.with_suffix(".lock")):
        index: DedupeIndex | None = None
        if passing:
            index = DedupeIndex.load(path, settings.synth_dedup_threshold)
            index.threshold = settings.synth_dedup_threshold
            index.sync(known_tasks(lake))
            tasks_left = settings.synth_daily_tasks - spent_today(lake, created_at).tasks
            used_up = _used_up("ADP_SYNTH_DAILY_TASKS", settings.synth_daily_tasks, "task")
            accepted = 0
            for candidate, verdict in zip(
                passing, index.check([c.task.description for c in passing if c.task]), strict=True
            ):
                if verdict is not None:
                    candidate.reject(Stage.DEDUPE, _duplicate_reason(verdict, passing))
                elif accepted >= tasks_left:
                    candidate.reject(Stage.GUARD, used_up)
                else:
                    accepted += 1
            if any(c.stage is Stage.GUARD for c in passing):
                summary.stopped.append(used_up)
        earlier = earlier_rows(lake, summary.batch)
        lines: dict[int, list[str]] = {}
        for task, line in _accepted_lines(summary):
            lines.setdefault(task.generation, []).append(line)
        summary.task_files = write_task_files(settings.tasks_dir, summary.batch, lines, earlier.task_files)
        store_candidates(lake, summary.batch, earlier, *_rows(summary, created_at))
        if index is not None:
            index.add([task.task_id for task in summary.accepted], [task.description for task in summary.accepted])
            index.save(path)


def _accepted_lines(summary: SynthesisSummary) -> list[tuple[TaskSpec, str]]:
    return [
        (c.task, c.line) for c in summary.candidates if c.stage is None and c.task is not None and c.line is not None
    ]


def _rows(summary: SynthesisSummary, created_at: datetime) -> tuple[list[AcceptedTask], list[RejectedCandidate]]:
    """Every candidate as its row: accepted (in the file of its generation) or rejected."""
    accepted: list[AcceptedTask] = []
    rejected: list[RejectedCandidate] = []
    for candidate in summary.candidates:
        job, task = candidate.job, candidate.task
        parent_task_ids = tuple(parent.task_id for parent in job.parents)
        essence_ids = tuple(essence.essence_id for essence in job.essences)
        if candidate.stage is None and task is not None and candidate.line is not None:
            accepted.append(
                AcceptedTask(
                    task=task,
                    line=candidate.line,
                    task_file=summary.task_files[task.generation],
                    mutation=job.operator,
                    parent_task_ids=parent_task_ids,
                    essence_ids=essence_ids,
                    tokens=candidate.tokens,
                    created_at=created_at,
                )
            )
        elif candidate.stage is not None:
            rejected.append(
                RejectedCandidate(
                    candidate_id=task.task_id if task else None,
                    task_type=task.task_type if task else job.parents[0].task_type,
                    mutation=job.operator,
                    stage=candidate.stage,
                    reason=candidate.reason,
                    parent_task_ids=parent_task_ids,
                    essence_ids=essence_ids,
                    description=task.description if task and candidate.line else candidate.description,
                    line=candidate.line,
                    tokens=candidate.tokens,
                    created_at=created_at,
                )
            )
        else:  # every filter either passes a candidate (with its line) or rejects it
            raise AssertionError(f"candidate {task.task_id if task else '?'} was neither accepted nor rejected")
    return accepted, rejected


def _duplicate_reason(verdict: Duplicate, passing: list[Candidate]) -> str:
    of = verdict.of
    if of.startswith("#"):  # an earlier candidate of this batch
        task = passing[int(of[1:])].task
        of = f"candidate {task.task_id if task else of}"
    else:
        of = f"task {of}"
    if verdict.kind == "exact":
        return f"exact copy of {of}"
    return f"near duplicate of {of} (estimated Jaccard similarity {verdict.similarity:.2f})"


def _oracle(settings: Settings) -> Settings:
    """The settings that replay reference solutions: how candidates are self-checked (no
    screenshots: these trajectories are not stored)."""
    return settings.model_copy(update={"policy": "oracle", "screenshots": "off"})

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
summary says so. The daily budgets count every row of the UTC day in both tables, this batch's
earlier materialisations included, so materialising a partition again never resets them.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any

from pydantic_core import PydanticSerializationError

from adp_pipeline.execute import run_task_specs
from adp_pipeline.storage import Lake
from adp_pipeline.storage.locks import file_lock
from adp_pipeline.storage.rows import TASK_COLUMNS, named, select, task_from_row, task_line
from runtimes.core import (
    RAW_PREVIEW_CHARS,
    CandidateError,
    LLMError,
    TaskSpec,
    TokenUsage,
    Trajectory,
    parse_task_bytes,
    write_text_atomically,
)
from runtimes.llm import LLMClient
from runtimes.settings import Settings
from synthesis.dedupe import DedupeIndex, Duplicate
from synthesis.essence import Essence, SuccessPattern
from synthesis.mutate import mutate
from synthesis.reseed import new_seed, probe_task, reseeded
from synthesis.sampler import Feedback, Job, plan
from synthesis.selfcheck import judge, null_variant

STAGES = ("model", "validation", "self_check", "dedupe", "guard")
_INDEX_FILE = "dedupe-index.npz"
_ESSENCE_POOL = 5000  # essences of one batch the sampler draws from (see _load_essences)


@dataclass
class Candidate:
    job: Job
    task: TaskSpec | None = None
    tokens: int = 0
    stage: str | None = None  # the filter that rejected it; None while it is in the running
    reason: str = ""
    description: str | None = None  # the text of a task that failed validation
    line: str | None = None  # its task-file line, once ingest's parser accepted it

    def reject(self, stage: str, reason: str) -> None:
        self.stage, self.reason = stage, reason


@dataclass
class SynthesisSummary:
    batch: str
    essences: int
    candidates: list[Candidate] = field(default_factory=list)
    task_files: list[Path] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # what the loop guard stopped, in words
    skipped: Counter[str] = field(default_factory=Counter)  # essences not mutated, by reason
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step: make, self_check, dedupe

    @property
    def accepted(self) -> list[TaskSpec]:
        return [c.task for c in self.candidates if c.stage is None and c.task is not None]

    @property
    def rejected(self) -> dict[str, int]:
        counts = Counter(c.stage for c in self.candidates if c.stage is not None)
        return {stage: counts[stage] for stage in STAGES if counts[stage]}

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.candidates)


def index_path(data_dir: Path) -> Path:
    return Path(data_dir).absolute() / "synthesis" / _INDEX_FILE


def synthesize_batch(
    lake: Lake, batch: str, settings: Settings, log: Callable[[str], None] | None = None
) -> SynthesisSummary:
    """Make, filter and write the new tasks of ``batch``'s essences; add them to its synthesis rows.

    ``log`` hears one line per step (what it did, how long it took), for long batches.
    """
    created_at = datetime.now(UTC)
    total, essences = _load_essences(lake, batch)
    summary = SynthesisSummary(batch, total)
    tasks_left, tokens_left = _budget_left(lake, settings, created_at)
    if settings.synth_max_generation == 0:
        summary.stopped.append("synthesis is off (ADP_SYNTH_MAX_GENERATION=0)")
    elif tasks_left <= 0:
        summary.stopped.append(_used_up("ADP_SYNTH_DAILY_TASKS", settings.synth_daily_tasks, "task"))
    elif essences:
        endpoint = settings.llm_config.endpoint()
        with_model = endpoint is not None and tokens_left > 0
        if endpoint is not None and tokens_left <= 0:
            summary.stopped.append(_used_up("ADP_SYNTH_DAILY_TOKENS", settings.synth_daily_tokens, "token"))
        parents = _as_synthesized(lake, _tasks_of(lake, batch, [essence.task_id for essence in essences]))
        essences = [
            essence.model_copy(update={"generation": parents[essence.task_id].generation})
            if essence.task_id in parents
            else essence
            for essence in essences
        ]
        work = plan(
            essences,
            parents,
            _feedback(lake),
            count=settings.synth_candidates,
            max_generation=settings.synth_max_generation,
            with_model=with_model,
            seed=batch,
        )
        summary.skipped = work.skipped
        if any(reason.startswith("generation limit") for reason in work.skipped) and not work.jobs:
            summary.stopped.append(
                f"every essence is at the generation limit (ADP_SYNTH_MAX_GENERATION={settings.synth_max_generation})"
            )
        summary.candidates = [Candidate(job) for job in work.jobs]
        with _timed(summary, "make", log):
            _make(summary, settings, tokens_left, created_at)
            _check_lines(summary, settings)
        with _timed(summary, "self_check", log):
            _self_check(summary, settings)
    with _timed(summary, "dedupe", log) if summary.candidates else contextlib.nullcontext():
        _dedupe_guard_and_write(summary, lake, settings, created_at)
    return summary


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


def _load_essences(lake: Lake, batch: str) -> tuple[int, list[Essence]]:
    """How many essences ``batch`` has, and those the sampler draws from: all of them, or for a
    batch of more than ``_ESSENCE_POOL``, a reproducible pseudo-random sample of that many (a
    draw of a few dozen candidates needs no more, and memory stays flat)."""
    with lake.connect() as connection:
        ((total,),) = connection.execute("SELECT count(*) FROM essences WHERE batch = ?", [batch]).fetchall()
        rows = named(
            connection.execute(
                "SELECT * FROM essences WHERE batch = ? AND essence_id IN (SELECT essence_id FROM essences "
                "WHERE batch = ? ORDER BY hash(essence_id), essence_id LIMIT ?) ORDER BY essence_id",
                [batch, batch, _ESSENCE_POOL],
            )
        )
    essences = [
        Essence.model_validate(
            {**row, "success_pattern": SuccessPattern.model_validate_json(row["success_pattern"])}, strict=False
        )
        for row in rows
    ]
    return int(total), essences


def _tasks_of(lake: Lake, batch: str, task_ids: list[str]) -> list[TaskSpec]:
    with lake.connect() as connection:
        rows = named(
            connection.execute(
                f"SELECT {select(TASK_COLUMNS)} FROM tasks WHERE batch = ? AND task_id IN (SELECT unnest(?))",
                [batch, task_ids],
            )
        )
    return [task_from_row(row) for row in rows]


def _budget_left(lake: Lake, settings: Settings, now: datetime) -> tuple[int, int]:
    """Tasks and tokens left today (UTC): every row of the day counts, whatever its batch, this
    batch's earlier materialisations included (their rows are kept), so a re-run cannot reset them."""
    midnight = datetime.combine(now.date(), clock_time(), tzinfo=UTC)
    with lake.connect() as connection:
        accepted, accepted_tokens = connection.execute(
            "SELECT count(*), coalesce(sum(tokens), 0) FROM synthesized_tasks WHERE created_at >= ?", [midnight]
        ).fetchone() or (0, 0)
        (rejected_tokens,) = connection.execute(
            "SELECT coalesce(sum(tokens), 0) FROM synthesis_rejects WHERE created_at >= ?", [midnight]
        ).fetchone() or (0,)
    return settings.synth_daily_tasks - accepted, settings.synth_daily_tokens - accepted_tokens - rejected_tokens


def _as_synthesized(lake: Lake, tasks: list[TaskSpec]) -> dict[str, TaskSpec]:
    """``tasks`` by id, each with its lineage only if adp's synthesis wrote it (its id and text
    are in ``synthesized_tasks``): a lineage a person wrote is a claim, and the generation of
    their task is 0 here, so children and the generation limit count only what adp made."""
    claimed = [task.task_id for task in tasks if task.lineage is not None]
    written: set[tuple[str, str]] = set()
    if claimed:
        with lake.connect() as connection:
            rows = connection.execute(
                "SELECT DISTINCT task_id, description FROM synthesized_tasks WHERE task_id IN (SELECT unnest(?))",
                [claimed],
            ).fetchall()
        written = {(str(task_id), str(description)) for task_id, description in rows}
    return {
        task.task_id: task
        if task.lineage is None or (task.task_id, task.description) in written
        else task.model_copy(update={"lineage": None})
        for task in tasks
    }


def _feedback(lake: Lake) -> dict[str, Feedback]:
    """By essence id: its accepted children, those that ran, and those verified (all batches)."""
    with lake.connect() as connection:
        rows = connection.execute(
            """
            WITH children AS (SELECT DISTINCT task_id, unnest(essence_ids) AS essence_id FROM synthesized_tasks)
            SELECT c.essence_id, count(DISTINCT c.task_id), count(DISTINCT r.task_id),
                   count(DISTINCT r.task_id) FILTER (WHERE r.verified_success)
            FROM children c LEFT JOIN trajectories r ON r.task_id = c.task_id
            GROUP BY 1
            """
        ).fetchall()
    return {essence_id: Feedback(children, ran, verified) for essence_id, children, ran, verified in rows}


def _make(summary: SynthesisSummary, settings: Settings, tokens_left: int, created_at: datetime) -> None:
    """Fill each candidate's task (or its model/validation rejection)."""
    reseeds = [c for c in summary.candidates if c.job.operator == "miniwob_reseed"]
    models = [c for c in summary.candidates if c.job.operator != "miniwob_reseed"]
    if reseeds:
        _make_reseeds(summary.batch, reseeds, settings, created_at)
    if models:
        asyncio.run(_make_with_model(summary, models, settings, tokens_left, created_at))


def _make_reseeds(batch: str, candidates: list[Candidate], settings: Settings, created_at: datetime) -> None:
    seeds = [new_seed(c.job.parents[0], c.job.salt) for c in candidates]
    probes = [probe_task(c.job.parents[0], seed) for c, seed in zip(candidates, seeds, strict=True)]
    unique = list({probe.task_id: probe for probe in probes}.values())
    runs = {t.task_id: t for t in run_task_specs(f"{batch}--synth-probe", unique, _oracle(settings))}
    for candidate, seed, probe in zip(candidates, seeds, probes, strict=True):
        utterance = runs[probe.task_id].metadata.get("utterance")
        if not utterance:
            error = runs[probe.task_id].error_message or "no instruction on the page"
            candidate.reject("model", f"the probe run could not read episode {seed}'s instruction: {error}")
            continue
        try:
            candidate.task = reseeded(
                candidate.job.parents[0], candidate.job.essences[0], seed, str(utterance), created_at=created_at
            )
        except CandidateError as exc:
            candidate.reject(exc.stage, exc.reason)


async def _make_with_model(
    summary: SynthesisSummary, candidates: list[Candidate], settings: Settings, tokens_left: int, created_at: datetime
) -> None:
    endpoint = settings.llm_config.endpoint()
    assert endpoint is not None  # the plan has model jobs only when a model is configured
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
                candidate.reject(exc.stage, exc.reason)
                candidate.description = exc.description
            except LLMError as exc:
                candidate.reject("model", str(exc).splitlines()[0][:2000])
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
            candidate.reject("guard", f"{budget}: the candidate was not made")


def _self_check(summary: SynthesisSummary, settings: Settings) -> None:
    """Run every valid candidate with its gold and its null solution; reject those that fail."""
    valid = [c for c in summary.candidates if c.stage is None and c.task is not None]
    first: dict[str, Candidate] = {}
    for candidate in valid:
        assert candidate.task is not None
        if (earlier := first.setdefault(candidate.task.task_id, candidate)) is not candidate:
            candidate.reject("dedupe", f"exact copy of candidate {earlier.task.task_id if earlier.task else '?'}")
    checked = [c for c in valid if c.stage is None]
    runs: list[TaskSpec] = [c.task for c in checked if c.task] + [null_variant(c.task) for c in checked if c.task]
    if not runs:
        return
    results = run_task_specs(f"{summary.batch}--synth-check", runs, _oracle(settings))
    gold: list[Trajectory] = results[: len(checked)]
    null: list[Trajectory] = results[len(checked) :]
    for candidate, gold_run, null_run in zip(checked, gold, null, strict=True):
        if (problem := judge(gold_run, null_run)) is not None:
            candidate.reject("self_check", problem)


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
            candidate.reject("validation", problem)
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
            tasks_left, _ = _budget_left(lake, settings, created_at)
            used_up = _used_up("ADP_SYNTH_DAILY_TASKS", settings.synth_daily_tasks, "task")
            accepted = 0
            for candidate, verdict in zip(
                passing, index.check([c.task.description for c in passing if c.task]), strict=True
            ):
                if verdict is not None:
                    candidate.reject("dedupe", _duplicate_reason(verdict, passing))
                elif accepted >= tasks_left:
                    candidate.reject("guard", used_up)
                else:
                    accepted += 1
            if any(c.stage == "guard" for c in passing):
                summary.stopped.append(used_up)
        earlier = _partition_rows(lake, "synthesized_tasks", summary.batch)
        taken = {str(row["task_file"]) for row in earlier}
        files = _write_task_files(summary, settings.tasks_dir, taken)
        summary.task_files = list(files.values())
        _store(lake, summary, created_at, files, earlier)
        if index is not None:
            index.add([task.task_id for task in summary.accepted], [task.description for task in summary.accepted])
            index.save(path)


def known_tasks(lake: Lake, *, except_batch: str | None = None) -> dict[str, str]:
    """Every known task's text by id: all batches' tasks and every accepted synthesized task
    (written, perhaps not run yet), but those synthesized from ``except_batch``."""
    with lake.connect() as connection:
        rows = connection.execute(
            "SELECT task_id, any_value(description) FROM tasks GROUP BY task_id UNION ALL "
            "SELECT task_id, any_value(description) FROM synthesized_tasks WHERE batch IS DISTINCT FROM ? "
            "GROUP BY task_id",
            [except_batch],
        ).fetchall()
    return dict(rows)


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


def _write_task_files(summary: SynthesisSummary, tasks_dir: Path, taken: set[str]) -> dict[int, Path]:
    """One file per generation, written aside and renamed into place (the sensor never reads
    half a file): ``synth-<batch>-g<N>.jsonl``, or, when that name exists or an earlier
    materialisation of the batch used it (``taken``), ``synth-<batch>-g<N>-r<M>.jsonl`` with the
    first free ``M`` from 2: a task file adp wrote is never replaced."""
    by_generation: dict[int, list[Candidate]] = {}
    for candidate in summary.candidates:
        if candidate.stage is None and candidate.task is not None:
            by_generation.setdefault(candidate.task.generation, []).append(candidate)
    folder = Path(tasks_dir).absolute()
    written: dict[int, Path] = {}
    for generation, candidates in sorted(by_generation.items()):
        stem = f"synth-{summary.batch}-g{generation}"
        target = folder / f"{stem}.jsonl"
        rerun = 1
        while target.exists() or str(target) in taken:
            rerun += 1
            target = folder / f"{stem}-r{rerun}.jsonl"
        write_text_atomically(target, "".join(f"{candidate.line}\n" for candidate in candidates))
        written[generation] = target
    return written


def _partition_rows(lake: Lake, table: str, batch: str) -> list[dict[str, Any]]:
    """The rows of ``table``'s partition ``batch`` as they are stored (without the ``batch`` column)."""
    with lake.connect() as connection:
        return named(connection.execute(f"SELECT * EXCLUDE (batch) FROM {table} WHERE batch = ?", [batch]))


def _store(
    lake: Lake,
    summary: SynthesisSummary,
    created_at: datetime,
    files: dict[int, Path],
    earlier_accepted: list[dict[str, Any]],
) -> None:
    """The batch's partitions become their earlier rows plus this materialisation's: the lake
    replaces a partition whole, so keeping what an earlier run accepted (and spent) is done here."""
    accepted, rejects = [], []
    for candidate in summary.candidates:
        job, task = candidate.job, candidate.task
        common: dict[str, Any] = {
            "task_type": (task.task_type if task else job.parents[0].task_type).value,
            "mutation": job.operator,
            "parent_task_ids": [parent.task_id for parent in job.parents],
            "essence_ids": [essence.essence_id for essence in job.essences],
            "tokens": candidate.tokens,
            "created_at": created_at,
        }
        if candidate.stage is None and task is not None and candidate.line is not None:
            accepted.append(
                {
                    **common,
                    "task_id": task.task_id,
                    "generation": task.generation,
                    "description": task.description,
                    "task": candidate.line,
                    "task_file": str(files[task.generation]),
                }
            )
        else:
            rejects.append(
                {
                    **common,
                    "candidate_id": task.task_id if task else None,
                    "stage": candidate.stage,
                    "reason": candidate.reason,
                    # A candidate with a valid line has a bounded text; any other, the model's text.
                    "description": task.description if task and candidate.line else _preview(candidate.description),
                    "task": candidate.line,
                }
            )
    earlier_rejects = _partition_rows(lake, "synthesis_rejects", summary.batch)
    lake.write_partition("synthesized_tasks", summary.batch, [*earlier_accepted, *accepted])
    lake.write_partition("synthesis_rejects", summary.batch, [*earlier_rejects, *rejects])


def _preview(text: str | None) -> str | None:
    """At most RAW_PREVIEW_CHARS of a text that was not accepted as a task (as ingest keeps of a
    rejected line), with anything that is not UTF-8 escaped: a model's text may be neither short
    nor valid."""
    if text is None:
        return None
    return text[:RAW_PREVIEW_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")


def _oracle(settings: Settings) -> Settings:
    """The settings that replay reference solutions: how candidates are self-checked."""
    return settings.model_copy(update={"policy": "oracle"})

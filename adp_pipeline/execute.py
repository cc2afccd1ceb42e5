"""Run one batch's tasks and store their trajectories: the work behind the ``trajectories`` asset."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from adp_pipeline.checkpoint import Checkpoint, RunIdentity, open_checkpoint, remove_output_leftovers
from adp_pipeline.faults import fault_point
from adp_pipeline.storage import Lake
from adp_pipeline.storage.rows import TASK_COLUMNS, select, task_from_row
from runtimes import scale
from runtimes.agent import AgentLimits, stream_tasks
from runtimes.core import TaskSpec, TaskType, Trajectory
from runtimes.settings import Settings

_READ_ROWS = 1000
_READ_MEMORY_MB = 256
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TypeOutcome:
    tasks: int
    succeeded: int  # verified successes: the ``trajectories`` view's ``verified_success``

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.tasks if self.tasks else 0.0


@dataclass(frozen=True)
class ExecuteSummary:
    batch: str
    policy: str
    by_type: dict[str, TypeOutcome]
    error_types: dict[str, int]
    llm_calls: int
    llm_retries: int


@dataclass(frozen=True)
class BatchProgress:
    """Where a running batch stands: said when it starts and after each committed chunk."""

    batch: str
    total: int  # accepted tasks
    resumed: int  # done by an earlier run of the batch that crashed
    done: int  # resumed + done by this run, committed
    succeeded: int  # verified successes among this run's committed ones
    chunks: int


def iter_tasks(lake: Lake, batch: str, skip: set[str] | frozenset[str] = frozenset()) -> Iterator[TaskSpec]:
    """The accepted tasks of ``batch`` not in ``skip``, read from the lake a chunk at a time."""
    with lake.connect(settings={"memory_limit": f"{_READ_MEMORY_MB}MB"}) as connection:
        # One partition is one file, read in its (file) order: no sort of wide rows.
        reader = connection.sql(f"SELECT {select(TASK_COLUMNS)} FROM tasks WHERE batch = ?", params=[batch])
        reader = reader.to_arrow_reader(_READ_ROWS)
        for chunk in reader:
            for row in chunk.to_pylist():
                if row["task_id"] not in skip:
                    yield task_from_row(row)


def count_tasks(lake: Lake, batch: str) -> int:
    with lake.connect() as connection:
        (count,) = connection.execute("SELECT count(*) FROM tasks WHERE batch = ?", [batch]).fetchone() or (0,)
    return int(count)


def run_identity(settings: Settings) -> RunIdentity:
    """What a re-run must share with a crashed run to resume it."""
    return RunIdentity(settings.policy, settings.llm_model if settings.policy == "llm" else None, settings.token_budget)


def execute_batch(
    lake: Lake,
    batch: str,
    settings: Settings,
    on_done: Callable[[Trajectory], None] | None = None,
    *,
    fresh: bool = False,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> ExecuteSummary:
    """Run the tasks of ``batch`` with ``settings.policy`` and replace its trajectories and steps.

    Tasks stream from the lake and trajectories leave memory once committed: finished ones are
    committed in chunks (every ADP_COMMIT_EVERY_TASKS tasks or ADP_COMMIT_EVERY_SECONDS) to the
    batch's working area, then the batch goes into the lake at once. A run that finds committed
    chunks of a crashed run with the same policy, model and token budget runs only the tasks
    they lack (``fresh``: start over).

    Raises:
        BatchBusyError: another process is running ``batch``.
    """
    output = settings.output_dir / "trajectories"
    with open_checkpoint(lake, batch, run_identity(settings), fresh=fresh) as checkpoint:
        remove_output_leftovers(output, batch)  # under the batch's lock: never a running run's files
        total = count_tasks(lake, batch)
        succeeded = 0
        state = {"flushed_at": time.monotonic()}

        def say() -> None:
            if on_progress is not None:
                on_progress(BatchProgress(batch, total, checkpoint.resumed, len(checkpoint.done) - checkpoint.pending,
                                          succeeded, checkpoint.chunks))  # fmt: skip

        def flush() -> None:
            checkpoint.flush(output)
            state["flushed_at"] = time.monotonic()
            say()

        def done(trajectory: Trajectory) -> None:
            nonlocal succeeded
            if trajectory.task_id in checkpoint.done:
                return  # a second result for a task (a redelivery): the first one counts
            checkpoint.add(trajectory)
            succeeded += trajectory.success and bool(trajectory.verifier and trajectory.verifier.passed)
            if on_done is not None:
                on_done(trajectory)
            if (
                checkpoint.pending >= settings.commit_every_tasks
                or time.monotonic() - state["flushed_at"] >= settings.commit_every_seconds
            ):
                flush()

        say()
        run_task_stream(batch, iter_tasks(lake, batch, skip=frozenset(checkpoint.done)), settings, done, checkpoint)
        flush()
        checkpoint.commit()
    return summarise(lake, batch, settings.policy)


def summarise(lake: Lake, batch: str, policy: str) -> ExecuteSummary:
    """The batch's outcome as the lake's view counts it: one definition of a verified success."""
    with lake.connect() as connection:
        counted = connection.execute(
            "SELECT task_type, count(*), count(*) FILTER (WHERE verified_success) FROM trajectories "
            "WHERE batch = ? GROUP BY 1",
            [batch],
        ).fetchall()
        errors = connection.execute(
            "SELECT error_type, count(*) FROM trajectories WHERE batch = ? AND error_type IS NOT NULL GROUP BY 1",
            [batch],
        ).fetchall()
        calls, retries = connection.execute(
            "SELECT coalesce(sum(llm_calls), 0), coalesce(sum(llm_retries), 0) FROM trajectories WHERE batch = ?",
            [batch],
        ).fetchone() or (0, 0)
    outcomes = {task_type: TypeOutcome(n, verified) for task_type, n, verified in counted}
    by_type = {task_type.value: outcomes.get(task_type.value, TypeOutcome(0, 0)) for task_type in TaskType}
    return ExecuteSummary(
        batch=batch,
        policy=policy,
        by_type=by_type,
        error_types={str(kind): int(n) for kind, n in errors},
        llm_calls=int(calls),
        llm_retries=int(retries),
    )


def run_task_specs(
    batch: str, tasks: list[TaskSpec], settings: Settings, on_done: Callable[[Trajectory], None] | None = None
) -> list[Trajectory]:
    """One trajectory per task, in order, with ``settings.policy``: in this process (local mode)
    or on `adp worker`s (redis mode, under ``batch``'s result stream). Nothing is stored."""
    results: dict[str, Trajectory] = {}

    def keep(trajectory: Trajectory) -> None:
        results.setdefault(trajectory.task_id, trajectory)
        if on_done is not None:
            on_done(trajectory)

    run_task_stream(batch, iter(tasks), settings, keep, None)
    return [results[task.task_id] for task in tasks]


def run_task_stream(
    batch: str,
    tasks: Iterator[TaskSpec],
    settings: Settings,
    on_done: Callable[[Trajectory], None],
    checkpoint: Checkpoint | None,
) -> None:
    """Run ``tasks`` as they come with ``settings.policy``, handing each trajectory to
    ``on_done``: in this process (local mode) or on `adp worker`s (redis mode)."""
    if settings.mode == "redis":
        _run_on_workers(batch, tasks, settings, on_done, checkpoint)
    else:
        asyncio.run(_run(tasks, settings, on_done))


async def _run(tasks: Iterator[TaskSpec], settings: Settings, on_done: Callable[[Trajectory], None]) -> None:
    sandbox = settings.sandbox_config.build(settings.max_concurrent_tasks)
    limits = AgentLimits(token_budget=settings.token_budget)
    browser = settings.browser_config.build()
    following: list[TaskSpec] = []  # the mock policy's server scripts itself from the tasks it is given

    def feed() -> Iterator[TaskSpec]:
        for task in tasks:
            if settings.policy == "mock":
                following.append(task)
            yield task

    try:
        async with settings.policy_config.open(settings.policy, following) as policy:
            await stream_tasks(
                feed(),
                policy,
                sandbox,
                max_concurrent=settings.max_concurrent_tasks,
                limits=limits,
                on_done=lambda _, trajectory: on_done(trajectory),
                browser=browser,
            )
    finally:
        await sandbox.aclose()
        await browser.aclose()


def _run_on_workers(
    batch: str,
    tasks: Iterator[TaskSpec],
    settings: Settings,
    on_done: Callable[[Trajectory], None],
    checkpoint: Checkpoint | None,
) -> None:
    """Enqueue the batch for `adp worker`s and collect one trajectory per task.

    The result stream is the checkpoint: with a ``checkpoint`` whose run is the batch's current
    run on the queue (a resumed attempt), the results workers already published are handed to
    ``on_done`` and only the tasks that are neither done nor on the queue are enqueued. To know
    which those are, this reads the batch's whole ordered task stream (``tasks`` is then not
    used: the tasks an earlier attempt enqueued are a prefix of it). Results of another run are
    ignored, and once a chunk is committed the results it holds are trimmed off the stream.

    Raises:
        DeadlineError: not every task had a result within ADP_REDIS_DEADLINE.
    """
    config = scale.BrokerConfig.from_settings(settings)
    client = config.connect()
    if checkpoint is None:  # nothing to resume into: a run of its own
        run = scale.BatchRun.open(client, batch, uuid.uuid4().hex)
        ordered: Iterator[TaskSpec] = tasks
        done: set[str] = set()
    else:
        run = scale.BatchRun.open(client, batch, checkpoint.run_key)
        ordered, done = iter_tasks(checkpoint.lake, batch), checkpoint.done
        if run.enqueued and _task_at(checkpoint.lake, batch, run.enqueued - 1) != run.last:
            # The batch's tasks are not in the order the earlier attempt enqueued them (they
            # should be: one partition, one file). Enqueue every task not done again: some may
            # run twice, none is lost, the first result of each counts.
            _log.warning("batch %s: task order changed since it was enqueued; enqueueing again", batch)
            run.restart()
    committed_chunks = checkpoint.chunks if checkpoint is not None else 0

    def hand(trajectory: Trajectory) -> None:
        nonlocal committed_chunks
        on_done(trajectory)
        if checkpoint is not None and checkpoint.chunks != committed_chunks and checkpoint.pending == 0:
            committed_chunks = checkpoint.chunks
            reader.forget_read()  # every result read so far is committed in the working area

    reader = run.results(hand)
    enqueued_before = run.enqueued

    def missing() -> Iterator[tuple[int, TaskSpec]]:
        """The tasks without a result yet, numbered by position; those an earlier attempt
        enqueued are expected, not yielded. No result is read before they are all expected."""
        for position, task in enumerate(ordered):
            if task.task_id in done:
                continue
            reader.expect(task.task_id)
            if position >= enqueued_before:
                yield position, task

    def after_chunk() -> None:
        fault_point("redis:enqueued")
        reader.drain()  # commit what is done while the rest is being enqueued

    run.enqueue(missing(), settings.policy, after_chunk)
    reader.wait(config.deadline)


def _task_at(lake: Lake, batch: str, position: int) -> str | None:
    """The id of the task at ``position`` of the batch's ordered task stream."""
    return next((task.task_id for task in itertools.islice(iter_tasks(lake, batch), position, None)), None)

"""Redis Streams as the task queue: enqueue, consume, ack, reclaim, dead-letter, collect.

Tasks go to ``tasks:code`` / ``tasks:web`` / ``tasks:reasoning`` (the seeds' names), read by
the consumer group ``workers``. A worker acks a message only after it has published the
trajectory on the batch's result stream ``results:<batch>``, so delivery is at least once:
a message whose worker died stays pending and is reclaimed (XAUTOCLAIM) once idle past the
task's timeout plus a grace period; after ``max_deliveries`` deliveries it ends as a
classified failure on the result stream and in ``tasks:dead`` — never silently. The
collector keeps the first result per task, so a result delivered twice is stored once.

A run of a batch has a key (``run_key``) that its messages and results carry. ``run:<batch>``
says which run is the batch's current one and how far its enqueueing got, written in the same
MULTI as each chunk of XADDs: a re-run with the same key (a resumed attempt) reads the results
already published and enqueues only the rest; results of another run are ignored, and workers
skip the queued tasks of a run that was superseded (:class:`BatchRun`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis
from pydantic import BaseModel, ValidationError

from runtimes.core import DeadlineError, ErrorType, MalformedMessageError, TaskSpec, TaskType, Trajectory
from runtimes.llm import POLICY_NAMES
from runtimes.settings import Settings

GROUP = "workers"
# What stream reads return with decode_responses=True (redis-py types them for bytes too).
_Messages = list[tuple[str, dict[str, str]]]
_Streams = list[tuple[str, _Messages]] | None
DEAD_LETTERS = "tasks:dead"
ENQUEUE_CHUNK = 500  # XADDs per pipeline: one round trip, and the unit of enqueue progress
_READ_COUNT = 500
_RUN_KEY = re.compile(r"[0-9A-Za-z_-]{1,64}")


def task_stream(task_type: TaskType | str) -> str:
    return f"tasks:{TaskType(task_type).value}"


def result_stream(batch: str) -> str:
    return f"results:{batch}"


def run_state(batch: str) -> str:
    """The hash naming the batch's current run (``run``) and how far its enqueueing got."""
    return f"run:{batch}"


@dataclass(frozen=True)
class Delivery:
    """One task handed to a worker."""

    stream: str
    message_id: str
    batch: str
    policy: str
    task: TaskSpec
    deliveries: int
    run: str = ""  # the run_key of the run that enqueued it; "" from an enqueuer that gave none


class BrokerConfig(BaseModel):
    """Where the queue is and how it treats silent workers (REDIS_URL, ADP_RECLAIM_GRACE, ...)."""

    url: str = "redis://127.0.0.1:6379/0"
    reclaim_grace: float = 30.0
    max_deliveries: int = 3
    deadline: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> BrokerConfig:
        return cls(
            url=settings.redis_url,
            reclaim_grace=settings.reclaim_grace,
            max_deliveries=settings.max_deliveries,
            deadline=settings.redis_deadline,
        )

    def connect(self) -> redis.Redis:
        """The one connection factory: `adp run --mode redis` and `adp worker` connect here."""
        return connect(self.url)

    def consumer(self, client: redis.Redis, task_type: TaskType, name: str) -> Consumer:
        return Consumer(client, task_type, name, grace=self.reclaim_grace, max_deliveries=self.max_deliveries)


def connect(url: str) -> redis.Redis:
    # A foreign message's bytes need not be UTF-8: they are read (and dead-lettered), not fatal.
    return redis.Redis.from_url(
        url, decode_responses=True, encoding_errors="replace", socket_timeout=30, health_check_interval=10
    )


def ensure_group(client: redis.Redis, stream: str, start: str = "0") -> None:
    """Create the workers' group on ``stream`` (and the stream), reading from after ``start``."""
    try:
        client.xgroup_create(stream, GROUP, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # the group exists: Redis says so only in words
            raise


def missing_group(error: redis.RedisError) -> bool:
    """Whether Redis refused because the consumer group (or its stream) is gone, e.g. deleted
    by an operator: it says so only in words."""
    return isinstance(error, redis.ResponseError) and str(error).startswith("NOGROUP")


def _task_fields(batch: str, policy: str, run_key: str, task: TaskSpec) -> dict[Any, Any]:
    fields: dict[Any, Any] = {"batch": batch, "policy": policy, "task": task.model_dump_json()}
    if run_key:
        fields["run"] = run_key
    fields["enqueued_at"] = str(time.time())
    return fields


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def enqueue(client: redis.Redis, batch: str, tasks: Iterable[TaskSpec], policy: str, *, run_key: str = "") -> int:
    """Put every task on its type's stream, with the batch, the policy the run chose and the
    run's key, a pipeline of :data:`ENQUEUE_CHUNK` XADDs at a time (``tasks`` may be an
    iterator of any length). Returns how many. A resumable run enqueues with :class:`BatchRun`."""
    enqueued = 0
    groups: set[str] = set()
    for chunk in _chunks(tasks, ENQUEUE_CHUNK):
        pipe = client.pipeline(transaction=False)
        for task in chunk:
            stream = task_stream(task.task_type)
            if stream not in groups:
                ensure_group(client, stream)
                groups.add(stream)
            pipe.xadd(stream, _task_fields(batch, policy, run_key, task))
        pipe.execute()
        enqueued += len(chunk)
    return enqueued


class BatchRun:
    """One run of a batch on the queue, resumable across attempts of the dispatcher.

    ``run:<batch>`` holds the batch's current run key, ``enqueued`` (how many tasks of the
    batch's ordered task stream are on the queue: the position after the last one enqueued) and
    ``last`` (that task's id, to check the order on resume). It is written in the same MULTI as
    each chunk of XADDs, so it never says more or less than what the streams hold, and it goes
    with them if Redis loses its data.
    """

    def __init__(self, client: redis.Redis, batch: str, run_key: str, enqueued: int, last: str) -> None:
        self.client = client
        self.batch = batch
        self.run_key = run_key
        self.enqueued = enqueued
        self.last = last

    @classmethod
    def open(cls, client: redis.Redis, batch: str, run_key: str) -> BatchRun:
        """Resume ``run_key`` if it is the batch's current run; otherwise make it the current run:
        the results of the one before are deleted, and workers skip its tasks still queued.

        Raises:
            ValueError: ``run_key`` is not 1-64 letters, digits, ``-`` or ``_``.
        """
        if not _RUN_KEY.fullmatch(run_key):
            raise ValueError(f"run key {run_key!r}: 1-64 letters, digits, - or _")
        state = cast(dict[str, str], client.hgetall(run_state(batch)))
        if state.get("run") == run_key:
            return cls(client, batch, run_key, int(state.get("enqueued") or 0), state.get("last", ""))
        run = cls(client, batch, run_key, 0, "")
        run.restart()
        return run

    def restart(self) -> None:
        """Start the run's enqueueing (and its results) from nothing."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(result_stream(self.batch), run_state(self.batch))
        pipe.hset(run_state(self.batch), mapping={"run": self.run_key, "enqueued": 0, "last": ""})
        pipe.execute()
        self.enqueued, self.last = 0, ""

    def enqueue(
        self,
        tasks: Iterable[tuple[int, TaskSpec]],
        policy: str,
        after_chunk: Callable[[], None] | None = None,
    ) -> int:
        """Enqueue ``tasks``, each numbered by its position in the batch's ordered task stream
        (increasing), in MULTI chunks that also record the progress; ``after_chunk`` runs after
        each. Returns how many were enqueued."""
        enqueued = 0
        groups: set[str] = set()
        for chunk in _chunks(tasks, ENQUEUE_CHUNK):
            pipe = self.client.pipeline(transaction=True)
            for _, task in chunk:
                stream = task_stream(task.task_type)
                if stream not in groups:
                    ensure_group(self.client, stream)  # outside the MULTI: it may answer BUSYGROUP
                    groups.add(stream)
                pipe.xadd(stream, _task_fields(self.batch, policy, self.run_key, task))
            position, last = chunk[-1][0] + 1, chunk[-1][1].task_id
            pipe.hset(run_state(self.batch), mapping={"enqueued": position, "last": last})
            pipe.execute()
            self.enqueued, self.last = position, last
            enqueued += len(chunk)
            if after_chunk is not None:
                after_chunk()
        return enqueued

    def results(self, on_result: Callable[[Trajectory], None]) -> ResultReader:
        return ResultReader(self.client, self.batch, self.run_key, on_result)


class Consumer:
    """One worker's view of a task stream.

    Args:
        client: the Redis connection.
        task_type: which stream to consume.
        name: this consumer's unique name in the group.
        grace: seconds past a task's timeout before its message counts as abandoned.
        max_deliveries: deliveries after which a task is dead-lettered as a failure.
    """

    def __init__(
        self, client: redis.Redis, task_type: TaskType, name: str, *, grace: float = 30.0, max_deliveries: int = 3
    ) -> None:
        self.client = client
        self.stream = task_stream(task_type)
        self.name = name
        self.grace = grace
        self.max_deliveries = max_deliveries
        self.last_id = "0"  # the newest message this consumer took from the stream
        self.superseded = 0  # tasks of a superseded run acked without running
        ensure_group(client, self.stream)

    def next(self, block_ms: int = 1000) -> Delivery | None:
        """An abandoned message reclaimed from a dead worker, else a new one, else None."""
        delivery = self._reclaim() or self._read(block_ms)
        if delivery is not None and self._superseded(delivery):
            self.client.xack(self.stream, GROUP, delivery.message_id)
            self.superseded += 1
            return None
        return delivery

    def _read(self, block_ms: int) -> Delivery | None:
        answer = cast(_Streams, self.client.xreadgroup(GROUP, self.name, {self.stream: ">"}, count=1, block=block_ms))
        for _, messages in answer or []:
            for message_id, fields in messages:
                self.last_id = message_id
                try:
                    return self._delivery(message_id, fields, deliveries=1)
                except MalformedMessageError as exc:
                    self._reject(message_id, fields, str(exc))
        return None

    def _superseded(self, delivery: Delivery) -> bool:
        """Whether the task's run is no longer its batch's current run (a fresh run, another
        policy, started since): its result would be ignored, so it is not run. A message of no
        run, or of a batch with no recorded run, is run."""
        if not delivery.run:
            return False
        current = cast(str | None, self.client.hget(run_state(delivery.batch), "run"))
        return current is not None and current != delivery.run

    def publish(self, delivery: Delivery, trajectory: Trajectory) -> None:
        """Publish the trajectory, then ack: a crash in between means a second delivery, not a loss."""
        self.client.xadd(
            result_stream(delivery.batch),
            {
                "task_id": trajectory.task_id,
                "trajectory": trajectory.model_dump_json(),
                "worker": self.name,
                "run": delivery.run,
            },
        )
        self.client.xack(self.stream, GROUP, delivery.message_id)

    def recreate_group(self) -> None:
        """Create the group again after it vanished, reading on from the last message this
        consumer took (the whole stream if it took none): a message taken since by another
        worker may run twice (the first result wins), none is skipped that came after it."""
        ensure_group(self.client, self.stream, self.last_id)

    def pending(self) -> int:
        info = self.client.xpending(self.stream, GROUP)
        return int(info["pending"]) if info else 0

    def _reclaim(self) -> Delivery | None:
        # A message is abandoned once idle past its own task's timeout plus the grace: a live
        # worker finishes (or times out) any task before then. XCLAIM re-checks the idle time
        # atomically, so two workers never both take the same message.
        pending = cast(
            list[dict[str, Any]],
            self.client.xpending_range(self.stream, GROUP, min="-", max="+", count=50, idle=int(self.grace * 1000)),
        )
        for entry in pending:
            message_id = entry["message_id"]
            found = cast(_Messages, self.client.xrange(self.stream, message_id, message_id))
            if not found:
                self.client.xack(self.stream, GROUP, message_id)  # trimmed away: nothing to run
                continue
            try:
                task = self._delivery(message_id, found[0][1], 0).task
            except MalformedMessageError as exc:
                self._reject(message_id, found[0][1], str(exc))
                continue
            abandoned_after_ms = int((task.timeout + self.grace) * 1000)
            if entry["time_since_delivered"] < abandoned_after_ms:
                continue
            claimed = cast(
                _Messages, self.client.xclaim(self.stream, GROUP, self.name, abandoned_after_ms, [message_id])
            )
            if not claimed or not claimed[0][1]:
                continue  # another worker was faster
            delivery = self._delivery(message_id, claimed[0][1], int(entry["times_delivered"]) + 1)
            if delivery.deliveries > self.max_deliveries:
                self._dead_letter(delivery)
                continue
            return delivery
        return None

    def _dead_letter(self, delivery: Delivery) -> None:
        message = (
            f"delivered {delivery.deliveries} times (max {self.max_deliveries}) without a result: "
            "the workers running it died or hung"
        )
        trajectory = Trajectory.failed(
            delivery.task, ErrorType.SYSTEM_ERROR, message, policy=delivery.policy, attempts=delivery.deliveries
        )
        self.client.xadd(DEAD_LETTERS, {"batch": delivery.batch, "task_id": delivery.task.task_id, "reason": message})
        self.publish(delivery, trajectory)

    def _delivery(self, message_id: str, fields: dict[str, str], deliveries: int) -> Delivery:
        """The delivery a message carries.

        Raises:
            MalformedMessageError: a field is missing or invalid (a foreign or hand-written message).
        """
        missing = [name for name in ("batch", "policy", "task") if not fields.get(name)]
        if missing:
            raise MalformedMessageError(f"missing {', '.join(missing)}; adp task messages carry batch, policy, task")
        if fields["policy"] not in POLICY_NAMES:
            raise MalformedMessageError(f"unknown policy {fields['policy']!r}; one of {', '.join(POLICY_NAMES)}")
        try:
            task = TaskSpec.model_validate_json(fields["task"])
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "task"
            raise MalformedMessageError(f"invalid task: {where}: {first['msg']}") from None
        if task_stream(task.task_type) != self.stream:
            raise MalformedMessageError(f"a {task.task_type} task on {self.stream}")
        run = fields.get("run", "")
        if run and not _RUN_KEY.fullmatch(run):
            raise MalformedMessageError(f"invalid run {run[:80]!r}: 1-64 letters, digits, - or _")
        return Delivery(self.stream, message_id, fields["batch"], fields["policy"], task, deliveries, run)

    def _reject(self, message_id: str, fields: dict[str, str], reason: str) -> None:
        """Dead-letter a message no worker can run, with the reason, and ack it: the worker goes on."""
        self.client.xadd(
            DEAD_LETTERS,
            {"stream": self.stream, "message_id": message_id, "reason": reason, "fields": json.dumps(fields)[:10_000]},
        )
        self.client.xack(self.stream, GROUP, message_id)


class ResultReader:
    """Reads ``results:<batch>`` from its start and hands ``on_result`` the first result of each
    expected task (:meth:`expect`) published by the run ``run_key`` (``None``: by any run).
    Results of another run, or without a run key when one is wanted, are counted in ``ignored``
    and never handed; a second result of a task is dropped. Keeps task ids, not trajectories."""

    def __init__(
        self, client: redis.Redis, batch: str, run_key: str | None, on_result: Callable[[Trajectory], None]
    ) -> None:
        self.client = client
        self.batch = batch
        self.run_key = run_key
        self.on_result = on_result
        self.outstanding: set[str] = set()  # expected, no result yet
        self.expected = 0
        self.handed = 0
        self.ignored = 0
        self.last_id = "0-0"  # the newest result read

    def expect(self, task_id: str) -> None:
        if task_id not in self.outstanding:
            self.outstanding.add(task_id)
            self.expected += 1

    def read(self, block_ms: int | None = None) -> int:
        """Read the next results (waiting up to ``block_ms`` for one; ``None``: not at all).
        Returns how many messages were read."""
        answer = cast(
            _Streams, self.client.xread({result_stream(self.batch): self.last_id}, count=_READ_COUNT, block=block_ms)
        )
        read = 0
        for _, messages in answer or []:
            for message_id, fields in messages:
                self.last_id = message_id
                read += 1
                if self.run_key is not None and fields.get("run") != self.run_key:
                    self.ignored += 1
                    continue
                task_id = fields.get("task_id", "")
                if task_id in self.outstanding:
                    trajectory = Trajectory.model_validate_json(fields["trajectory"])
                    self.outstanding.discard(task_id)
                    self.handed += 1
                    self.on_result(trajectory)
        return read

    def drain(self) -> None:
        """Read every result published so far."""
        while self.read():
            pass

    def wait(self, deadline_s: float) -> None:
        """Read until every expected task has its result.

        Raises:
            DeadlineError: ``deadline_s`` passed first.
        """
        stop_at = time.monotonic() + deadline_s
        while self.outstanding:
            remaining = stop_at - time.monotonic()
            if remaining <= 0:
                raise DeadlineError(self._missing_message(deadline_s))
            try:
                self.read(int(min(remaining, 1.0) * 1000) or 1)
            except redis.ConnectionError:  # Redis restarting; results are in its AOF
                time.sleep(0.2)

    def forget_read(self) -> None:
        """Trim the results read so far off the stream: call it once every result handed has been
        committed elsewhere, so that the stream holds only what is not (Redis memory stays
        bounded by the commit interval, not the batch)."""
        milliseconds, _, sequence = self.last_id.partition("-")
        self.client.xtrim(result_stream(self.batch), minid=f"{milliseconds}-{int(sequence or 0) + 1}")

    def _missing_message(self, deadline_s: float) -> str:
        queues = {stream: self.client.xlen(stream) for stream in (task_stream(t) for t in TaskType)}
        ignored = (
            f"; {self.ignored} results of other runs ignored (or without a run key: workers older than this adp?)"
            if self.ignored
            else ""
        )
        return (
            f"{len(self.outstanding)} of {self.expected} tasks of batch {self.batch} have no result after "
            f"{deadline_s:g} s; are `adp worker` processes running against this REDIS_URL? "
            f"queue lengths: {json.dumps(queues)}{ignored}"
        )


def collect(
    client: redis.Redis,
    batch: str,
    task_ids: Iterable[str],
    *,
    deadline_s: float,
    run_key: str | None = None,
    on_result: Callable[[Trajectory], None] | None = None,
) -> int:
    """Read ``results:<batch>`` until every task has a trajectory (the first one wins), handing
    each to ``on_result``; only results of the run ``run_key`` count, if given. Keeps no
    trajectory. Returns how many were handed.

    Raises:
        DeadlineError: ``deadline_s`` passed first.
    """
    reader = ResultReader(client, batch, run_key, on_result or (lambda _: None))
    for task_id in task_ids:
        reader.expect(task_id)
    reader.wait(deadline_s)
    return reader.handed

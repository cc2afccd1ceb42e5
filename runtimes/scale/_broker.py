"""Redis Streams as the task queue: enqueue, consume, ack, reclaim, dead-letter, collect.

Tasks go to ``tasks:code`` / ``tasks:web`` / ``tasks:reasoning`` (the seeds' names), read by
the consumer group ``workers``. A worker acks a message only after it has published the
trajectory on the batch's result stream ``results:<batch>``, so delivery is at least once:
a message whose worker died stays pending and is reclaimed (XAUTOCLAIM) once idle past the
task's timeout plus a grace period; after ``max_deliveries`` deliveries it ends as a
classified failure on the result stream and in ``tasks:dead`` — never silently. The
collector keeps the first result per task, so a result delivered twice is stored once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
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


def task_stream(task_type: TaskType | str) -> str:
    return f"tasks:{TaskType(task_type).value}"


def result_stream(batch: str) -> str:
    return f"results:{batch}"


@dataclass(frozen=True)
class Delivery:
    """One task handed to a worker."""

    stream: str
    message_id: str
    batch: str
    policy: str
    task: TaskSpec
    deliveries: int


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


def enqueue(client: redis.Redis, batch: str, tasks: Sequence[TaskSpec], policy: str) -> int:
    """Put every task on its type's stream, with the batch and the policy the run chose."""
    pipe = client.pipeline(transaction=False)
    for stream in {task_stream(task.task_type) for task in tasks}:
        ensure_group(client, stream)
    for task in tasks:
        fields: dict[Any, Any] = {
            "batch": batch,
            "policy": policy,
            "task": task.model_dump_json(),
            "enqueued_at": str(time.time()),
        }
        pipe.xadd(task_stream(task.task_type), fields)
    pipe.execute()
    return len(tasks)


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
        ensure_group(client, self.stream)

    def next(self, block_ms: int = 1000) -> Delivery | None:
        """An abandoned message reclaimed from a dead worker, else a new one, else None."""
        reclaimed = self._reclaim()
        if reclaimed is not None:
            return reclaimed
        answer = cast(_Streams, self.client.xreadgroup(GROUP, self.name, {self.stream: ">"}, count=1, block=block_ms))
        for _, messages in answer or []:
            for message_id, fields in messages:
                self.last_id = message_id
                try:
                    return self._delivery(message_id, fields, deliveries=1)
                except MalformedMessageError as exc:
                    self._reject(message_id, fields, str(exc))
        return None

    def publish(self, delivery: Delivery, trajectory: Trajectory) -> None:
        """Publish the trajectory, then ack: a crash in between means a second delivery, not a loss."""
        self.client.xadd(
            result_stream(delivery.batch),
            {"task_id": trajectory.task_id, "trajectory": trajectory.model_dump_json(), "worker": self.name},
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
        return Delivery(self.stream, message_id, fields["batch"], fields["policy"], task, deliveries)

    def _reject(self, message_id: str, fields: dict[str, str], reason: str) -> None:
        """Dead-letter a message no worker can run, with the reason, and ack it: the worker goes on."""
        self.client.xadd(
            DEAD_LETTERS,
            {"stream": self.stream, "message_id": message_id, "reason": reason, "fields": json.dumps(fields)[:10_000]},
        )
        self.client.xack(self.stream, GROUP, message_id)


def collect(
    client: redis.Redis,
    batch: str,
    task_ids: Sequence[str],
    *,
    deadline_s: float,
    on_result: Callable[[Trajectory], None] | None = None,
) -> dict[str, Trajectory]:
    """Read ``results:<batch>`` until every task has a trajectory (the first one wins).

    Raises:
        DeadlineError: ``deadline_s`` passed first.
    """
    wanted = set(task_ids)
    results: dict[str, Trajectory] = {}
    last_id = "0-0"
    stop_at = time.monotonic() + deadline_s
    while wanted - results.keys():
        remaining = stop_at - time.monotonic()
        if remaining <= 0:
            missing = len(wanted - results.keys())
            queues = {stream: client.xlen(stream) for stream in (task_stream(t) for t in TaskType)}
            raise DeadlineError(
                f"{missing} of {len(wanted)} tasks of batch {batch} have no result after {deadline_s:g} s; "
                f"are `adp worker` processes running against this REDIS_URL? queue lengths: {json.dumps(queues)}"
            )
        try:
            answer = cast(
                _Streams,
                client.xread({result_stream(batch): last_id}, count=500, block=int(min(remaining, 1.0) * 1000)),
            )
        except redis.ConnectionError:  # Redis restarting; results are in its AOF
            time.sleep(0.2)
            continue
        for _, messages in answer or []:
            for message_id, fields in messages:
                last_id = message_id
                task_id = fields.get("task_id")
                if task_id in wanted and task_id not in results:
                    trajectory = Trajectory.model_validate_json(fields["trajectory"])
                    results[task_id] = trajectory
                    if on_result is not None:
                        on_result(trajectory)
    return results

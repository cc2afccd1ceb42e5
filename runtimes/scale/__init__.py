"""Scale-out on Redis Streams: the broker (enqueue, consume, ack, reclaim, dead-letter,
collect), the ``adp worker`` process that runs a stream's tasks, and its Prometheus metrics."""

from runtimes.scale._broker import (
    DEAD_LETTERS,
    GROUP,
    BrokerConfig,
    Consumer,
    Delivery,
    collect,
    connect,
    enqueue,
    ensure_group,
    result_stream,
    task_stream,
)
from runtimes.scale._metrics import WorkerMetrics
from runtimes.scale._worker import Worker, run_worker

__all__ = [
    "DEAD_LETTERS",
    "GROUP",
    "BrokerConfig",
    "Consumer",
    "Delivery",
    "Worker",
    "WorkerMetrics",
    "collect",
    "connect",
    "enqueue",
    "ensure_group",
    "result_stream",
    "run_worker",
    "task_stream",
]

"""Scale-out on Redis Streams: the broker (enqueue, consume, ack, reclaim, dead-letter,
collect), the ``adp worker`` process that runs a stream's tasks, and its Prometheus metrics."""

from runtimes.scale._broker import (
    DEAD_LETTERS,
    ENQUEUE_CHUNK,
    GROUP,
    BatchRun,
    BrokerConfig,
    Consumer,
    Delivery,
    ResultReader,
    collect,
    connect,
    enqueue,
    ensure_group,
    result_stream,
    run_state,
    task_stream,
)
from runtimes.scale._metrics import WorkerMetrics
from runtimes.scale._worker import Worker, run_worker

__all__ = [
    "DEAD_LETTERS",
    "ENQUEUE_CHUNK",
    "GROUP",
    "BatchRun",
    "BrokerConfig",
    "Consumer",
    "Delivery",
    "ResultReader",
    "Worker",
    "WorkerMetrics",
    "collect",
    "connect",
    "enqueue",
    "ensure_group",
    "result_stream",
    "run_state",
    "run_worker",
    "task_stream",
]

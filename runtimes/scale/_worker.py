"""``adp worker --runtime code|web|reasoning``: consume a task stream, run each task with the
same runtime code as local mode, publish its trajectory; serve /health and /metrics.

On SIGTERM it stops taking tasks, finishes those in flight, and exits (drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from typing import Any, cast

import redis

from runtimes.agent import TOOLS_BY_TYPE, AgentLimits, run_tasks
from runtimes.core import TaskSpec, TaskType, redact
from runtimes.llm import Policy
from runtimes.scale._broker import GROUP, BrokerConfig, Delivery, missing_group, task_stream
from runtimes.scale._metrics import WorkerMetrics, serve
from runtimes.settings import Settings

_QUEUE_GAUGE_EVERY = 5.0
_REDIS_RETRY = 0.5


class Worker:
    def __init__(self, task_type: TaskType, settings: Settings, name: str | None = None) -> None:
        self.task_type = task_type
        self.settings = settings
        self.name = name or f"{task_type.value}-{socket.gethostname()}-{os.getpid()}"
        self.metrics = WorkerMetrics()
        self.client = BrokerConfig.from_settings(settings).connect()
        self.consumer = BrokerConfig.from_settings(settings).consumer(self.client, task_type, self.name)
        uses_browser = "browser" in TOOLS_BY_TYPE[task_type]
        self.slots = settings.max_concurrent if uses_browser else settings.max_concurrent_tasks
        self.browser = settings.browser_config.build() if uses_browser else None
        self.sandbox = settings.sandbox_config.build(self.slots)
        self.mock_tasks: list[TaskSpec] = []  # what the mock policy's scripted server answers
        self.stop = asyncio.Event()
        self.started = time.time()
        self.last_poll = time.time()

    def health(self) -> dict[str, Any]:
        healthy = not self.stop.is_set() and time.time() - self.last_poll < 60
        return {
            "healthy": healthy,
            "worker": self.name,
            "runtime": self.task_type.value,
            "uptime": time.time() - self.started,
        }

    async def run(self) -> None:
        runtime = self.task_type.value
        if self.browser is not None:
            await self.browser.start()  # BrowserError: exit now, not fail every task
        self.metrics.runtime_health.labels(runtime).set(1)
        in_flight: set[asyncio.Task[None]] = set()
        async with contextlib.AsyncExitStack() as stack:
            policies: dict[str, Policy] = {}
            gauges = asyncio.create_task(self._update_queue_gauges())
            while not self.stop.is_set():
                if len(in_flight) >= self.slots:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                superseded = self.consumer.superseded
                try:
                    delivery = await asyncio.to_thread(self.consumer.next, 500)
                except redis.RedisError as exc:  # Redis restarting: wait for it, lose nothing
                    if missing_group(exc):
                        print(f"worker {self.name}: consumer group {GROUP} of {self.consumer.stream} is gone; "
                              "recreating it", flush=True)  # fmt: skip
                        with contextlib.suppress(redis.RedisError):  # Redis going away: the next poll says so
                            await asyncio.to_thread(self.consumer.recreate_group)
                        continue
                    self.metrics.runtime_health.labels(runtime).set(0)
                    print(redact(f"worker {self.name}: redis unavailable ({exc}); retrying"), flush=True)
                    await asyncio.sleep(_REDIS_RETRY)
                    continue
                self.metrics.runtime_health.labels(runtime).set(1)
                self.last_poll = time.time()
                if self.consumer.superseded > superseded:
                    self.metrics.tasks_superseded.labels(runtime).inc(self.consumer.superseded - superseded)
                if delivery is None:
                    continue
                if delivery.policy not in policies:
                    policies[delivery.policy] = await stack.enter_async_context(
                        self.settings.policy_config.open(delivery.policy, self.mock_tasks)
                    )
                if delivery.policy == "mock":
                    self.mock_tasks.append(delivery.task)
                job = asyncio.create_task(self._handle(delivery, policies[delivery.policy]))
                in_flight.add(job)
                job.add_done_callback(in_flight.discard)
            if in_flight:  # drain: finish what was taken, take nothing new
                await asyncio.wait(in_flight)
            gauges.cancel()
        self.metrics.runtime_health.labels(runtime).set(0)
        await self.sandbox.aclose()
        if self.browser is not None:
            await self.browser.aclose()

    async def _handle(self, delivery: Delivery, policy: Policy) -> None:
        runtime = self.task_type.value
        self.metrics.tasks_submitted.labels(runtime).inc()
        self.metrics.active_tasks.labels(runtime).inc()
        try:
            limits = AgentLimits(token_budget=self.settings.token_budget)
            (trajectory,) = await run_tasks(
                [delivery.task], policy, self.sandbox, max_concurrent=1, limits=limits, browser=self.browser
            )
            trajectory.attempts = max(trajectory.attempts, delivery.deliveries)
            trajectory.runtime_id = self.name
            try:
                await asyncio.to_thread(self.consumer.publish, delivery, trajectory)
            except redis.RedisError as exc:
                # Not acked, so the message stays pending and is reclaimed and run again.
                print(redact(f"worker {self.name}: cannot publish {delivery.task.task_id} ({exc})"), flush=True)
                return
            self.metrics.record(runtime, trajectory)
        finally:
            self.metrics.active_tasks.labels(runtime).dec()

    async def _update_queue_gauges(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._read_queue_state)
            await asyncio.sleep(_QUEUE_GAUGE_EVERY)

    def _read_queue_state(self) -> None:
        for task_type in TaskType:
            stream = task_stream(task_type)
            groups = {g["name"]: g for g in self.client.xinfo_groups(stream)} if self.client.exists(stream) else {}
            lag = groups.get(GROUP, {}).get("lag")
            self.metrics.queue_size.labels(task_type.value).set(lag if lag is not None else self.client.xlen(stream))
            oldest = cast(
                list[dict[str, Any]],
                self.client.xpending_range(stream, GROUP, min="-", max="+", count=1) if groups else [],
            )
            self.metrics.pending_lag.labels(task_type.value).set(
                oldest[0]["time_since_delivered"] / 1000 if oldest else 0
            )


def run_worker(task_type: TaskType, settings: Settings, name: str | None = None) -> None:
    """Run a worker until SIGTERM or SIGINT, then drain."""

    async def main() -> None:
        worker = Worker(task_type, settings, name)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop.set)
        server = serve(worker.metrics, worker.health, settings.metrics_host, settings.metrics_port)
        print(
            f"worker {worker.name} on {task_type.value}; metrics on http://{settings.metrics_host}:{server.server_port}",
            flush=True,
        )
        try:
            await worker.run()
        finally:
            server.shutdown()

    asyncio.run(main())

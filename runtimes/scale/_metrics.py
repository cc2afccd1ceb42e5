"""Prometheus metrics of a worker (the seeds' names) and its /health and /metrics endpoints."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from runtimes.core import Trajectory, redact


class WorkerMetrics:
    """One registry per worker, so tests can run several in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks_submitted = Counter("tasks_submitted", "Tasks delivered to this worker.", ["runtime"], registry=r)
        self.tasks_completed = Counter(
            "tasks_completed", "Tasks finished, by outcome.", ["runtime", "status"], registry=r
        )
        self.tasks_failed = Counter(
            "tasks_failed", "Failed tasks by error type.", ["runtime", "error_type"], registry=r
        )
        self.tasks_superseded = Counter(
            "tasks_superseded",
            "Tasks of a superseded run of their batch (a fresh run, another policy), acked without running.",
            ["runtime"],
            registry=r,
        )
        self.task_duration = Histogram(
            "task_duration_seconds",
            "Wall time per task.",
            ["runtime"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.active_tasks = Gauge("active_tasks", "Tasks running now.", ["runtime"], registry=r)
        self.queue_size = Gauge("queue_size", "Messages not yet delivered, per stream.", ["queue"], registry=r)
        self.pending_lag = Gauge(
            "pending_lag_seconds", "Age of the oldest delivered but unacknowledged message.", ["queue"], registry=r
        )
        self.cache_hits = Counter("cache_hits", "LLM calls answered from the response cache.", registry=r)
        self.cache_misses = Counter("cache_misses", "LLM calls that went to the endpoint.", registry=r)
        self.runtime_health = Gauge("runtime_health", "1 while the worker is healthy.", ["runtime"], registry=r)
        self.llm_requests = Counter(
            "llm_requests", "HTTP requests to the LLM, retries included.", ["provider"], registry=r
        )
        self.llm_retries = Counter(
            "llm_retries", "LLM requests that did not give the answer (LLMCall.retries).", ["provider"], registry=r
        )
        self.llm_tokens = Counter("llm_tokens", "Tokens used.", ["kind"], registry=r)

    def record(self, runtime: str, trajectory: Trajectory) -> None:
        status = "success" if trajectory.success else "failure"
        self.tasks_completed.labels(runtime, status).inc()
        if trajectory.error_type is not None:
            self.tasks_failed.labels(runtime, trajectory.error_type.value).inc()
        self.task_duration.labels(runtime).observe(trajectory.total_duration)
        provider = redact(trajectory.provider or "unknown")  # a label is text people read, like a log line
        for call in trajectory.llm_calls:
            (self.cache_hits if call.cached else self.cache_misses).inc()
            self.llm_requests.labels(provider).inc(call.requests)
            self.llm_retries.labels(provider).inc(call.retries)
        self.llm_tokens.labels("prompt").inc(trajectory.usage.prompt_tokens)
        self.llm_tokens.labels("completion").inc(trajectory.usage.completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve(metrics: WorkerMetrics, health: Callable[[], dict[str, Any]], host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/health`` on ``host:port`` in a thread; returns the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, kind, code = metrics.render(), CONTENT_TYPE_LATEST, 200
            elif self.path == "/health":
                state = health()
                body, kind = json.dumps(state).encode(), "application/json"
                code = 200 if state.get("healthy") else 503
            else:
                body, kind, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server

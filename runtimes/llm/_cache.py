"""The LLM response cache (the seeds' "template cache"): identical requests are answered once.

A request's key is the SHA-256 of its canonical JSON (model, messages, tools, sampling
parameters), so rerunning an identical batch makes no LLM call at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Protocol

from runtimes.core import write_text_atomically


def request_key(request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, response: dict[str, Any]) -> None: ...


class FileResponseCache:
    """One JSON file per response under ``root``; entries older than ``ttl`` seconds are misses.

    Safe for concurrent processes: entries are written to a temporary name and renamed.
    """

    def __init__(self, root: Path, ttl: float) -> None:
        self.root = Path(root)
        self.ttl = ttl

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            if self.ttl > 0 and time.time() - path.stat().st_mtime > self.ttl:
                return None
            cached: dict[str, Any] = json.loads(path.read_text())
            return cached
        except (OSError, ValueError):
            return None

    def put(self, key: str, response: dict[str, Any]) -> None:
        write_text_atomically(self._path(key), json.dumps(response, ensure_ascii=False))

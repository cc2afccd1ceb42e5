"""File names derived from task ids: any script and length the task format allows, on any filesystem."""

from __future__ import annotations

import hashlib
import re

_READABLE_BYTES = 60  # of the id, in UTF-8; with the hash the name stays far below NAME_MAX (255 bytes)
_UNSAFE = re.compile(r"[^\w.-]+")


def task_file_stem(task_id: str) -> str:
    """``<readable prefix>-<sha256[:12]>``: unique per id, at most 73 bytes, one path component.

    A 200-character id in CJK is 600 bytes of UTF-8, over most filesystems' limit of 255, and an
    id may hold characters some filesystems refuse; the prefix keeps letters and digits of any
    script (so a listing stays readable) and the hash keeps ids apart.
    """
    readable = _UNSAFE.sub("_", task_id).strip("._-")
    prefix = readable.encode()[:_READABLE_BYTES].decode("utf-8", "ignore") or "task"
    return f"{prefix}-{hashlib.sha256(task_id.encode()).hexdigest()[:12]}"

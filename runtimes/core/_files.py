"""Writing files so that readers (another process, a sensor) never see half of one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_bytes_atomically(path: Path, data: bytes, *, temporary: Path | None = None, durable: bool = False) -> None:
    """Write ``data`` to ``temporary`` (by default a hidden file beside ``path``), then rename it
    into place: a reader sees the old file or the whole new one; the temporary file is removed
    if the write fails.

    The default temporary name starts with a dot, so folder watchers that skip hidden files (the
    task file sensor) never pick it up. ``durable``: the bytes are on disk before the file takes
    its name, so a power cut too leaves the old file or the whole new one, never an empty one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary or path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        temporary.write_bytes(data)
        if durable:
            fsync_file(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    """:func:`write_bytes_atomically` of ``text`` in UTF-8."""
    write_bytes_atomically(path, text.encode("utf-8"))


def fsync_file(path: Path) -> None:
    """``path``'s bytes on disk (before it is renamed into place: a power cut then leaves the old
    file or the whole new one under the name, never an empty one)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

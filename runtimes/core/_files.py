"""Writing files so that readers (another process, a sensor) never see half of one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to a hidden file beside ``path``, then rename it into place.

    The temporary name starts with a dot, so folder watchers that skip hidden files (the task
    file sensor) never pick it up; it is removed if the write fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)

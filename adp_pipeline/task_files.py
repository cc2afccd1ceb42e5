"""Task files as partitions: content-addressed registration, and the inbox the sensor scans.

A task file becomes the partition ``<stem>-<sha256[:8]>`` of its content. Registering copies
the bytes that were hashed into ``<data_dir>/task_files/<key>.jsonl``, so a partition always
re-materialises from exactly the content its key names, even after the original is edited,
moved or deleted. Only lines over ADP_MAX_TASK_LINE_BYTES are not copied: each is a placeholder
holding its number and size (:func:`runtimes.core.store_task_lines`), rejected at every
materialisation as the line itself was. The key still hashes every byte of the original.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from runtimes.core import DEFAULT_MAX_LINE_BYTES, TaskFileError, store_task_lines

TASK_FILE_SUFFIX = ".jsonl"
_STEM_MAX_CHARS = 64


@dataclass(frozen=True)
class RegisteredTaskFile:
    key: str
    path: Path
    source_path: str
    sha256: str
    size: int
    registered_at: str
    max_line_bytes: int | None = None
    """The size limit the copy was made under (None: registered before copies left lines out)."""
    lines_not_stored: int = 0
    """Lines over that limit, kept in the copy as placeholders: their number and size, not their bytes."""


def task_files_dir(data_dir: Path) -> Path:
    return Path(data_dir).absolute() / "task_files"


def partition_key_for(stem: str, sha256: str) -> str:
    """``<stem>-<sha8>``, the stem reduced to characters safe in paths, URLs and Dagster keys."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:_STEM_MAX_CHARS] or "tasks"
    return f"{safe}-{sha256[:8]}"


def register_task_file(
    path: Path, data_dir: Path, *, follow_symlinks: bool = True, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> RegisteredTaskFile:
    """Copy ``path`` into the data dir under its partition key and return the registration.

    The copy keeps the source's permissions (never more open than the source's), so a task
    file only its owner may read stays so in the data dir. Lines over ``max_line_bytes`` are
    read through but not copied (a placeholder keeps their number and size). The same content
    always registers to the same key; it is copied again only when the copy left lines out
    under a smaller ``max_line_bytes`` than this one, so raising the limit and registering the
    file again brings those lines back.

    Args:
        path: the task file.
        data_dir: ADP_DATA_DIR.
        follow_symlinks: False for files found in the inbox: a symlink there could point
            anywhere the sensor's user can read, so it is refused.
        max_line_bytes: ADP_MAX_TASK_LINE_BYTES.

    Raises:
        TaskFileError: ``path`` is missing, a symlink (when not followed), not a regular file
            (a FIFO, a device, a folder), or unreadable.
    """
    source = Path(path)
    store = task_files_dir(data_dir)
    temporary = store / f".{uuid.uuid4().hex}.partial"
    temporary_record = temporary.with_suffix(".record")
    try:
        flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
        try:
            fd = os.open(source, flags)
        except FileNotFoundError:
            raise TaskFileError(f"{source}: no such task file") from None
        except OSError:
            if not follow_symlinks and source.is_symlink():
                raise TaskFileError(f"{source}: a symlink; task files in the inbox must be regular files") from None
            raise
        with os.fdopen(fd, "rb") as reader:
            mode = os.fstat(reader.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise TaskFileError(f"{source}: not a regular file")
            os.set_blocking(reader.fileno(), True)
            store.mkdir(parents=True, exist_ok=True)
            permissions = stat.S_IMODE(mode) & 0o666
            writer_fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, permissions)
            os.fchmod(writer_fd, permissions)  # exactly the source's, whatever the umask
            with os.fdopen(writer_fd, "w+b") as writer:
                copied = store_task_lines(reader, writer, max_line_bytes=max_line_bytes)
        key = partition_key_for(source.stem, copied.sha256)
        stored = store / f"{key}{TASK_FILE_SUFFIX}"
        record = store / f"{key}.json"
        earlier = _read_record(record)
        if earlier is None or not stored.exists() or _copy_is_short(earlier, max_line_bytes):
            # Copy first, record second: the copy alone is what a materialisation reads.
            os.replace(temporary, stored)
            registration = {
                "key": key,
                "source_path": earlier.get("source_path") if earlier else str(source.absolute()),
                "sha256": copied.sha256,
                "size": copied.size,
                "registered_at": earlier.get("registered_at") if earlier else datetime.now(UTC).isoformat(),
                "max_line_bytes": max_line_bytes,
                "lines_not_stored": copied.lines_not_stored,
            }
            record_fd = os.open(temporary_record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, permissions)
            os.fchmod(record_fd, permissions)
            with os.fdopen(record_fd, "w") as writer:
                writer.write(json.dumps(registration, ensure_ascii=False, indent=2))
            os.replace(temporary_record, record)
    except OSError as exc:
        raise TaskFileError(f"{source}: cannot register task file: {exc.strerror or exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
        temporary_record.unlink(missing_ok=True)
    return registered_task_file(data_dir, key)


def _read_record(record: Path) -> dict[str, object] | None:
    try:
        fields = json.loads(record.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return fields if isinstance(fields, dict) else None


def _copy_is_short(record: dict[str, object], max_line_bytes: int) -> bool:
    """The stored copy lacks lines this limit would read, or predates copies that leave lines out."""
    made_under = record.get("max_line_bytes")
    if not isinstance(made_under, int):
        return True  # it may hold huge lines whole: store it bounded
    return bool(record.get("lines_not_stored")) and made_under < max_line_bytes


def registered_task_file(data_dir: Path, key: str) -> RegisteredTaskFile:
    """The registration of partition ``key``.

    Raises:
        TaskFileError: no task file was registered under ``key`` in this data dir.
    """
    store = task_files_dir(data_dir)
    record = store / f"{key}.json"
    try:
        fields = json.loads(record.read_text())
    except FileNotFoundError:
        raise TaskFileError(
            f"partition {key!r} has no registered task file in {store}; add task files with "
            "`adp run FILE` or by dropping them into TASKS_DIR, not by adding partitions by hand"
        ) from None
    return RegisteredTaskFile(path=store / f"{key}{TASK_FILE_SUFFIX}", **fields)


class InboxCursor(BaseModel):
    """What the sensor has already looked at: file name -> (mtime_ns, size)."""

    files: dict[str, tuple[int, int]] = Field(default_factory=dict)


def scan_inbox(
    tasks_dir: Path, cursor: InboxCursor, *, settle_seconds: float, now: float | None = None
) -> tuple[list[Path], InboxCursor]:
    """Task files in ``tasks_dir`` that are new or changed since ``cursor``, and the next cursor.

    A file counts by its own fingerprint, not against a high-water mark, so one that arrives
    with an older mtime (``cp -p``, ``rsync -t``, an unpacked archive) is still seen. Files
    modified less than ``settle_seconds`` ago are left for a later scan: they may still be
    being written. Hidden files are ignored, so writers can write ``.name.jsonl`` and rename;
    so are symlinks and anything but regular files.
    """
    now = time.time() if now is None else now
    seen: dict[str, tuple[int, int]] = {}
    changed: list[tuple[int, str, Path]] = []
    if not tasks_dir.is_dir():
        return [], InboxCursor()
    for entry in os.scandir(tasks_dir):
        # Symlinks and anything but regular files are ignored: a link could name any file the
        # sensor can read, and a FIFO would block it.
        if entry.name.startswith(".") or not entry.name.endswith(TASK_FILE_SUFFIX):
            continue
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            continue
        info = entry.stat(follow_symlinks=False)
        if now - info.st_mtime < settle_seconds:
            continue
        fingerprint = (info.st_mtime_ns, info.st_size)
        seen[entry.name] = fingerprint
        if cursor.files.get(entry.name) != fingerprint:
            changed.append((info.st_mtime_ns, entry.name, Path(entry.path)))
    return [path for _, _, path in sorted(changed)], InboxCursor(files=seen)

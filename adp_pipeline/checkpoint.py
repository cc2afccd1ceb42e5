"""A batch's work in progress: finished trajectories committed in chunks as the batch runs,
so that a crashed run loses at most the chunk in hand, and a re-run runs only what is missing.

Layout: ``<data_dir>/checkpoints/<batch>/`` holds ``run.json`` (what the run is: policy, model,
token budget, and the key that results of this run carry) and, per chunk, ``<n>.steps.parquet``
then ``<n>.trajectories.parquet``: the trajectories file, renamed into place last, is the
chunk's commit. The folder is the partition's working area, outside the lake: readers never see
it. When every task has its trajectory, :meth:`Checkpoint.commit` writes the batch into the lake
at once (:meth:`Lake.commit_batch`) and removes the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from adp_pipeline.faults import fault_point
from adp_pipeline.storage import Lake
from adp_pipeline.storage.names import task_file_stem
from adp_pipeline.storage.rows import step_rows, trajectory_row
from adp_pipeline.storage.tables import TABLES
from runtimes.core import AdpError, Trajectory, fsync_file, write_bytes_atomically

_RUN_FILE = "run.json"
_COMMIT_KEYS = ("committing", "committed")  # run.json: the lake commit under way, and the last that landed
_STEPS = ".steps.parquet"
_TRAJECTORIES = ".trajectories.parquet"
# The per-task JSON files keep the seeds' format: a screenshot is a lake file, not base64 in them.
_NO_SCREENSHOTS: dict[str, Any] = {"steps": {"__all__": {"screenshot"}}}


class BatchBusyError(AdpError):
    """Another process is running this batch now."""


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs of a batch the same run: a re-run with the same identity resumes."""

    policy: str
    model: str | None
    token_budget: int

    def as_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "model": self.model, "token_budget": self.token_budget}


def checkpoint_dir(data_dir: Path, batch: str) -> Path:
    return Path(data_dir).absolute() / "checkpoints" / batch


class Checkpoint:
    """The working area of one run of ``batch``, open (and locked) for the ``with`` block of
    :func:`open_checkpoint`."""

    def __init__(
        self,
        lake: Lake,
        batch: str,
        folder: Path,
        recorded: dict[str, Any],
        resumed: set[str],
        base: tuple[Path, Path] | None,
    ) -> None:
        self.lake = lake
        self.batch = batch
        self.folder = folder
        self._recorded = recorded
        self.run_key = str(recorded["run_key"])  # carried by this run's results on the workers' result stream
        self.done: set[str] = resumed  # task ids with a committed trajectory
        self.resumed = len(resumed)  # of them, committed by an earlier attempt (in chunks, or in the lake)
        self.base = base  # the lake's (steps, trajectories) files of this run's last commit: kept by the next
        self.chunks = len(self._chunks())
        self._pending: list[Trajectory] = []

    def add(self, trajectory: Trajectory) -> None:
        """Hold ``trajectory`` for the next chunk (a task already done is ignored: first wins)."""
        if trajectory.task_id in self.done:
            return
        self.done.add(trajectory.task_id)
        self._pending.append(trajectory)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self, output: Path) -> int:
        """Commit the held trajectories as one chunk: their JSON files into ``output``, their
        steps, then their trajectories (the commit). Returns how many were committed."""
        trajectories, self._pending = self._pending, []
        if not trajectories:
            return 0
        created_at = datetime.now(UTC)
        # Screenshots go into the lake first, so that each is in place before a row naming it can
        # be committed; their bytes then leave memory (a crash leaves at most unnamed files).
        screenshots = [self._store_screenshots(trajectory) for trajectory in trajectories]
        output.mkdir(parents=True, exist_ok=True)
        for trajectory in trajectories:
            _write_atomically(
                output / f"{task_file_stem(trajectory.task_id)}.json",
                trajectory.model_dump_json(indent=2, exclude=_NO_SCREENSHOTS).encode(),
                self.batch,
            )
        number = self.chunks
        steps = [
            row
            for trajectory, named in zip(trajectories, screenshots, strict=True)
            for row in step_rows(trajectory, named)
        ]
        _write_table(self.folder / f"{number:06d}{_STEPS}", steps, "steps")
        fault_point("chunk:steps_written")
        rows = [trajectory_row(trajectory, created_at) for trajectory in trajectories]
        _write_table(self.folder / f"{number:06d}{_TRAJECTORIES}", rows, "trajectories")
        fault_point("chunk:committed")
        self.chunks += 1
        return len(trajectories)

    def _store_screenshots(self, trajectory: Trajectory) -> dict[int, str]:
        """Write ``trajectory``'s screenshots into the lake and drop their bytes; their paths by step id."""
        named: dict[int, str] = {}
        for step in trajectory.steps:
            # Only a browser step's JPEG becomes a .jpg (a result from a queue could carry anything).
            jpeg = step.screenshot
            if jpeg is not None and step.tool == "browser" and jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9":
                named[step.step_id] = self.lake.write_screenshot(self.batch, trajectory.task_id, step.step_id, jpeg)
            step.screenshot = None
        return named

    def commit(self) -> None:
        """Write the committed chunks into the lake as the batch, with what the lake already holds
        of this run (atomically for readers); then record the commit and remove the chunks. The
        run stays recorded: a later run with the same identity runs only what the lake lacks."""
        chunks = self._chunks()
        if not chunks and self.base is not None:
            return  # nothing new: the lake holds the batch already
        commit_id = uuid.uuid4().hex
        # Said before it lands: if the run dies after the lake has it, the next knows its chunks are in.
        self._record(committing=commit_id)
        self.lake.commit_batch(self.batch, ([self.base] if self.base else []) + chunks, commit_id)
        fault_point("commit:done")
        _remove_chunks(chunks)  # before the record says committed: chunks beside "committed" are new ones
        self._record(committed=commit_id)
        fault_point("commit:recorded")

    def _record(self, **commit: str) -> None:
        self._recorded = {key: value for key, value in self._recorded.items() if key not in _COMMIT_KEYS} | commit
        _write_atomically(self.folder / _RUN_FILE, json.dumps(self._recorded).encode(), self.batch)

    def _chunks(self) -> list[tuple[Path, Path]]:
        return _committed(self.folder)


@contextlib.contextmanager
def open_checkpoint(lake: Lake, batch: str, identity: RunIdentity, *, fresh: bool = False) -> Iterator[Checkpoint]:
    """The working area of ``batch``, resumed when an earlier run with the same ``identity``
    left committed chunks (unless ``fresh``); otherwise started over. Leftovers of dead runs
    (half-written chunks, temporary files) are removed first.

    Raises:
        BatchBusyError: another process holds the batch.
    """
    folder = checkpoint_dir(lake.root.parent, batch)
    folder.mkdir(parents=True, exist_ok=True)
    with _batch_lock(folder / ".lock", batch):
        run_file = folder / _RUN_FILE
        recorded = _read_json(run_file)
        if fresh or recorded is None or recorded.get("identity") != identity.as_json():
            for path in folder.iterdir():
                if path.name != ".lock":
                    path.unlink() if path.is_file() else shutil.rmtree(path)
            recorded = {"identity": identity.as_json(), "run_key": uuid.uuid4().hex}
            _write_atomically(run_file, json.dumps(recorded).encode(), batch)
        _remove_leftovers(lake, folder, batch)
        committing = recorded.get("committing")
        base = lake.committed_batch(batch, committing)
        if base is not None:  # the last commit landed and its run died before saying so: its chunks are in
            _remove_chunks(_committed(folder))
            recorded = {key: value for key, value in recorded.items() if key not in _COMMIT_KEYS}
            recorded["committed"] = committing
            _write_atomically(run_file, json.dumps(recorded).encode(), batch)
        else:
            base = lake.committed_batch(batch, recorded.get("committed"))
        done: set[str] = set()
        for steps, rows in _committed(folder):
            try:
                done.update(str(task) for task in pq.read_table(rows, columns=["task_id"]).column(0).to_pylist())
            except (OSError, pa.ArrowInvalid):  # torn by a power cut: its tasks run again
                rows.unlink(missing_ok=True)
                steps.unlink(missing_ok=True)
        if base is not None:
            done.update(str(task) for task in pq.read_table(base[1], columns=["task_id"]).column(0).to_pylist())
        yield Checkpoint(lake, batch, folder, recorded, done, base)


def _committed(folder: Path) -> list[tuple[Path, Path]]:
    return [
        (path.with_name(path.name.replace(_TRAJECTORIES, _STEPS)), path)
        for path in sorted(folder.glob(f"*{_TRAJECTORIES}"))
    ]


def _remove_chunks(chunks: list[tuple[Path, Path]]) -> None:
    for steps, rows in chunks:
        rows.unlink(missing_ok=True)  # the trajectories first: a steps file alone is a leftover
        steps.unlink(missing_ok=True)


def _remove_leftovers(lake: Lake, folder: Path, batch: str) -> None:
    """A chunk's steps without its trajectories (a run died between the two), and temporary
    files of dead runs in the working area and the batch's lake partitions."""
    committed = {steps.name for steps, _ in _committed(folder)}
    for path in folder.glob(f"*{_STEPS}"):
        if path.name not in committed:
            path.unlink(missing_ok=True)
    partials = [*folder.glob(".*.partial")]
    for table in ("steps", "trajectories"):
        partials += (lake.root / table).glob(f".batch={batch}.*.partial")
    for partial in partials:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _batch_lock(path: Path, batch: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchBusyError(f"batch {batch} is being run by another process; wait for it to end") from None
        yield
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _write_table(path: Path, rows: list[dict[str, Any]], table: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        pq.write_table(pa.Table.from_pylist(rows, schema=TABLES[table]), temporary)
        fsync_file(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes, batch: str) -> None:
    """``path`` whole or not at all; its temporary name carries the batch, so the next run of the
    batch can remove what a killed one left (:func:`remove_output_leftovers`)."""
    write_bytes_atomically(path, data, temporary=path.with_name(f".{batch}.{uuid.uuid4().hex}.partial"), durable=True)


def remove_output_leftovers(output: Path, batch: str) -> None:
    """Temporary files a killed run of ``batch`` left in ``output``, and the staging folders of
    the earlier whole-batch writer."""
    if not output.is_dir():
        return
    for partial in output.glob(f".{batch}.*.partial"):
        partial.unlink(missing_ok=True)
    for staging in output.glob(".staging-*"):
        shutil.rmtree(staging, ignore_errors=True)

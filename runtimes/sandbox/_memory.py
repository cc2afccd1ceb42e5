"""Memory the host can afford: one execution's ceiling, the pool's budget, cgroup v2 where delegated.

Three things bound the memory code takes, from the task line down to the kernel:

- a ceiling per execution (``ADP_SANDBOX_MAX_MEMORY_MB``): ingest rejects a task line asking
  more, and :meth:`SandboxMemory.limit` clamps whatever reaches a sandbox another way (a
  Redis message, a synthesized candidate) to it: the sandbox is the last line of defence;
- a budget for the whole pool (``ADP_SANDBOX_MEMORY_BUDGET_MB``, default half the RAM): every
  execution reserves its ``memory_mb`` in :class:`MemoryBudget` before it starts and waits,
  first come first served, until it fits, so the pool never commits more than the budget;
- where the machine delegates the cgroup v2 memory controller, a cgroup per slot whose
  ``memory.max`` is set to the execution's ``memory_mb`` before it runs: the kernel then counts
  every process of the execution and its tmpfs pages together. Elsewhere (cgroup v1 or hybrid
  hosts, containers with a read-only /sys/fs/cgroup) the limits are per process
  (``RLIMIT_AS``) plus the tmpfs sizes, which :class:`SandboxLimits` carves out of ``memory_mb``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from runtimes.core import SandboxError
from runtimes.sandbox._base import SandboxLimits

MIB = 1024 * 1024
DEFAULT_MAX_MEMORY_MB = 1024
_MIN_BUDGET_MB = 64
_CGROUP_PREFIX = "adp-sandbox-"
_PROC_MOUNTINFO = Path("/proc/self/mountinfo")
_PROC_CGROUP = Path("/proc/self/cgroup")
_names = itertools.count()


class MemoryControlError(SandboxError):
    """The cgroup of an execution could not be given its memory limit: the code does not run."""


def physical_memory_mb() -> int:
    """The RAM of this machine, or the memory limit of this process's cgroup (a container's) when lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file in _own_memory_limit_files(_read(_PROC_MOUNTINFO), _read(_PROC_CGROUP)):
        value = _read(limit_file).strip()
        if value.isdigit():
            total = min(total, int(value))
    return total // MIB


def default_budget_mb() -> int:
    """The pool's budget when none is set: half of :func:`physical_memory_mb`."""
    return max(_MIN_BUDGET_MB, physical_memory_mb() // 2)


class MemoryBudget:
    """The MiB the executions of one sandbox pool may hold at once.

    An execution reserves its ``memory_mb`` before it starts and gives it back when it ends; one
    that does not fit waits, first come first served, so a large request is never overtaken
    for ever by small ones. ``high_water_mb`` is the most ever held at once.

    Args:
        total_mb: the budget.
    """

    def __init__(self, total_mb: int) -> None:
        if total_mb < 1:
            raise ValueError(f"a memory budget must be at least 1 MB, not {total_mb}")
        self.total_mb = total_mb
        self.reserved_mb = 0
        self.high_water_mb = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Executions waiting for room."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def reserve(self, memory_mb: int) -> AsyncIterator[None]:
        """Hold ``memory_mb`` of the budget while the block runs, after waiting for room.

        Raises:
            ValueError: ``memory_mb`` is more than the whole budget, so it could never fit (the
                sandboxes clamp an execution to the budget before they get here).
        """
        await self._acquire(memory_mb)
        try:
            yield
        finally:
            self._release(memory_mb)

    async def _acquire(self, memory_mb: int) -> None:
        if memory_mb > self.total_mb:
            raise ValueError(f"{memory_mb} MB can never fit the sandbox memory budget of {self.total_mb} MB")
        if not self._waiting and self.reserved_mb + memory_mb <= self.total_mb:
            self._take(memory_mb)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (memory_mb, granted)
        self._waiting.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(memory_mb)  # granted just as the waiter was cancelled: give it back
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(entry)
                self._grant_waiting()  # those behind it may fit now
            raise

    def _take(self, memory_mb: int) -> None:
        self.reserved_mb += memory_mb
        self.high_water_mb = max(self.high_water_mb, self.reserved_mb)

    def _release(self, memory_mb: int) -> None:
        self.reserved_mb -= memory_mb
        self._grant_waiting()

    def _grant_waiting(self) -> None:
        while self._waiting and self.reserved_mb + self._waiting[0][0] <= self.total_mb:
            memory_mb, granted = self._waiting.popleft()
            if not granted.done():  # a cancelled waiter removes itself, or is skipped here
                self._take(memory_mb)
                granted.set_result(None)


class Cgroups:
    """This process's cgroup v2 subtree for sandboxes: one child cgroup per slot.

    Made under the nearest cgroup above this process whose children get the memory controller
    and that this user may write (the root cgroup on a host run as root, a delegated subtree
    otherwise); removed by :meth:`remove`. Every child has swap off, so ``memory.max`` cannot
    be escaped into swap.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    @classmethod
    def create(cls) -> Cgroups:
        """Make the subtree, and prove a child of it takes a memory limit.

        Raises:
            OSError: the machine does not delegate cgroup v2 memory to this process (why, in words).
        """
        parent = delegated_parent(_read(_PROC_MOUNTINFO), _read(_PROC_CGROUP))
        _remove_stale(parent)
        cgroups = cls(parent / f"{_CGROUP_PREFIX}{os.getpid()}-{next(_names)}")
        try:
            cgroups.root.mkdir()
            (cgroups.root / "cgroup.subtree_control").write_text("+memory")
            cgroups.set_max("probe", 64 * MIB)
        except OSError:
            cgroups.remove()
            raise
        cgroups.remove_child("probe")
        return cgroups

    def child(self, name: str) -> Path:
        """The cgroup of slot ``name``, made on first use."""
        path = self._made.get(name)
        if path is None:
            path = self.root / name
            path.mkdir(exist_ok=True)
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0")
            self._made[name] = path
        return path

    def set_max(self, name: str, limit_bytes: int) -> Path:
        """Set ``memory.max`` of slot ``name``; its ``cgroup.procs`` is returned (see :func:`enter_cgroup`)."""
        path = self.child(name)
        (path / "memory.max").write_text(str(limit_bytes))
        return path / "cgroup.procs"

    def remove_child(self, name: str) -> None:
        path = self._made.pop(name, self.root / name)
        with contextlib.suppress(OSError):
            path.rmdir()

    def remove_children(self) -> None:
        """Remove the slots' cgroups; one that still has processes (being killed) stays."""
        for name in list(self._made):
            self.remove_child(name)

    def remove(self) -> None:
        """Remove the subtree, as far as no process is left in it."""
        self.remove_children()
        with contextlib.suppress(OSError):
            self.root.rmdir()


def enter_cgroup(procs: Path) -> list[str]:
    """A command prefix that moves the launched process into the cgroup of ``procs`` before it
    execs the rest: everything the sandbox then allocates is charged there from its first page."""
    return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs)]


@dataclass(frozen=True)
class _Mount:
    root: str  # the cgroup this mount shows as its top (not "/" in a cgroup namespace's bind)
    point: Path
    fstype: str
    super_options: frozenset[str]


def _mounts(mountinfo: str) -> list[_Mount]:
    mounts = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 4:
            continue
        fstype = fields[dash + 1]
        if fstype in ("cgroup", "cgroup2"):
            options = frozenset(fields[dash + 3].split(","))
            mounts.append(_Mount(fields[3], Path(fields[4].replace("\\040", " ")), fstype, options))
    return mounts


def _own_cgroups(proc_cgroup: str) -> dict[str, str]:
    """This process's cgroup per hierarchy: ``""`` names the v2 one, else its v1 controllers."""
    own = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            own[parts[1]] = parts[2]
    return own


def _under(mount: _Mount, cgroup: str) -> Path | None:
    """The folder of ``cgroup`` in ``mount``, or None when the mount does not show it."""
    root = mount.root.rstrip("/")
    if cgroup != root and not cgroup.startswith(root + "/"):
        return None
    return mount.point / cgroup[len(root) :].lstrip("/")


def delegated_parent(mountinfo: str, proc_cgroup: str) -> Path:
    """The cgroup v2 folder under which this process can make cgroups with the memory controller.

    The nearest of this process's cgroup and its ancestors (up to the mount) whose
    ``cgroup.subtree_control`` holds ``memory`` and that this user may write. (Its own cgroup
    holds processes, so it cannot enable the controller for children itself: cgroup v2 allows
    controllers only where no process lives, except at the root.)

    Raises:
        OSError: there is none; the message says why.
    """
    mount = next((m for m in _mounts(mountinfo) if m.fstype == "cgroup2"), None)
    if mount is None:
        raise OSError("no cgroup v2 hierarchy is mounted")
    own = _own_cgroups(proc_cgroup).get("")
    folder = _under(mount, own) if own is not None else None
    if folder is None:
        raise OSError(f"this process's cgroup v2 ({own}) is not visible under {mount.point}")
    available = _read(mount.point / "cgroup.controllers").split()
    if "memory" not in available:
        v1 = any("memory" in m.super_options for m in _mounts(mountinfo) if m.fstype == "cgroup")
        where = " (it belongs to a cgroup v1 hierarchy: a hybrid host)" if v1 else ""
        raise OSError(f"cgroup v2 at {mount.point} has no memory controller{where}")
    for candidate in (folder, *folder.parents):
        if not candidate.is_relative_to(mount.point):
            break
        enabled = _read(candidate / "cgroup.subtree_control").split()
        if "memory" in enabled and os.access(candidate, os.W_OK):
            return candidate
    raise OSError(
        f"no cgroup from {folder} up to {mount.point} both enables memory for its children and is "
        "writable by this user (run as root, or delegate a cgroup v2 subtree to this user)"
    )


def _own_memory_limit_files(mountinfo: str, proc_cgroup: str) -> Iterator[Path]:
    """memory.max (v2) and memory.limit_in_bytes (v1) of this process's cgroups and their ancestors."""
    own = _own_cgroups(proc_cgroup)
    for mount in _mounts(mountinfo):
        if mount.fstype == "cgroup2":
            cgroup, name = own.get(""), "memory.max"
        elif "memory" in mount.super_options:
            cgroup = next((path for names, path in own.items() if "memory" in names.split(",")), None)
            name = "memory.limit_in_bytes"
        else:
            continue
        folder = _under(mount, cgroup) if cgroup is not None else None
        if folder is None:
            continue
        for candidate in (folder, *folder.parents):
            if not candidate.is_relative_to(mount.point):
                break
            yield candidate / name


def _remove_stale(parent: Path) -> None:
    """Remove the empty subtrees of adp processes that ended without removing theirs."""
    for folder in parent.glob(f"{_CGROUP_PREFIX}*"):
        pid = folder.name.removeprefix(_CGROUP_PREFIX).split("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        for child in folder.iterdir():
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        with contextlib.suppress(OSError):
            folder.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class SandboxMemory:
    """What both sandbox kinds share about memory: the ceiling, the budget, the cgroups.

    Args:
        max_memory_mb: the most one execution may have (``ADP_SANDBOX_MAX_MEMORY_MB``).
        budget_mb: the pool's budget (``ADP_SANDBOX_MEMORY_BUDGET_MB``); None: half the RAM.
        use_cgroups: use cgroup v2 where the machine delegates it (False: the budget alone).
        cgroups: the subtree to use instead of the one :meth:`Cgroups.create` would make.
    """

    def __init__(
        self,
        max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
        budget_mb: int | None = None,
        *,
        use_cgroups: bool = True,
        cgroups: Cgroups | None = None,
    ) -> None:
        if max_memory_mb < 1:
            raise ValueError(f"the sandbox memory ceiling must be positive, not {max_memory_mb}")
        self.max_memory_mb = max_memory_mb
        self.budget = MemoryBudget(budget_mb if budget_mb is not None else default_budget_mb())
        self._use_cgroups = use_cgroups
        self._given = cgroups
        self._cgroups: Cgroups | None = cgroups
        self._no_cgroups: str | None = None if use_cgroups else "cgroups not used (use_cgroups=False)"
        self._spare: list[str] = []

    @property
    def ceiling_mb(self) -> int:
        """The most one execution gets: the ceiling, or the whole budget when that is smaller."""
        return min(self.max_memory_mb, self.budget.total_mb)

    def limit(self, limits: SandboxLimits) -> SandboxLimits:
        """``limits`` with ``memory_mb`` at most :attr:`ceiling_mb` (clamped, not refused: ingest has
        already refused task lines over the ceiling; what reaches a sandbox otherwise runs within it)."""
        if limits.memory_mb <= self.ceiling_mb:
            return limits
        return limits.model_copy(update={"memory_mb": self.ceiling_mb})

    def cgroups(self) -> Cgroups | None:
        """The cgroup v2 subtree, made on first use; None where the machine does not delegate one."""
        if self._cgroups is None and self._no_cgroups is None:
            try:
                self._cgroups = Cgroups.create()
            except OSError as exc:
                self._no_cgroups = exc.strerror or str(exc)
        return self._cgroups

    @property
    def enforcement(self) -> str:
        """Which mechanism holds executions to their memory, in words (for ``adp doctor``)."""
        cgroups = self.cgroups()
        if cgroups is not None:
            return f"cgroup v2: memory.max per execution under {cgroups.root.parent}"
        return f"budget accounting, limits per process ({self._no_cgroups})"

    @contextlib.asynccontextmanager
    async def execution(self, limits: SandboxLimits, slot: str | None = None) -> AsyncIterator[list[str]]:
        """Hold ``limits.memory_mb`` of the budget for one execution, waiting for room.

        Where cgroups are in force, the execution's cgroup gets ``memory.max`` first: slot
        ``slot``'s (a warm sandbox's resident process lives in it), or a spare one for an
        execution launched on its own. Yields the command prefix that puts a launched process
        into that cgroup (empty without cgroups).

        Raises:
            MemoryControlError: the cgroup would not take the limit (the code must not run).
        """
        async with self.budget.reserve(limits.memory_mb):
            cgroups = self.cgroups()
            if cgroups is None:
                yield []
                return
            name = slot if slot is not None else (self._spare.pop() if self._spare else f"exec-{next(_names)}")
            try:
                try:
                    procs = cgroups.set_max(name, limits.memory_mb * MIB)
                except OSError as exc:
                    raise MemoryControlError(
                        f"cannot limit the execution's memory in {cgroups.root / name}: {exc}"
                    ) from exc
                yield enter_cgroup(procs)
            finally:
                if slot is None:
                    self._spare.append(name)

    def enter(self, slot: str) -> list[str]:
        """The prefix that launches a resident process into slot ``slot``'s cgroup (empty without)."""
        cgroups = self.cgroups()
        return [] if cgroups is None else enter_cgroup(cgroups.child(slot) / "cgroup.procs")

    def close(self) -> None:
        """Remove the cgroups (call once the sandboxes' processes are gone)."""
        if self._cgroups is self._given and self._given is not None:
            self._given.remove_children()  # the subtree is the caller's
        elif self._cgroups is not None:
            self._cgroups.remove()
            self._cgroups = None  # made again on next use
        self._spare = []

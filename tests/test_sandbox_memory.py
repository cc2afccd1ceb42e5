"""Memory the host can afford: the per-task ceiling at ingest and in the sandbox, tmpfs inside a
task's memory, and the pool's budget, each shown with real bubblewrap sandboxes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import dagster as dg
import pytest

from adp_pipeline.doctor import run_checks
from runtimes.core import parse_task_file
from runtimes.sandbox import (
    SANDBOXES,
    Cgroups,
    MemoryBudget,
    SandboxConfig,
    SandboxLimits,
    SandboxMemory,
    delegated_parent,
)
from runtimes.settings import Settings
from tests.helpers import materialize_file, query, task_line

MIB = 1024 * 1024

# What an execution sees of its own memory, from inside: RLIMIT_AS and the size of both tmpfs mounts.
_LIMITS_INSIDE = """
import os, resource
sizes = [os.statvfs(p).f_blocks * os.statvfs(p).f_frsize for p in ('/tmp', '/dev/shm')]
print(resource.getrlimit(resource.RLIMIT_AS)[0], *sizes)
"""
# A task that holds memory for a while and says, from inside, when it started and ended.
_HOLD = """
import resource, time
started = time.time()
block = b'\\x01' * (300 << 20)  # written, so every page is really held
time.sleep(1.0)
ended = time.time()
print(started, ended, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _memory_line(task_id: str, memory_mb: int) -> str:
    return task_line(task_id, constraints={"sandbox": {"memory_mb": memory_mb}})


def test_a_task_line_asking_8_gib_is_rejected_at_ingest_with_the_ceiling(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    path = tmp_path / "memory.jsonl"
    lines = [_memory_line("eight_gib", 8192), _memory_line("at_ceiling", 1024), _memory_line("one_over", 1025)]
    path.write_text("\n".join(lines) + "\n")
    assert materialize_file(path, settings, instance).success

    assert query(settings, "SELECT task_id FROM tasks") == [("at_ceiling",)]
    rejects = query(settings, "SELECT source_file, line_number, field, reason, task_id FROM task_rejects ORDER BY 2")
    assert [(source, line, field, task) for source, line, field, _, task in rejects] == [
        (str(path), 1, "constraints.sandbox.memory_mb", "eight_gib"),
        (str(path), 3, "constraints.sandbox.memory_mb", "one_over"),
    ]
    reason = str(rejects[0][3])
    assert "8192 MB" in reason and "ceiling of 1024 MB" in reason and "ADP_SANDBOX_MAX_MEMORY_MB" in reason


def test_the_ceiling_is_the_setting(tmp_path: Path, settings: Settings, instance: dg.DagsterInstance) -> None:
    settings = settings.model_copy(update={"sandbox_max_memory_mb": 2048})
    path = tmp_path / "memory.jsonl"
    path.write_text("\n".join([_memory_line("two_gib", 2048), _memory_line("eight_gib", 8192)]) + "\n")
    assert materialize_file(path, settings, instance).success
    assert query(settings, "SELECT task_id FROM tasks") == [("two_gib",)]
    ((line, reason),) = query(settings, "SELECT line_number, reason FROM task_rejects")
    assert line == 2 and "ceiling of 2048 MB" in str(reason)
    # Below 64 MB the interpreter cannot start: the task format refuses it wherever it is parsed.
    path.write_text(_memory_line("tiny", 32) + "\n")
    assert parse_task_file(path).rejected[0].field == "constraints.sandbox.memory_mb"


def _inside(kind: str, limits: SandboxLimits, sandbox_config: SandboxConfig | None = None) -> list[int]:
    async def go() -> list[int]:
        config = sandbox_config or SandboxConfig()
        sandbox = config.model_copy(update={"kind": kind}).build(1)
        try:
            result = await sandbox.exec_python(_LIMITS_INSIDE, limits)
        finally:
            await sandbox.aclose()
        assert result.ok, result.stderr
        return [int(word) for word in result.stdout.split()]

    return asyncio.run(go())


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_address_space_and_both_tmpfs_stay_within_memory_mb(kind: str) -> None:
    address_space, tmp, shm = _inside(kind, SandboxLimits(memory_mb=512))
    assert address_space + tmp + shm == 512 * MIB
    assert (tmp, shm) == (64 * MIB, 64 * MIB)


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_the_sandbox_clamps_what_reaches_it_past_ingest_to_the_ceiling(kind: str) -> None:
    # A task from a Redis message or a synthesized candidate asking 8 GiB: the sandbox the
    # settings build (as local runs and `adp worker` do) holds it to ADP_SANDBOX_MAX_MEMORY_MB.
    config = Settings(sandbox_max_memory_mb=1024, sandbox_memory_budget_mb=4096).sandbox_config
    assert sum(_inside(kind, SandboxLimits(memory_mb=8192), config)) == 1024 * MIB
    # A budget smaller than the ceiling clamps too, rather than waiting for room that never comes.
    small_budget = SandboxConfig(max_memory_mb=1024, memory_budget_mb=256)
    assert sum(_inside(kind, SandboxLimits(memory_mb=512), small_budget)) == 256 * MIB


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_the_default_512_mb_imports_the_stdlib_and_allocates_a_few_hundred_mb(kind: str) -> None:
    code = (
        "import json, re, collections, itertools, math, random, datetime, decimal, fractions, statistics, csv\n"
        "import sqlite3, hashlib, heapq, bisect, dataclasses, typing, functools, textwrap, string, threading\n"
        "block = b'x' * (300 << 20)\n"
        "open('/tmp/scratch', 'wb').write(b'y' * (8 << 20))\n"
        "print(len(block) >> 20)\n"
    )

    async def go() -> str:
        sandbox = SANDBOXES[kind](1)
        try:
            result = await sandbox.exec_python(code, SandboxLimits())
        finally:
            await sandbox.aclose()
        assert result.ok, result.stderr
        return result.stdout

    assert asyncio.run(go()) == "300\n"


def _hold_four(kind: str, budget_mb: int) -> tuple[list[tuple[float, float]], MemoryBudget]:
    """Four tasks of 512 MB on four slots with a pool budget of ``budget_mb``: each execution's
    start and end as the code saw them, and the budget afterwards."""
    memory = SandboxMemory(max_memory_mb=1024, budget_mb=budget_mb)

    async def go() -> list[str]:
        sandbox = SANDBOXES[kind](4, memory=memory)
        try:
            limits = SandboxLimits(memory_mb=512, timeout=30)
            results = await asyncio.gather(*(sandbox.exec_python(_HOLD, limits) for _ in range(4)))
        finally:
            await sandbox.aclose()
        assert all(result.ok for result in results), [result.stderr for result in results]
        return [result.stdout for result in results]

    spans = []
    for out in asyncio.run(go()):
        started, ended, peak_rss = out.split()
        assert int(peak_rss) >= 300 * MIB  # each really held its memory
        spans.append((float(started), float(ended)))
    return spans, memory.budget


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start: touching is not overlapping
        running += change
        most = max(most, running)
    return most


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_four_tasks_of_512_mb_never_hold_more_than_a_1_gib_budget(kind: str) -> None:
    spans, budget = _hold_four(kind, budget_mb=1024)
    assert _most_at_once(spans) * 512 <= 1024  # measured inside the sandboxes: at most two at a time
    assert budget.high_water_mb == 1024  # and two did run together: the budget, not a queue of one
    assert (budget.reserved_mb, budget.waiting) == (0, 0)


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_without_the_budget_the_same_four_tasks_overlap(kind: str) -> None:
    # The control: the measurement above does see more than two at once when the budget allows it.
    spans, budget = _hold_four(kind, budget_mb=4096)
    assert _most_at_once(spans) >= 3
    assert budget.high_water_mb >= 3 * 512


def test_the_budget_serves_in_order_and_a_cancelled_waiter_leaves_nothing_behind() -> None:
    async def go() -> list[str]:
        budget = MemoryBudget(1024)
        order: list[str] = []

        async def hold(name: str, memory_mb: int, release: asyncio.Event) -> None:
            async with budget.reserve(memory_mb):
                order.append(name)
                await release.wait()

        first_done, big_done, small_done, cancelled_done = (asyncio.Event() for _ in range(4))
        first = asyncio.create_task(hold("first", 768, first_done))
        await asyncio.sleep(0)
        big = asyncio.create_task(hold("big", 1024, big_done))
        cancelled = asyncio.create_task(hold("cancelled", 512, cancelled_done))
        small = asyncio.create_task(hold("small", 256, small_done))
        for _ in range(3):
            await asyncio.sleep(0)
        # 256 MB would fit beside the first, but the big one came before it: nobody jumps the queue.
        assert (order, budget.reserved_mb, budget.waiting) == (["first"], 768, 3)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        assert budget.waiting == 2
        first_done.set()
        await first
        for _ in range(3):
            await asyncio.sleep(0)
        assert (order, budget.reserved_mb) == (["first", "big"], 1024)
        big_done.set()
        await big
        small_done.set()
        await small
        assert (order, budget.reserved_mb, budget.waiting, budget.high_water_mb) == (
            ["first", "big", "small"],
            0,
            0,
            1024,
        )
        with pytest.raises(ValueError, match="can never fit"):
            async with budget.reserve(1025):
                pass
        return order

    asyncio.run(go())


def test_doctor_says_which_enforcement_is_in_force_and_the_numbers(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sandbox_max_memory_mb=512, sandbox_memory_budget_mb=1024)
    (check,) = [result for result in run_checks(settings) if result.name == "sandbox memory"]
    assert "at most 512 MB" in check.detail and "1024 MB at once" in check.detail
    in_force = SandboxMemory(512, 1024)
    try:
        delegated = in_force.cgroups() is not None
    finally:
        in_force.close()
    assert check.detail.startswith("cgroup v2: memory.max" if delegated else "budget accounting")
    assert (check.status == "ok") == delegated


def _fake_hierarchy(tmp_path: Path, controllers: str, enabled: dict[str, str]) -> tuple[str, Path]:
    """A folder laid out as a cgroup v2 mount, and the mountinfo line naming it."""
    mount = tmp_path / "cgroup"
    for folder, subtree in {"": "", **enabled}.items():
        (mount / folder).mkdir(parents=True, exist_ok=True)
        (mount / folder / "cgroup.subtree_control").write_text(subtree)
    (mount / "cgroup.controllers").write_text(controllers)
    return f"41 23 0:38 / {mount} rw,relatime - cgroup2 cgroup2 rw\n", mount


def test_the_cgroup_parent_is_the_nearest_that_gives_children_memory(tmp_path: Path) -> None:
    # A systemd host run as root: the session scope holds processes; its slice enables memory.
    enabled = {"user.slice": "memory pids", "user.slice/session-1.scope": ""}
    mountinfo, mount = _fake_hierarchy(tmp_path, "cpu io memory pids", enabled)
    assert delegated_parent(mountinfo, "0::/user.slice/session-1.scope\n") == mount / "user.slice"
    # A hybrid host (this project's CI): the memory controller belongs to cgroup v1.
    mountinfo, _ = _fake_hierarchy(tmp_path / "hybrid", "hugetlb", {})
    mountinfo += "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    with pytest.raises(OSError, match=r"no memory controller .*cgroup v1"):
        delegated_parent(mountinfo, "4:memory:/x\n0::/\n")
    with pytest.raises(OSError, match="no cgroup v2 hierarchy"):
        delegated_parent("", "0::/\n")


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_each_execution_is_launched_into_its_cgroup_after_memory_max_is_set(kind: str, tmp_path: Path) -> None:
    # The wiring, on a folder laid out as a delegated subtree (this machine's cgroup v2 has no
    # memory controller): memory.max is written before the code runs, and the sandbox process
    # itself writes its pid into cgroup.procs before it execs bubblewrap.
    (tmp_path / "adp").mkdir()
    memory = SandboxMemory(1024, 4096, cgroups=Cgroups(tmp_path / "adp"))

    async def go() -> list[tuple[int, str]]:
        sandbox = SANDBOXES[kind](1, memory=memory)
        seen = []
        try:
            for memory_mb in (256, 512):
                result = await sandbox.exec_python("print('ran')", SandboxLimits(memory_mb=memory_mb))
                assert result.ok, result.stderr
                (cgroup,) = [path for path in (tmp_path / "adp").iterdir() if path.is_dir()]
                limit = int((cgroup / "memory.max").read_text())
                seen.append((limit, (cgroup / "cgroup.procs").read_text().strip()))
        finally:
            await sandbox.aclose()
        return seen

    (first_max, first_pid), (second_max, second_pid) = asyncio.run(go())
    assert (first_max, second_max) == (256 * MIB, 512 * MIB)
    assert first_pid.isdigit() and second_pid.isdigit()
    # A resident zygote is launched into its slot once; a launch per execution enters each time.
    assert (first_pid == second_pid) == (kind == "warm")


def _cgroup_v2_memory_here() -> bool:
    memory = SandboxMemory(1024, 4096)
    try:
        return memory.cgroups() is not None
    finally:
        memory.close()


@pytest.mark.skipif(not _cgroup_v2_memory_here(), reason="this machine does not delegate cgroup v2 memory")
@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_where_cgroup_v2_is_delegated_a_task_s_processes_together_stay_within_memory_mb(kind: str) -> None:
    # Two processes of 300 MB each fit their address space one by one, not 512 MB together.
    code = (
        "import os\n"
        "child = os.fork()\n"
        "block = b'x' * (300 << 20)\n"
        "if child == 0:\n"
        "    os._exit(0)\n"
        "print(os.waitpid(child, 0)[1])\n"
    )

    async def go() -> str:
        sandbox = SANDBOXES[kind](1, memory=SandboxMemory(1024, 4096))
        try:
            result = await sandbox.exec_python(code, SandboxLimits(memory_mb=512))
        finally:
            await sandbox.aclose()
        return result.stdout if result.ok else "killed"

    assert asyncio.run(go()) in {"killed", "9\n"}


def test_the_sandbox_memory_settings_reach_the_sandbox_config() -> None:
    config = Settings(sandbox_max_memory_mb=2048, sandbox_memory_budget_mb=3000).sandbox_config
    memory = config.memory()
    assert (memory.ceiling_mb, memory.budget.total_mb) == (2048, 3000)
    assert json.loads(config.model_dump_json())["memory_budget_mb"] == 3000
    assert SandboxMemory(1024, None).budget.total_mb > 0  # default: half the RAM

"""``adp doctor``: is every system dependency here, and if not, how to get it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import redis

from adp_pipeline.storage import unwritable_reason
from runtimes.core import ConfigError, redact
from runtimes.llm import HOW_TO_CONFIGURE, LLMConfig
from runtimes.sandbox import SandboxConfig, physical_memory_mb
from runtimes.settings import Settings

_SETUP_HINT = "run `make setup` as root (it installs bubblewrap, chromium and redis-server) or"


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    fix: str = ""


def run_checks(settings: Settings) -> list[CheckResult]:
    checks: list[Callable[[], CheckResult]] = [
        lambda: _data_dir(settings.data_dir),
        _bubblewrap,
        lambda: _sandbox_memory(settings.sandbox_config),
        lambda: _chromium(settings.chromium_path),
        lambda: _redis(settings.redis_url),
        _dbt,
        lambda: _llm(settings.llm_config),
        lambda: policy_check(settings),
    ]
    return [check() for check in checks]


def _data_dir(data_dir: Path) -> CheckResult:
    if (reason := unwritable_reason(data_dir)) is not None:
        return CheckResult("data dir", Status.FAIL, f"{data_dir}: {reason}", "set ADP_DATA_DIR to a writable folder")
    return CheckResult("data dir", Status.OK, str(data_dir.absolute()))


def _bubblewrap() -> CheckResult:
    fix = f"{_SETUP_HINT} `apt-get install -y bubblewrap`"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return CheckResult("bubblewrap (code sandbox)", Status.FAIL, "bwrap not found", fix)
    probe = [bwrap, "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib"]
    probe += ["--symlink", "usr/lib64", "/lib64", "--unshare-all", "--die-with-parent", "true"]
    ok, output = _run(probe)
    if not ok:
        return CheckResult(
            "bubblewrap (code sandbox)",
            Status.FAIL,
            f"bwrap cannot create namespaces: {output}",
            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or run as root",
        )
    return CheckResult("bubblewrap (code sandbox)", Status.OK, bwrap)


def _sandbox_memory(config: SandboxConfig) -> CheckResult:
    """Which mechanism holds code to its memory here, and the numbers it holds it to."""
    memory = config.memory()
    try:
        cgroups = memory.cgroups() is not None
        enforcement = memory.enforcement
    finally:
        memory.close()
    ram = physical_memory_mb()
    detail = (
        f"{enforcement}; each execution at most {memory.ceiling_mb} MB (its /tmp and /dev/shm included), "
        f"the pool {memory.budget.total_mb} MB at once, of {ram} MB RAM"
    )
    if memory.budget.total_mb > ram:
        fix = "set ADP_SANDBOX_MEMORY_BUDGET_MB below the RAM (default: half of it)"
        return CheckResult("sandbox memory", Status.WARN, detail, fix)
    if not cgroups:
        fix = "the limit is per process; cgroup v2 (as root, or a delegated subtree) holds a whole execution"
        return CheckResult("sandbox memory", Status.WARN, detail, fix)
    return CheckResult("sandbox memory", Status.OK, detail)


def _chromium(path: Path) -> CheckResult:
    fix = f"{_SETUP_HINT} `apt-get install -y chromium` (or set ADP_CHROMIUM_PATH)"
    if not path.exists():
        return CheckResult("chromium (web runtime)", Status.FAIL, f"{path} not found", fix)
    ok, output = _run([str(path), "--headless", "--no-sandbox", "--version"])
    return CheckResult("chromium (web runtime)", Status.OK if ok else Status.FAIL, output, "" if ok else fix)


def _redis(url: str) -> CheckResult:
    server = shutil.which("redis-server")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        reachable = f"{redact(url)} answers"
    except (redis.RedisError, ValueError) as exc:
        reachable = f"{redact(url)} unreachable ({type(exc).__name__}); only `--mode redis` needs it"
    if server is None:
        fix = f"{_SETUP_HINT} `apt-get install -y redis-server`; the tests start their own"
        return CheckResult("redis (scale-out)", Status.FAIL, f"redis-server not found; {reachable}", fix)
    return CheckResult("redis (scale-out)", Status.OK, f"{server}; {reachable}")


def _dbt() -> CheckResult:
    dbt = Path(sys.executable).with_name("dbt")
    fix = "run `make setup` (installs the pinned dbt-core<1.12 and dbt-duckdb into .venv)"
    if not dbt.exists():
        return CheckResult("dbt (quality tests)", Status.FAIL, f"{dbt} not found", fix)
    try:
        done = subprocess.run([str(dbt), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckResult("dbt (quality tests)", Status.FAIL, str(exc), fix)
    versions = dbt_versions(done.stdout)
    if done.returncode != 0 or "dbt-core" not in versions:
        lines = (done.stderr or done.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        return CheckResult("dbt (quality tests)", Status.FAIL, detail, fix)
    return CheckResult("dbt (quality tests)", Status.OK, ", ".join(f"{name} {v}" for name, v in versions.items()))


def dbt_versions(output: str) -> dict[str, str]:
    """The installed versions ``dbt --version`` lists: ``{"dbt-core": "1.11.16", "dbt-duckdb": "1.11.1"}``.

    Its text is ``Core:`` with ``- installed: X`` (and ``- latest: Y``), then ``Plugins:`` with
    ``- name: X - Up to date!`` lines.
    """
    versions: dict[str, str] = {}
    section = ""
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.endswith(":") and not stripped.startswith("-"):
            section = stripped[:-1].lower()
            continue
        if not stripped.startswith("- ") or ":" not in stripped:
            continue
        name, _, rest = stripped[2:].partition(":")
        version = rest.split()[0] if rest.split() else ""
        if section == "core" and name.strip() == "installed" and version:
            versions["dbt-core"] = version
        elif section == "plugins" and version:
            versions[f"dbt-{name.strip()}"] = version
    return versions


def _llm(config: LLMConfig) -> CheckResult:
    try:
        endpoint = config.endpoint()
    except ConfigError as exc:
        return CheckResult("LLM (policy llm)", Status.FAIL, redact(str(exc)), HOW_TO_CONFIGURE)
    if endpoint is None:
        detail = "none configured: only the oracle and mock policies can run"
        return CheckResult("LLM (policy llm)", Status.WARN, detail, HOW_TO_CONFIGURE)
    detail = f"{endpoint.provider}: {endpoint.model} at {redact(endpoint.base_url)}"
    return CheckResult("LLM (policy llm)", Status.OK, detail)


def policy_check(settings: Settings) -> CheckResult:
    """Which policy the sensor's runs (and `adp run` without --policy) use, and whether it can run:
    a run whose policy cannot act fails at its first step, so this is a failure here too."""
    name = f"policy (ADP_POLICY={settings.policy})"
    problem = settings.policy_config.problem(settings.policy)
    if problem is not None:
        return CheckResult(name, Status.FAIL, f"the sensor's runs will fail: {redact(problem)}", _POLICY_FIX)
    config = settings.policy_config
    if settings.policy == "oracle":
        detail = "replays each task's reference_tool_calls (a task without them fails)"
    elif settings.policy == "mock":
        where = redact(config.mock_url) if config.mock_url else "a server each run starts"
        detail = f"the scripted mock model ({where})"
    else:
        endpoint = config.llm.endpoint()
        detail = f"{endpoint.provider}: {endpoint.model}" if endpoint is not None else "a model"
    if settings.mode == "redis":
        detail += "; redis mode: the workers run the tasks, with their own LLM settings (give them the same)"
    return CheckResult(name, Status.OK, f"used by the sensor's runs: {detail}")


# Short: the detail says how to configure a model, and a long fix column is cut in a pipe.
_POLICY_FIX = "configure a model, or set ADP_POLICY=oracle"


def _run(command: list[str]) -> tuple[bool, str]:
    """Whether ``command`` succeeded, and the first line of its output."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    output = [line.strip() for line in (done.stdout or done.stderr).splitlines() if line.strip()]
    first = output[0] if output else f"exit status {done.returncode}"
    return done.returncode == 0, first

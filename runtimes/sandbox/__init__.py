"""Run untrusted Python in a bubblewrap sandbox: no network, no host files, no host
environment, bounded CPU, memory, processes, file sizes and output."""

from typing import Literal

from pydantic import BaseModel, Field

from runtimes.sandbox._base import CheckResult, ExecResult, ExecStatus, Sandbox, SandboxLimits
from runtimes.sandbox._bwrap import DEFAULT_UID_BASE, BwrapSandbox
from runtimes.sandbox._memory import (
    DEFAULT_MAX_MEMORY_MB,
    Cgroups,
    MemoryBudget,
    MemoryControlError,
    SandboxMemory,
    default_budget_mb,
    delegated_parent,
    physical_memory_mb,
)
from runtimes.sandbox._warm import WarmSandbox

SANDBOXES: dict[str, type[BwrapSandbox] | type[WarmSandbox]] = {"bwrap": BwrapSandbox, "warm": WarmSandbox}


class SandboxConfig(BaseModel):
    """Which sandbox runs code, the first uid of its slots, and its memory (ADP_SANDBOX,
    ADP_SANDBOX_UID_BASE, ADP_SANDBOX_MAX_MEMORY_MB, ADP_SANDBOX_MEMORY_BUDGET_MB)."""

    kind: Literal["warm", "bwrap"] = "warm"
    uid_base: int = 61000
    max_memory_mb: int = Field(DEFAULT_MAX_MEMORY_MB, ge=64)
    memory_budget_mb: int | None = Field(None, ge=64, description="None: half the RAM (see default_budget_mb).")

    def memory(self) -> SandboxMemory:
        """The ceiling, budget and cgroups one sandbox pool holds its executions to."""
        return SandboxMemory(self.max_memory_mb, self.memory_budget_mb)

    def build(self, slots: int) -> Sandbox:
        """The one sandbox factory: local runs and `adp worker` build their sandboxes here."""
        return SANDBOXES[self.kind](slots, uid_base=self.uid_base, memory=self.memory())


__all__ = [
    "DEFAULT_MAX_MEMORY_MB",
    "DEFAULT_UID_BASE",
    "SANDBOXES",
    "BwrapSandbox",
    "Cgroups",
    "CheckResult",
    "ExecResult",
    "ExecStatus",
    "MemoryBudget",
    "MemoryControlError",
    "Sandbox",
    "SandboxConfig",
    "SandboxLimits",
    "SandboxMemory",
    "WarmSandbox",
    "default_budget_mb",
    "delegated_parent",
    "physical_memory_mb",
]

"""Run untrusted Python in a bubblewrap sandbox: no network, no host files, no host
environment, bounded CPU, memory, processes, file sizes and output."""

from typing import Literal

from pydantic import BaseModel

from runtimes.sandbox._base import ExecResult, ExecStatus, Sandbox, SandboxLimits
from runtimes.sandbox._bwrap import DEFAULT_UID_BASE, BwrapSandbox
from runtimes.sandbox._warm import WarmSandbox

SANDBOXES: dict[str, type[BwrapSandbox] | type[WarmSandbox]] = {"bwrap": BwrapSandbox, "warm": WarmSandbox}


class SandboxConfig(BaseModel):
    """Which sandbox runs code, and the first uid of its slots (ADP_SANDBOX, ADP_SANDBOX_UID_BASE)."""

    kind: Literal["warm", "bwrap"] = "warm"
    uid_base: int = 61000

    def build(self, slots: int) -> Sandbox:
        """The one sandbox factory: local runs and `adp worker` build their sandboxes here."""
        return SANDBOXES[self.kind](slots, uid_base=self.uid_base)


__all__ = [
    "DEFAULT_UID_BASE",
    "SANDBOXES",
    "BwrapSandbox",
    "ExecResult",
    "ExecStatus",
    "Sandbox",
    "SandboxConfig",
    "SandboxLimits",
    "WarmSandbox",
]

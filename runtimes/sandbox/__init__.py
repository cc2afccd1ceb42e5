"""Run untrusted Python in a bubblewrap sandbox: no network, no host files, no host
environment, bounded CPU, memory, processes, file sizes and output."""

from runtimes.sandbox.base import ExecResult, ExecStatus, Sandbox, SandboxLimits
from runtimes.sandbox.bwrap import BwrapSandbox
from runtimes.sandbox.warm import WarmSandbox

SANDBOXES: dict[str, type[Sandbox]] = {"bwrap": BwrapSandbox, "warm": WarmSandbox}

__all__ = ["SANDBOXES", "BwrapSandbox", "ExecResult", "ExecStatus", "Sandbox", "SandboxLimits", "WarmSandbox"]

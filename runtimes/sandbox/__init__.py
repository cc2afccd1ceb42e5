"""Run untrusted Python in a bubblewrap sandbox: no network, no host files, no host
environment, bounded CPU, memory, processes, file sizes and output."""

from runtimes.sandbox.base import ExecResult, ExecStatus, Sandbox, SandboxLimits
from runtimes.sandbox.bwrap import BwrapSandbox

__all__ = ["BwrapSandbox", "ExecResult", "ExecStatus", "Sandbox", "SandboxLimits"]

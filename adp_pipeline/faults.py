"""Fault injection for the crash tests: a process told to die at a named point dies there.

``ADP_TEST_KILL_AT=<point>`` makes the process SIGKILL itself the first time it reaches
``<point>`` (e.g. ``commit:steps_written``), ``<point>@<n>`` the n-th time, as a power cut or
the OOM killer would: no cleanup, no ``finally``. Unset (always, outside the tests), a point
costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_VARIABLE = "ADP_TEST_KILL_AT"
_reached: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Die here, now, if the environment asks for it (tests only)."""
    wanted = os.environ.get(_VARIABLE)
    if wanted is None or not wanted.startswith(name):
        return
    point, _, nth = wanted.partition("@")
    if point == name:
        _reached[name] += 1
        if _reached[name] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)

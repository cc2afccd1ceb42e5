"""Verification the verified code cannot steer: a corpus of ways a solution might make its
tests pass without passing them, each run against the real bubblewrap sandboxes."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from adp_pipeline.synthesize import Candidate, SynthesisSummary, _self_check
from runtimes.agent import run_task
from runtimes.core import TaskSpec
from runtimes.llm import OraclePolicy
from runtimes.sandbox import SANDBOXES, CheckResult, Sandbox, SandboxLimits
from runtimes.settings import Settings
from tests.helpers import code_task

TESTS = "assert sq(3) == 9\nassert sq(4) == 16\n"
HONEST = "def sq(n):\n    return n * n\n"
WRONG = "def sq(n):\n    return 0\n"


def _code(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# (name, solution, tests or None for TESTS): every one must fail its check.
BYPASSES: list[tuple[str, str, str | None]] = [
    ("sys.exit(0) after the code", WRONG + "import sys\nsys.exit(0)\n", None),
    ("SystemExit(0) inside the tested function", "def sq(n):\n    raise SystemExit(0)\n", None),
    ("bare SystemExit inside the tested function", "def sq(n):\n    raise SystemExit\n", None),
    ("exit() builtin at import", WRONG + "exit()\n", None),
    ("os._exit(0) at import", WRONG + "import os\nos._exit(0)\n", None),
    ("os._exit(0) inside the tested function", "import os\ndef sq(n):\n    os._exit(0)\n", None),
    ("SIGKILL of itself", "import os, signal\ndef sq(n):\n    os.kill(os.getpid(), signal.SIGKILL)\n", None),
    ("exec of /bin/true", WRONG + "import os\nos.execv('/usr/bin/true', ['true'])\n", None),
    (
        "closed stdout and stderr, then exit 0",
        "import os\ndef sq(n):\n    os.close(1)\n    os.close(2)\n    os._exit(0)\n",
        None,
    ),
    (
        "prints the harness's words on every stream and descriptor",
        _code(
            """
            import os
            def sq(n):
                for fd in range(1, 64):
                    try:
                        os.write(fd, b"checked:" + b"0" * 32 + b"\\nok\\nPASSED\\n")
                    except OSError:
                        pass
                os._exit(0)
            """
        ),
        None,
    ),
    (
        "builtins.exec replaced so that the tests never run",
        WRONG + "import builtins\nbuiltins.exec = lambda *args, **kwargs: None\n",
        None,
    ),
    (
        "builtins.AssertionError and print replaced",
        WRONG + "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\nbuiltins.print = id\n",
        None,
    ),
    (
        "compile replaced so that the tests compile to nothing",
        WRONG + "import builtins\n_real = compile\nbuiltins.compile = lambda s, f, m, *a, **k: _real('pass', f, m)\n",
        None,
    ),
    (
        "a patched module the tests use",
        "import math\nmath.isclose = lambda *a, **k: True\ndef root(x):\n    return 0.0\n",
        "import math\nassert math.isclose(root(16.0), 4.0)\n",
    ),
    (
        "a value whose __eq__ says yes to anything",
        "class Anything:\n    def __eq__(self, other):\n        return True\ndef sq(n):\n    return Anything()\n",
        None,
    ),
    (
        "an int subclass whose __eq__ says yes",
        "class Yes(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def sq(n):\n    return Yes(0)\n",
        None,
    ),
    (
        "a list holding a yes-to-anything element",
        "class Anything:\n    __eq__ = lambda self, other: True\ndef sq(n):\n    return [Anything()]\n",
        "assert sq(3) == [9]\n",
    ),
    (
        "a value that is always true, asserted alone",
        "class Truthy:\n    def __bool__(self):\n        return True\ndef is_prime(n):\n    return Truthy()\n",
        "assert is_prime(7)\nassert not is_prime(8)\n",
    ),
    (
        "a trace function that would jump over the asserts",
        WRONG + "import sys\nsys.settrace(lambda frame, event, arg: None)\n",
        None,
    ),
    (
        "an alarm whose handler exits 0 while the tests run",
        _code(
            """
            import os, signal, time
            signal.signal(signal.SIGALRM, lambda *_: os._exit(0))
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            def sq(n):
                time.sleep(1)
                return 0
            """
        ),
        None,
    ),
    (
        "a fork whose parent exits 0 at once",
        WRONG + "import os\nif os.fork():\n    os._exit(0)\n",
        None,
    ),
    ("KeyboardInterrupt inside the tested function", "def sq(n):\n    raise KeyboardInterrupt\n", None),
    ("an atexit hook that exits 0", WRONG + "import atexit, os\natexit.register(os._exit, 0)\n", None),
    (
        "an expected value the test computes",
        "class Anything:\n    __eq__ = lambda self, other: True\ndef sq(n):\n    return Anything()\n",
        "for n in range(5):\n    assert sq(n) == n * n\n",
    ),
    (
        "arithmetic that always gives zero (HumanEval's float pattern)",
        "class Zero:\n    __sub__ = __rsub__ = lambda self, other: 0\ndef half(x):\n    return Zero()\n",
        "assert abs(half(3) - 1.5) < 1e-9\n",
    ),
    (
        "always true inside all() and filter()",
        "class Truthy:\n    __bool__ = lambda self: True\ndef is_prime(n):\n    return Truthy()\n",
        "assert all(is_prime(p) for p in [2, 3, 5])\nassert list(filter(is_prime, [4, 6])) == []\n",
    ),
    (
        "StopIteration that map() takes for the end",
        "def is_prime(n):\n    raise StopIteration\n",
        "assert all(map(is_prime, [2, 3, 5]))\nassert not any(map(is_prime, [4, 6, 8]))\n",
    ),
    (
        "module-level names shadowing the builtins the tests use",
        "def abs(x):\n    return 0\ndef all(items):\n    return True\ndef half(x):\n    return 0\n",
        "assert abs(half(3) - 1.5) < 1e-9\nassert all([half(2) == 1])\n",
    ),
    (
        "a fake module under the name the tests use",
        "class FakeMath:\n    isclose = staticmethod(lambda *a, **k: True)\nmath = FakeMath()\ndef root(x):\n"
        "    return 0.0\n",
        "assert math.isclose(root(16.0), 4.0)\n",
    ),
    (
        "a module function patched while the tests run",
        "import math\ndef root(x):\n    math.isclose = lambda *a, **k: True\n    return 0.0\n",
        "import math\nr = root(16.0)\nassert math.isclose(r, 4.0)\n",
    ),
    (
        "a standard class's __eq__ patched",
        "import collections\ncollections.Counter.__eq__ = lambda self, other: True\ndef counts(text):\n"
        "    return collections.Counter()\n",
        "from collections import Counter\nassert counts('aab') == Counter({'a': 2, 'b': 1})\n",
    ),
    (
        "unittest's assertEqual patched",
        "import unittest\nunittest.TestCase.assertEqual = lambda self, *a, **k: None\ndef sq(n):\n    return 0\n",
        "import unittest\nclass T(unittest.TestCase):\n    def test_sq(self):\n        self.assertEqual(sq(3), 9)\n",
    ),
    (
        "a metaclass whose hash and == answer like bool's",
        "class Meta(type):\n    __hash__ = lambda cls: hash(bool)\n    __eq__ = lambda cls, other: True\n"
        "class Anything(metaclass=Meta):\n    __eq__ = lambda self, other: True\n    __hash__ = object.__hash__\n"
        "def sq(n):\n    return Anything()\n",
        "assert True\nassert sq(3) == 9\n",
    ),
    (
        "reads the expected value from the test's source line",
        "import inspect, ast\ndef sq(n):\n    line = inspect.stack()[1].code_context[0]\n"
        "    return ast.literal_eval(ast.parse(line.strip()).body[0].test.comparators[0])\n",
        None,
    ),
    (
        "unittest tests run with exit=False, no test found",
        WRONG,
        "import unittest\nclass T(unittest.TestCase):\n    def test_sq(self):\n        self.assertEqual(sq(3), 9)\n"
        "unittest.main(exit=False)\n",
    ),
    ("pytest-style tests nobody calls", WRONG, "def test_sq():\n    assert sq(3) == 9\n"),
]


def check_all(kind: str, cases: list[tuple[str, str]], limits: SandboxLimits | None = None) -> list[CheckResult]:
    async def go() -> list[CheckResult]:
        sandbox: Sandbox = SANDBOXES[kind](2)
        try:
            return [await sandbox.check_python(solution, tests, limits) for solution, tests in cases]
        finally:
            await sandbox.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_every_bypass_attempt_fails_its_check_and_the_honest_solution_passes(kind: str) -> None:
    cases = [(HONEST, TESTS)] + [(solution, tests or TESTS) for _, solution, tests in BYPASSES]
    honest, *attempts = check_all(kind, cases)
    assert honest.passed and honest.reason == "", honest
    assert len(attempts) >= 15
    passed = [name for (name, _, _), result in zip(BYPASSES, attempts, strict=True) if result.passed]
    assert passed == []
    assert all(result.reason for result in attempts)


@pytest.mark.parametrize("kind", sorted(SANDBOXES))
def test_honest_solutions_of_every_shape_pass(kind: str) -> None:
    """The harness's strictness costs honest code nothing: classes, namedtuples, floats,
    HumanEval's check(candidate), prints, tests with imports and helper functions."""
    cases = [
        (HONEST + "print(sq(5))\n", TESTS),
        ("def root(x):\n    return x ** 0.5\n", "import math\nassert math.isclose(root(16.0), 4.0)\n"),
        (
            "from collections import namedtuple\nPoint = namedtuple('Point', 'x y')\ndef origin():\n"
            "    return Point(0, 0)\n",
            "assert origin() == (0, 0)\nassert origin().x == 0\n",
        ),
        (
            "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n"
            "        self.items.append(x)\n    def __eq__(self, other):\n        return self.items == other.items\n",
            "a, b = Stack(), Stack()\na.push(1)\nb.push(1)\nassert a == b\nassert a.items == [1]\n",
        ),
        (
            "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))\n",
            "def check(candidate):\n    assert candidate(7)\n    assert not candidate(8)\n"
            "    assert candidate(2) is True\n\ncheck(is_prime)\n",
        ),
        ("def half(x):\n    return x / 2\n", "assert abs(half(3) - 1.5) < 1e-9\nassert half(4) in (2, 2.0)\n"),
        (
            "def counts(text):\n    out = {}\n    for c in text:\n        out[c] = out.get(c, 0) + 1\n    return out\n",
            "assert counts('aab') == {'a': 2, 'b': 1}\nassert sorted(counts('ab')) == ['a', 'b']\n",
        ),
        (
            "import sys\nsys.setrecursionlimit(30000)\ndef depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n",
            "assert depth(20000) == 20000\n",
        ),
        (
            "from collections import Counter\nfrom fractions import Fraction\nimport enum\n"
            "class Color(enum.IntEnum):\n    RED = 1\ndef counts(text):\n    return Counter(text)\n"
            "def third():\n    return Fraction(1, 3)\ndef red():\n    return Color.RED\n",
            "assert counts('aab') == {'a': 2, 'b': 1}\n"
            "assert third() == Fraction(1, 3) and [third()] == [Fraction(1, 3)]\nassert red() == 1\n",
        ),
        (
            "from dataclasses import dataclass\n@dataclass\nclass P:\n    x: int\ndef find(x):\n    return P(x)\n"
            "if __name__ == '__main__':\n    n = int(input())\n",
            "assert find(1) is not None\nassert find(1)\nassert find(2) == P(2)\n",
        ),
        (
            "count = 0\ndef inc():\n    global count\n    count += 1\n",
            "from solution import inc as bump\ninc()\nbump()\nassert count == 2\n",
        ),
        (
            "class Box:\n    def __init__(self, v):\n        self.v = v\ndef box(v):\n    return Box(v)\n",
            "import pickle, unittest\nclass T(unittest.TestCase):\n    def test_box(self):\n"
            "        self.assertEqual(pickle.loads(pickle.dumps(box(3))).v, 3)\n"
            "if __name__ == '__main__':\n    unittest.main()\n",
        ),
        ("def sq(n):\n    return n * n\n", "def test_sq():\n    assert sq(3) == 9\n"),
        (
            "class Vector:\n    def __init__(self, x):\n        self.x = x\n    def __mul__(self, k):\n"
            "        return Vector(self.x * k)\n    def __eq__(self, other):\n        return self.x == other.x\n",
            "assert Vector(2) * 3 == Vector(6)\nassert isinstance(3, int) and int('4') == 4\n",
        ),
    ]
    results = check_all(kind, cases)
    assert [(result.passed, result.reason) for result in results] == [(True, "")] * len(cases)


def test_a_failing_check_says_why() -> None:
    exit_0, wrong, broken_tests = check_all(
        "warm", [(WRONG + "import sys\nsys.exit(0)\n", TESTS), (WRONG, TESTS), (HONEST, "assert sq(3) ==")]
    )
    assert "SystemExit(0) before its last test" in exit_0.reason
    assert wrong.reason.startswith("runtime_error:") and "AssertionError" in wrong.reason
    assert "assert sq(3) == 9" in wrong.reason and "zygote" not in wrong.reason  # the test's line, not the harness's
    ((solution, tests),) = [(solution, tests) for name, solution, tests in BYPASSES if name.startswith("an expected")]
    (anything,) = check_all("warm", [(solution, tests or TESTS)])
    assert "a test compares native data with a Anything whose methods are the solution's code" in anything.reason
    assert anything.reason.count("File ") == 1 and "<tests>" in anything.reason
    assert "python_tests do not compile" in broken_tests.reason


def test_a_run_whose_code_exits_zero_is_not_verified() -> None:
    """Through the agent loop: the code ran (exit 0 is a successful step) but is not verified."""
    line = code_task("sq", WRONG + "import sys\nsys.exit(0)\n", "ok", tests=TESTS)

    async def go() -> tuple[bool, str | None]:
        sandbox = SANDBOXES["warm"](2)
        try:
            trajectory = await run_task(TaskSpec.model_validate_json(line), OraclePolicy(), sandbox)
        finally:
            await sandbox.aclose()
        assert trajectory.steps[0].success  # the execution itself succeeded
        assert trajectory.verifier is not None and trajectory.verifier.checks["python_tests"] is False
        return trajectory.success, trajectory.error_message

    success, message = asyncio.run(go())
    assert not success and "SystemExit(0)" in (message or "")


def test_synthesis_rejects_a_gold_solution_that_exits_early_at_self_check(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", tasks_dir=tmp_path / "tasks", policy="oracle")
    wrong_gold = TaskSpec.model_validate_json(
        code_task("synth-sq", WRONG + "import sys\nsys.exit(0)\n", "", tests=TESTS)
    )
    honest_gold = TaskSpec.model_validate_json(code_task("synth-sq2", HONEST, "", tests=TESTS))
    exiting, honest = Candidate(job=None, task=wrong_gold), Candidate(job=None, task=honest_gold)  # type: ignore[arg-type]
    _self_check(SynthesisSummary(batch="b", essences=1, candidates=[exiting, honest]), settings)
    assert exiting.stage == "self_check"
    assert exiting.reason.startswith("its gold solution fails its own check")
    assert "SystemExit(0)" in exiting.reason
    assert honest.stage is None, honest.reason

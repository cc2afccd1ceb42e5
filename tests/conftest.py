from __future__ import annotations

import os
from pathlib import Path

# Before adp is imported: the suite never reads a user's .env, never sees a model's credentials
# or endpoint, and Hugging Face libraries (the export round trip) never reach for the network.
os.environ["ADP_ENV_FILE"] = ""
for _name in ("ADP_LLM_BASE_URL", "ADP_LLM_MODEL", "ADP_LLM_API_KEY", "GEMINI_API_KEY", "GEMINI_API_URL",
              "DEEPSEEK_API_KEY", "DEEPSEEK_API_URL", "OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL",
              "VLLM_URL", "VLLM_MODEL", "ADP_MOCK_LLM_URL", "ADP_POLICY"):  # fmt: skip
    os.environ.pop(_name, None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

from collections.abc import Iterator  # noqa: E402

import dagster as dg  # noqa: E402
import pytest  # noqa: E402

from runtimes.settings import Settings  # noqa: E402
from runtimes.testing import RedisServer  # noqa: E402

# The browser fixtures live in helpers.py with the types the tests annotate them with.
from tests.helpers import Workers, browser, watched  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _inbox_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthesized task files go to TASKS_DIR: a test's own folder, never the ./data/inbox of the
    repository (a test of the default, $ADP_DATA_DIR/inbox, removes it: tests/test_operator_path.py)."""
    monkeypatch.setenv("TASKS_DIR", str(tmp_path / "inbox"))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        tasks_dir=tmp_path / "inbox",
        output_dir_override=tmp_path / "output",
        tasks_settle_seconds=0,
        policy="oracle",
        max_concurrent_tasks=4,
        llm_backoff_base=0.001,
    )


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory of the demo's first run: every example task file (HumanEval code, MiniWoB
    web in Chromium, the mixed examples with reasoning) through ``adp run --policy oracle``, as a
    user runs it (`make demo`): default settings but the data dir, so the synthesized generation-1
    files are in ``data/inbox``. Failed trajectories are in it too (tasks the oracle cannot solve).
    Read-only for the tests that share it: export into a directory of your own, copy it to change it."""
    from tests.helpers import REPO, adp

    root = tmp_path_factory.mktemp("demo")
    files = sorted(str(path) for path in (REPO / "examples").glob("*.jsonl"))
    result = adp(
        "run", *files, "--policy", "oracle",
        env={"ADP_DATA_DIR": str(root / "data")},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "data"


@pytest.fixture(scope="session")
def demo_lake_with_g1(demo_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make demo` leaves after its second step: a copy of ``demo_lake`` (its Dagster instance
    in ``data/dagster`` included) in which the generation-1 files its first run synthesized into
    ``data/inbox`` (MiniWoB reseeds, self-checked in Chromium) ran through `adp run --policy oracle`
    with ADP_SYNTH_MAX_GENERATION=1, as scripts/demo.sh runs them. Its lake holds HumanEval code,
    MiniWoB web, the mixed examples, a synthesized generation with its lineage, and the synthesis
    rejects of the first run (reseeds that came out as copies of another candidate, at dedupe).
    Read-only for the tests that share it: copy it to change it."""
    import shutil

    from tests.helpers import adp

    data = tmp_path_factory.mktemp("demo_g1") / "data"
    shutil.copytree(demo_lake, data)
    generated = sorted(str(path) for path in (data / "inbox").glob("synth-*-g1.jsonl"))
    assert generated, "the demo's first run synthesizes generation-1 files into data/inbox"
    done = adp(
        "run", *generated, "--policy", "oracle", env={"ADP_DATA_DIR": str(data), "ADP_SYNTH_MAX_GENERATION": "1"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return data


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The records each consumer check read (tests/test_export_consumers.py), after the run."""
    from tests.helpers import CONSUMER_CHECKS

    if CONSUMER_CHECKS:
        terminalreporter.section("export records checked by their consumers")
        for label, count in CONSUMER_CHECKS:
            terminalreporter.write_line(f"{count:>6}  {label}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own, on a free port."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[Workers]:
    """`adp worker` processes against ``redis_server``, stopped after the test."""
    pool = Workers(redis_server.url, tmp_path)
    yield pool
    pool.stop_all()

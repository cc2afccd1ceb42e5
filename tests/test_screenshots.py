"""Screenshots of web steps (ADP_SCREENSHOTS): real Chromium, a real lake, real runs of the
pipeline in-process and on a real `adp worker` over a real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import io
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from PIL import Image

from adp_pipeline.checkpoint import RunIdentity, open_checkpoint
from adp_pipeline.export import export_training_set
from adp_pipeline.storage import Lake
from adp_pipeline.storage.lake import _STEPS_GRACE_SECONDS
from adp_pipeline.storage.names import task_file_stem
from adp_pipeline.task_files import register_task_file
from runtimes.agent import run_tasks
from runtimes.core import ActionType, Step, TaskSpec, Trajectory
from runtimes.llm import OraclePolicy
from runtimes.sandbox import WarmSandbox
from runtimes.settings import Settings
from runtimes.testing import RedisServer
from runtimes.web import BrowserPool
from tests.helpers import EXAMPLES, REPO, Workers, code_task, materialize_file
from tests.helpers import step as recorded_step

VIEWPORT = (640, 360)  # half of 1280x720, Playwright's default viewport (ADP_SCREENSHOT_SCALE=0.5)
_EXAMPLES = {json.loads(line)["task_id"]: line for line in EXAMPLES.read_text().splitlines() if line.strip()}
_MINIWOB = (REPO / "examples" / "miniwob.jsonl").read_text().splitlines()[0]
# A JPEG's first bytes in base64, in either alphabet: what would show screenshot bytes leaked into text.
_JPEG_IN_BASE64 = re.compile(r"/9j/|_9j_")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings without synthesis (its self-checks would run more browser tasks)."""
    return settings.model_copy(update={"synth_max_generation": 0})


def batch_file(path: Path) -> Path:
    """Shop web tasks (4 and 1 browser steps), a reasoning task (browser and Python), a MiniWoB
    episode and a code task."""
    lines = [
        _EXAMPLES["web_order_pens"],
        _EXAMPLES["web_follow_link"],
        _EXAMPLES["reasoning_stock_value"],
        _MINIWOB,
        code_task("plain_code", "print(6 * 7)", "42"),
    ]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def batch_of(path: Path, settings: Settings) -> str:
    return register_task_file(path, settings.data_dir, max_line_bytes=settings.max_task_line_bytes).key


def step_rows(settings: Settings, batch: str) -> list[dict[str, Any]]:
    with Lake(settings.data_dir).connect() as connection:
        cursor = connection.execute(
            "SELECT task_id, step_id, action_type, screenshot FROM steps WHERE batch = ? ORDER BY task_id, step_id",
            [batch],
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG's start-of-frame segment, after checking its SOI and EOI markers."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "not a whole JPEG"
    position = 2
    while position < len(data):
        assert data[position] == 0xFF, f"no marker at {position}"
        marker = data[position + 1]
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}:
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return width, height
        position += 2 + length
    raise AssertionError("no start-of-frame segment")


def assert_screenshot(lake: Lake, batch: str, row: dict[str, Any], max_bytes: int) -> bytes:
    """The step row's screenshot: named as documented, in place, a whole JPEG of the viewport, under the cap."""
    relative = row["screenshot"]
    stem = task_file_stem(row["task_id"])
    match = re.fullmatch(
        rf"screenshots/{re.escape(batch)}/{re.escape(stem)}/{row['step_id']}-([0-9a-f]{{12}})\.jpg", relative
    )
    assert match, relative
    path = lake.screenshot_file(relative)
    assert path is not None and path == lake.root / relative
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest()[:12] == match.group(1)  # the name is the content's
    assert 0 < len(data) <= max_bytes
    assert jpeg_size(data) == VIEWPORT
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every scan: a torn file fails here
        assert image.format == "JPEG" and image.size == VIEWPORT
    return data


def test_every_browser_step_leaves_its_jpeg_in_the_lake_and_no_copy_of_its_bytes_elsewhere(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    path = batch_file(tmp_path / "shots.jsonl")
    result = materialize_file(path, settings, instance)
    assert result.success
    batch, lake = batch_of(path, settings), Lake(settings.data_dir)
    rows = step_rows(settings, batch)
    browser_rows = [row for row in rows if row["action_type"] == ActionType.BROWSER_ACTION]
    assert len(browser_rows) == 4 + 1 + 3 + 1  # order pens, follow link, stock value, the MiniWoB episode
    assert {row["task_id"] for row in browser_rows} == {
        "web_order_pens", "web_follow_link", "reasoning_stock_value", "miniwob_click_button_7"
    }  # fmt: skip
    shots = [assert_screenshot(lake, batch, row, settings.screenshot_max_bytes) for row in browser_rows]
    assert len(set(shots)) >= 4  # different pages, different pictures
    other = [row for row in rows if row["action_type"] != ActionType.BROWSER_ACTION]
    assert other and all(row["screenshot"] is None for row in other)  # code, complete_task: never
    files = sorted(p.relative_to(lake.root).as_posix() for p in (lake.root / "screenshots").rglob("*") if p.is_file())
    assert files == sorted(row["screenshot"] for row in browser_rows)  # nothing else, no temporaries

    # No copy of the bytes anywhere else: the per-task JSON files, the messages, the exports.
    outputs = list((settings.output_dir / "trajectories").glob("*.json"))
    assert len(outputs) == 5
    for output in outputs:
        text = output.read_text()
        assert '"screenshot"' not in text and not _JPEG_IN_BASE64.search(text)
        assert all("screenshot" not in step for step in json.loads(text)["steps"])
    with lake.connect() as connection:
        messages = connection.execute("SELECT string_agg(messages, '') FROM trajectories").fetchone()
    assert messages is not None and "_9j_" not in messages[0] and "/9j/" not in messages[0]
    for export_format in ("openai", "atif"):
        out = tmp_path / f"export-{export_format}.jsonl"
        export_training_set(lake, out, export_format=export_format, include_failed=True)
        exported = out.read_text()
        assert exported.count("\n") == 5 and not _JPEG_IN_BASE64.search(exported)
        assert "screenshots/" not in exported

    # A file of a killed writer, and one a superseded commit named long ago, are removed by the
    # next commit; one written a moment ago is kept for the readers of the commit before.
    folder = lake.root / "screenshots" / batch / task_file_stem("web_order_pens")
    old = time.time() - _STEPS_GRACE_SECONDS - 60
    for name in ("9-000000000000.jpg", ".9-000000000000.jpg.dead.partial"):
        (folder / name).write_bytes(b"\xff\xd8old\xff\xd9")
        os.utime(folder / name, (old, old))
    (folder / "8-111111111111.jpg").write_bytes(b"\xff\xd8new\xff\xd9")
    again = materialize_file(path, settings, instance, fresh=True)  # every task again, a new commit
    assert again.success
    rows = step_rows(settings, batch)
    assert [row["screenshot"] is not None for row in rows] == [
        row["action_type"] == ActionType.BROWSER_ACTION for row in rows
    ]
    for row in rows:
        if row["screenshot"] is not None:
            assert_screenshot(lake, batch, row, settings.screenshot_max_bytes)
    left = {p.name for p in folder.iterdir()}
    assert "9-000000000000.jpg" not in left and not any(name.endswith(".partial") for name in left)
    assert "8-111111111111.jpg" in left


def test_final_takes_one_screenshot_at_the_last_browser_step_and_off_none(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    path = batch_file(tmp_path / "shots.jsonl")
    final = settings.model_copy(update={"data_dir": tmp_path / "final", "screenshots": "final"})
    assert materialize_file(path, final, instance).success
    batch, lake = batch_of(path, final), Lake(final.data_dir)
    rows = step_rows(final, batch)
    last_browser_step: dict[str, int] = {}
    for row in rows:
        if row["action_type"] == ActionType.BROWSER_ACTION:
            last_browser_step[row["task_id"]] = row["step_id"]
    shot = {(row["task_id"], row["step_id"]) for row in rows if row["screenshot"] is not None}
    assert shot == set(last_browser_step.items())  # one per web or reasoning task, on its last browser step
    for row in rows:
        if row["screenshot"] is not None:
            assert_screenshot(lake, batch, row, final.screenshot_max_bytes)

    off = settings.model_copy(update={"data_dir": tmp_path / "off", "screenshots": "off"})
    small = tmp_path / "off.jsonl"
    small.write_text(_EXAMPLES["web_order_pens"] + "\n" + _EXAMPLES["reasoning_stock_value"] + "\n")
    assert materialize_file(small, off, instance).success
    rows = step_rows(off, batch_of(small, off))
    assert len(rows) == 5 + 5 and all(row["screenshot"] is None for row in rows)
    assert not (Lake(off.data_dir).root / "screenshots").exists()


def test_screenshots_come_back_from_a_redis_worker(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance, workers: Workers, redis_server: RedisServer
) -> None:
    workers.start("web", runtime="web")
    path = tmp_path / "remote.jsonl"
    path.write_text(_EXAMPLES["web_order_pens"] + "\n")
    remote = settings.model_copy(update={"mode": "redis", "redis_url": redis_server.url, "redis_deadline": 120.0})
    assert materialize_file(path, remote, instance).success
    batch, lake = batch_of(path, remote), Lake(remote.data_dir)
    rows = step_rows(remote, batch)
    browser_rows = [row for row in rows if row["action_type"] == ActionType.BROWSER_ACTION]
    assert [row["task_id"] for row in browser_rows] == ["web_order_pens"] * 4
    for row in browser_rows:  # taken on the worker, stored by the run that collected the result
        assert_screenshot(lake, batch, row, remote.screenshot_max_bytes)
    assert [row["screenshot"] for row in rows if row not in browser_rows] == [None]  # complete_task


def _shop_task() -> TaskSpec:
    return TaskSpec.model_validate_json(_EXAMPLES["web_order_pens"])


def _run(task: TaskSpec, **pool: Any) -> Trajectory:
    async def go() -> Trajectory:
        browser, sandbox = BrowserPool(1, **pool), WarmSandbox(1)
        try:
            (trajectory,) = await run_tasks([task], OraclePolicy(), sandbox, max_concurrent=1, browser=browser)
        finally:
            await sandbox.aclose()
            await browser.aclose()
        return trajectory

    return asyncio.run(go())


def test_a_screenshot_over_the_cap_is_taken_smaller_or_left_out_and_never_fails_the_task() -> None:
    task = _shop_task()
    full = _run(task)
    sizes = [len(step.screenshot) for step in full.steps if step.screenshot is not None]
    assert full.success and len(sizes) == 4
    smaller = _run(task, screenshot_max_bytes=min(sizes) - 1)  # the first quality fits none of them
    assert smaller.success
    for step in smaller.steps:
        if step.action_type is ActionType.BROWSER_ACTION:
            assert step.screenshot is not None and len(step.screenshot) < min(sizes)
            assert jpeg_size(step.screenshot) == VIEWPORT
    none = _run(task, screenshot_max_bytes=200)  # no JPEG of a page is this small
    assert none.success and none.verifier is not None and none.verifier.passed
    assert [step.screenshot for step in none.steps] == [None] * len(none.steps)
    assert [step.observation for step in none.steps] == [step.observation for step in full.steps]


def test_a_step_s_screenshot_crosses_json_exactly_and_the_lake_names_only_its_own_files(tmp_path: Path) -> None:
    jpeg = b"\xff\xd8" + bytes(range(256)) * 40 + b"\xff\xd9"
    step = Step(step_id=3, action_type=ActionType.BROWSER_ACTION, tool="browser", action_params={}, observation="",
                success=True, screenshot=jpeg)  # fmt: skip
    assert Step.model_validate_json(step.model_dump_json()).screenshot == jpeg  # the Redis result's way
    lake = Lake(tmp_path)
    relative = lake.write_screenshot("b-1", "../../etc/passwd", 3, jpeg)
    assert relative.startswith("screenshots/b-1/") and relative.count("/") == 3
    assert lake.screenshot_file(relative) == lake.root / relative
    assert lake.write_screenshot("b-1", "../../etc/passwd", 3, jpeg) == relative  # the same bytes, the same file
    (lake.root / "steps").mkdir(parents=True, exist_ok=True)
    (tmp_path / "outside.jpg").write_bytes(jpeg)
    for hostile in (
        "screenshots/../../outside.jpg",
        "/etc/passwd",
        "steps/batch=b-1/data.parquet",
        "screenshots/b-1/x/../../../../outside.jpg",
        "screenshots/b-1/.x/3.jpg",
        "screenshots/b-1/3.jpg",
        "",
        # Names the filesystem refuses: not a screenshot, never an error.
        "screenshots/b-1/x/\0.jpg",
        "screenshots/b-1/" + "x" * 300 + "/3.jpg",
        "screenshots/b-1/x/" + "y" * 5000 + ".jpg",
    ):
        assert lake.screenshot_file(hostile) is None, hostile
    link = lake.root / "screenshots" / "b-1" / "linked"
    link.mkdir()
    (link / "1-000000000000.jpg").symlink_to(tmp_path / "outside.jpg")
    assert lake.screenshot_file("screenshots/b-1/linked/1-000000000000.jpg") is None


class _SpinningPage(http.server.BaseHTTPRequestHandler):
    """A page whose main thread spins for ever half a second after it loads: Chromium draws no
    frame of it again, so no screenshot of it can be taken."""

    def do_GET(self) -> None:
        body = b"<p>soon busy</p><script>setTimeout(() => { for (;;) {} }, 500)</script>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_a_screenshot_that_cannot_be_taken_takes_at_most_half_the_time_left_and_never_fails_the_task() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SpinningPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        for mode in ("every", "final"):
            task = TaskSpec.model_validate(
                {
                    "task_id": f"spin_{mode}",
                    "task_type": "reasoning",
                    "description": "wait, try a page you may not open, then say done",
                    "expected_tools": ["browser", "python_executor"],
                    "max_steps": 4,
                    "timeout": 6,  # the capture's own bound (ADP_BROWSER_ACTION_TIMEOUT, 10 s) is longer
                    "constraints": {
                        "start_url": origin,
                        "allowed_urls": [origin],
                        "reference_tool_calls": [
                            {"name": "python_executor", "arguments": {"code": "import time; time.sleep(1.2)"}},
                            # Refused without touching the page: the step is recorded, then the
                            # screenshot (after it, or at the end) meets the spinning page.
                            {"name": "browser", "arguments": {"action": "goto", "url": "http://elsewhere.invalid/"}},
                            {"name": "complete_task", "arguments": {"answer": "done"}},
                        ],
                    },
                },
                strict=False,
            )
            trajectory = _run(task, screenshots=mode)
            assert trajectory.success, (mode, trajectory.error_type, trajectory.error_message)
            assert [step.tool for step in trajectory.steps] == ["python_executor", "browser", "complete_task"]
            assert trajectory.steps[1].observation.startswith("blocked:")
            assert [step.screenshot for step in trajectory.steps] == [None, None, None]
            assert trajectory.total_duration < 5.5, (mode, trajectory.total_duration)
    finally:
        server.shutdown()
        server.server_close()


def test_only_a_browser_step_s_jpeg_becomes_a_file_of_the_lake(tmp_path: Path) -> None:
    """What a result from the queue carries is checked where it is stored: bytes that are not a
    JPEG, or a screenshot on a step of another tool, never become a .jpg of the lake."""
    jpeg = b"\xff\xd8" + b"pixels" * 100 + b"\xff\xd9"
    steps = [recorded_step(1, "browser"), recorded_step(2, "browser"), recorded_step(3, "python_executor")]
    steps.append(recorded_step(4, "complete_task"))
    for one, data in zip(steps, (jpeg, b"<script>alert(1)</script>", jpeg, jpeg), strict=True):
        one.screenshot = data
    trajectory = Trajectory(
        task_id="t", task_type="reasoning", runtime_id="r", success=True, steps=steps, policy="oracle"
    )
    lake = Lake(tmp_path / "data")
    with open_checkpoint(lake, "b-1", RunIdentity("oracle", None, 1)) as checkpoint:
        checkpoint.add(trajectory)
        assert checkpoint.flush(tmp_path / "out") == 1
        checkpoint.commit()
    assert all(one.screenshot is None for one in steps)  # the bytes left memory once stored
    with lake.connect() as connection:
        named = connection.execute("SELECT step_id, screenshot FROM steps ORDER BY step_id").fetchall()
    assert [step_id for step_id, path in named if path] == [1]
    files = [p for p in (lake.root / "screenshots").rglob("*") if p.is_file()]
    assert [p.relative_to(lake.root).as_posix() for p in files] == [named[0][1]]
    assert files[0].read_bytes() == jpeg

"""`adp view`'s one-trajectory page (issue #21): each step's tool, highlighted code, folded
observation and duration; the verifier's result; the messages tab as `adp export --format
openai` writes them; a web step's screenshot, served by a route that names the step and serves
no other file than the screenshot the lake holds for it.

The lake is made by a real `adp run --policy oracle` (a code task with a long output and a
MiniWoB task in Chromium, whose browser step is screenshotted), and a batch ``attack`` written
with ``Lake.write_partition`` on top: step rows whose ``screenshot`` names files outside
``<lake>/screenshots/`` in every way a row can (``../``, an absolute path, a link, a directory, a
FIFO, another suffix), and steps whose URLs are ``javascript:`` and ``data:``."""

from __future__ import annotations

import html
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adp_pipeline.export import export_training_set
from adp_pipeline.storage import Lake, open_catalog
from adp_pipeline.view.trajectory_page import MAX_HIGHLIGHTED_CHARS, _params
from tests.helpers import REPO, Watched, code_task, foreign_requests, lake_trajectory_row, oracle_run, running_view

LONG = "for i in range(40):\n    print('line', i)"
MINIWOB = (REPO / "examples" / "miniwob.jsonl").read_text().splitlines()[0]
WEB_TASK = json.loads(MINIWOB)["task_id"]
SECRET = "not a screenshot: a file outside the lake's screenshots"
IMG = "<img src=x onerror=alert(1)>"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64  # only served, never decoded


@dataclass(frozen=True)
class Lakeview:
    url: str
    data: Path
    batch: str


def _step_row(task_id: str, step_id: int, screenshot: str | None, **params: object) -> dict[str, object]:
    return {
        "task_id": task_id,
        "step_id": step_id,
        "tool": "browser",
        "action_type": "browser_action",
        "action_params": json.dumps(params),
        "observation": "page",
        "success": True,
        "duration": 0.25,
        "screenshot": screenshot,
    }


# Step rows of the batch "attack": each names a file the route must refuse (but step 1).
ATTACKS = {
    1: "screenshots/attack/shots/ok.jpg",  # a regular JPEG inside screenshots/: served (the control)
    2: "../secret.jpg",  # outside the lake
    3: "screenshots/../../secret.jpg",  # through screenshots/ and out
    4: "lake-secret.jpg",  # inside the lake, outside screenshots/
    5: "ABSOLUTE",  # an absolute path to the secret (filled in by the fixture)
    6: "/etc/passwd",
    7: "screenshots/attack/shots/passwd.jpg",  # a link to /etc/passwd
    8: "screenshots/attack/shots/secret-link.jpg",  # a link to the secret
    9: "screenshots/attack/shots/folder.jpg",  # a directory
    10: "screenshots/attack/shots/fifo.jpg",  # a FIFO: refused without waiting for a writer
    11: "screenshots/attack/shots/ok.png",  # a regular file, not a .jpg
    12: "screenshots/attack/shots/missing.jpg",
    13: "screenshots/attack/out/secret.jpg",  # through a linked folder to the secret
    14: "screenshots/attack/shots/\0.jpg",  # names the filesystem refuses: a 404, not a 500
    15: "screenshots/attack/" + "x" * 300 + "/1.jpg",
    16: "screenshots/attack/shots/" + "y" * 5000 + ".jpg",
}


@pytest.fixture(scope="module")
def lakeview(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lakeview]:
    root = tmp_path_factory.mktemp("view_trajectory")
    task_file = root / "tasks.jsonl"
    task_file.write_text(code_task("long_output", LONG, "done") + "\n" + MINIWOB + "\n")
    data = root / "data"
    batch = oracle_run(task_file, data)
    _write_attack(Lake(data), data)
    with running_view(data) as url:
        yield Lakeview(url, data, batch)


def _write_attack(lake: Lake, data: Path) -> None:
    (data / "secret.jpg").write_text(SECRET)
    (lake.root / "lake-secret.jpg").write_text(SECRET)
    shots = lake.root / "screenshots" / "attack" / "shots"
    shots.mkdir(parents=True)
    (shots / "ok.jpg").write_bytes(JPEG)
    (shots / "ok.png").write_bytes(JPEG)
    (shots / "passwd.jpg").symlink_to("/etc/passwd")
    (shots / "secret-link.jpg").symlink_to(data / "secret.jpg")
    (shots / "folder.jpg").mkdir()
    os.mkfifo(shots / "fifo.jpg")
    (shots.parent / "out").symlink_to(data, target_is_directory=True)
    attacks = ATTACKS | {5: str(data / "secret.jpg")}
    steps = [_step_row("shots", step_id, value, action="click") for step_id, value in attacks.items()]
    steps += [
        _step_row("shots", 20, None, action="goto", url="javascript:alert(1)"),
        _step_row("shots", 21, None, action="goto", url="data:text/html,<script>alert(1)</script>"),
    ]
    messages = [{"role": "user", "content": "<script>alert(1)</script>"}, {"role": "assistant", "content": "ok"}]
    broken = lake_trajectory_row("broken", [{"role": "assistant", "content": "no task before me"}]) | {
        "success": False, "verified": False, "error_type": "timeout", "error_message": f"slow {IMG}",
        "verifier": json.dumps({"passed": False, "checks": {"miniwob_reward": False}, "details": f"got {IMG}"}),
    }  # fmt: skip
    steps.append(
        _step_row("broken", 1, None, action="click")
        | {"success": False, "error_type": "browser_error", "error_message": IMG}
    )
    garbled = lake_trajectory_row("garbled", []) | {"messages": '["not a message"]'}
    lake.write_partition("trajectories", "attack", [lake_trajectory_row("shots", messages), broken, garbled])
    lake.write_partition("steps", "attack", steps)


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-case names) and body of a GET of ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def test_steps_show_the_tool_highlighted_code_a_folded_long_observation_and_the_duration(
    lakeview: Lakeview, watched: Watched
) -> None:
    page = watched.page
    response = page.goto(f"{lakeview.url}/trajectories/{lakeview.batch}/long_output")
    assert response is not None and response.ok
    with open_catalog(lakeview.data) as connection:
        durations = [d for (d,) in connection.execute(
            "SELECT duration FROM steps WHERE task_id = 'long_output' ORDER BY step_id"
        ).fetchall()]  # fmt: skip
    steps = page.locator("section.step")
    assert steps.count() == len(durations) == 2
    first = steps.nth(0)
    assert first.locator(".tool").inner_text() == "python_executor"
    assert first.locator(".duration").inner_text() == f"{durations[0]:.2f} s"
    # Pygments' tokens: `for` a keyword, `'line'` a string, each coloured by the local stylesheet.
    keyword = first.locator("pre.params span.k", has_text="for")
    assert keyword.count() == 1
    assert keyword.evaluate("e => getComputedStyle(e).color") == "rgb(0, 128, 0)"
    assert first.locator("pre.params span.s1", has_text="'line'").count() == 1
    assert first.locator("pre.params").inner_text().rstrip("\n") == "code:\n" + LONG
    observation = first.locator("details.observation")
    assert observation.get_attribute("open") is None
    full = observation.locator("pre")
    assert not full.is_visible()
    preview = observation.locator("summary .preview")
    assert preview.inner_text() == "\n".join(f"line {i}" for i in range(5))  # the first lines, visible
    observation.locator("summary").click()
    assert full.is_visible() and not preview.is_visible()
    assert full.inner_text().strip() == "\n".join(f"line {i}" for i in range(40))
    assert steps.nth(1).locator(".tool").inner_text() == "complete_task"
    assert steps.nth(1).locator("pre.params").inner_text().rstrip("\n") == "answer: done"
    assert page.locator("pre.verify").inner_text() == '{\n  "expected_answer": "done"\n}'
    assert page.locator("pre.verifier").inner_text().splitlines()[:2] == ["passed", "✓ expected_answer"]
    with open_catalog(lakeview.data) as connection:
        found = connection.execute("SELECT max_steps, timeout FROM tasks WHERE task_id = 'long_output'").fetchone()
    assert found is not None
    facts = page.locator("section.task-facts td").all_inner_texts()
    assert facts == ["python_executor", str(found[0]), f"{found[1]} s"]
    assert page.locator("img").count() == 0  # a code task has no screenshot
    assert foreign_requests(watched.requests, lakeview.url) == []


def test_the_messages_tab_shows_the_conversation_as_the_openai_export_writes_it(
    lakeview: Lakeview, watched: Watched, tmp_path: Path
) -> None:
    out = tmp_path / "train.jsonl"
    where = f"batch = '{lakeview.batch}'"  # the run's trajectories (the export refuses the attack's)
    export_training_set(Lake(lakeview.data), out, export_format="openai", include_failed=True, where=where)
    with open_catalog(lakeview.data) as connection:
        order = [
            t for (t,) in connection.execute(f"SELECT task_id FROM trajectories WHERE {where} ORDER BY 1").fetchall()
        ]
    exported = dict(zip(order, (json.loads(line) for line in out.read_text().splitlines()), strict=True))
    page = watched.page
    for task_id in ("long_output", WEB_TASK):
        page.goto(f"{lakeview.url}/trajectories/{lakeview.batch}/{task_id}")
        page.locator("nav.tabs a", has_text="Messages").click()
        page.wait_for_url(re.compile(r".*\?tab=messages$"))
        assert page.locator("nav.tabs a[aria-current=page]").inner_text() == "Messages (OpenAI export)"
        assert page.locator("section.step").count() == 0
        shown = json.loads(page.locator("pre.messages").inner_text())
        assert shown == exported[task_id]
        assert [m["role"] for m in shown["messages"]][-2:] == ["assistant", "tool"]
    page.locator("nav.tabs a", has_text="Steps").click()
    assert page.locator("section.step").count() == 2
    # Hostile message text is text on the tab too.
    page.goto(f"{lakeview.url}/trajectories/attack/shots?tab=messages")
    assert "<script>alert(1)</script>" in page.locator("pre.messages").inner_text()
    assert page.locator("script").count() == 0 and watched.dialogs == []
    assert _get(f"{lakeview.url}/trajectories/attack/shots?tab=%3Cb%3E")[0] == 404
    # Messages the exporter leaves out, or cannot read, are said to be so: never half a record.
    for task_id, said in (
        ("broken", "adp export leaves this trajectory out: no user message opens the conversation"),
        ("garbled", "adp export cannot read this trajectory's messages"),
    ):
        response = page.goto(f"{lakeview.url}/trajectories/attack/{task_id}?tab=messages")
        assert response is not None and response.ok
        assert said in page.locator("p.fail").inner_text() and page.locator("pre.messages").count() == 0


def test_a_web_step_shows_its_screenshot_and_a_click_opens_it_whole(lakeview: Lakeview, watched: Watched) -> None:
    with open_catalog(lakeview.data) as connection:
        stored = connection.execute(
            "SELECT step_id, screenshot FROM steps WHERE task_id = ? AND tool = 'browser' ORDER BY step_id", [WEB_TASK]
        ).fetchall()
    assert stored and all(path and path.startswith(f"screenshots/{lakeview.batch}/") for _, path in stored)
    page = watched.page
    response = page.goto(f"{lakeview.url}/trajectories/{lakeview.batch}/{WEB_TASK}")
    assert response is not None and response.ok
    images = page.locator("img.step-screenshot")
    assert images.count() == len(stored)
    for (step_id, _), image in zip(stored, images.all(), strict=True):
        assert image.get_attribute("alt") == f"screenshot after step {step_id}"
        image.scroll_into_view_if_needed()  # loading=lazy: it loads once near the viewport
        page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=image.element_handle(), timeout=10_000)
    (step_id, path), image = stored[0], images.first
    link = page.locator("a.step-screenshot").first
    assert (
        link.get_attribute("href")
        == image.get_attribute("src")
        == f"/screenshots/{lakeview.batch}/{step_id}/{WEB_TASK}?v={path.rsplit('/', 1)[-1]}"
    )
    with page.expect_response(lambda r: "/screenshots/" in r.url) as opened:
        link.click()
    whole = opened.value
    assert whole.status == 200 and whole.headers["content-type"] == "image/jpeg"
    assert "immutable" in whole.headers["cache-control"]
    assert "img-src 'self'" in whole.headers["content-security-policy"]
    assert whole.body() == (lakeview.data / "lake" / path).read_bytes()
    assert foreign_requests(watched.requests, lakeview.url) == []


def test_the_screenshot_route_serves_only_the_lakes_screenshot_of_the_step_it_names(lakeview: Lakeview) -> None:
    base = f"{lakeview.url}/screenshots"
    status, headers, body = _get(f"{base}/attack/1/shots")
    assert (status, headers["content-type"], body) == (200, "image/jpeg", JPEG)  # the control is served
    assert "script-src 'none'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    refused = [step_id for step_id in ATTACKS if step_id != 1]
    for step_id in refused:
        status, headers, body = _get(f"{base}/attack/{step_id}/shots")
        assert status == 404, (step_id, ATTACKS[step_id])
        assert SECRET.encode() not in body and b"root:" not in body
        assert "image" not in headers["content-type"]
    for missing in (
        f"{base}/attack/99/shots",  # no such step
        f"{base}/attack/20/shots",  # a step without a screenshot
        f"{base}/{lakeview.batch}/1/long_output",  # a code step
        f"{base}/attack/1/nobody",
        f"{base}/nobatch/1/shots",
        f"{base}/attack/x/shots",  # a step is a number
        f"{base}/attack/..%2F..%2Fsecret.jpg",
    ):
        assert _get(missing)[0] == 404, missing


def test_urls_in_parameters_are_text_never_links(lakeview: Lakeview, watched: Watched) -> None:
    page = watched.page
    response = page.goto(f"{lakeview.url}/trajectories/attack/shots")
    assert response is not None and response.ok
    urls = page.locator("pre.params .url").all_inner_texts()
    assert urls == ["javascript:alert(1)", "data:text/html,<script>alert(1)</script>"]
    assert page.locator("a[href^='javascript:' i], a[href^='data:' i], script").count() == 0
    # Every link on the page stays on the viewer: the screenshots' links name steps, not files.
    hrefs = [a.get_attribute("href") or "" for a in page.locator("a").all()]
    assert hrefs and all(h.startswith("/") and not h.startswith("//") for h in hrefs)
    assert page.locator("section.task, pre.description").count() == 0  # no task row: said, not invented
    assert "no task row" in page.locator("body").inner_text()
    assert watched.dialogs == []
    assert foreign_requests(watched.requests, lakeview.url) == []


def test_code_is_highlighted_as_escaped_text_and_a_huge_one_is_left_plain() -> None:
    hostile = "x = '</pre><script>alert(1)</script>'  # <img src=x onerror=alert(1)>"
    shown = _params("python_executor", json.dumps({"code": hostile}))
    assert "<script>" not in shown and "<img" not in shown and 'class="s1"' in shown
    assert html.unescape(re.sub(r"<[^>]+>", "", shown)) == "code:\n" + hostile + "\n"
    huge = "print(1)\n" * (MAX_HIGHLIGHTED_CHARS // 9 + 1)
    plain = _params("python_executor", json.dumps({"code": huge}))
    assert 'class="k"' not in plain and 'class="nb"' not in plain and plain.count("print(1)") == huge.count("print")
    # The same key of another tool is no code: text.
    assert 'class="nb"' not in _params("browser", json.dumps({"code": "print(1)"}))


def test_a_failed_trajectory_shows_its_step_error_its_error_and_the_verifiers_checks(
    lakeview: Lakeview, watched: Watched
) -> None:
    page = watched.page
    response = page.goto(f"{lakeview.url}/trajectories/attack/broken")
    assert response is not None and response.ok
    step = page.locator("section.step")
    assert step.count() == 1 and "step-failed" in (step.get_attribute("class") or "")
    assert step.locator("p.fail").inner_text() == f"browser_error: {IMG}"
    assert page.locator("section.error").inner_text() == f"timeout: slow {IMG}"
    assert page.locator("pre.verifier").inner_text() == "not passed\n✗ miniwob_reward"
    assert page.locator("pre.verifier-details").inner_text() == f"got {IMG}"
    assert page.locator("img").count() == 0 and watched.dialogs == []

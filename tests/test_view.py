"""`adp view` (issue #21, first slice): a real `adp view` process over a lake made by a real
`adp run --policy oracle`, driven in Chromium through Playwright. Hostile task text and
observations render as text, no script runs, nothing is fetched from another host, and the
pages carry a Content-Security-Policy that forbids script.

The lineage and synthesis-rejects pages read ``synthesized_tasks`` and ``synthesis_rejects``
rows written with ``Lake.write_partition`` on top of that run (as tests/test_cli_reports.py
does): ``square_g1`` (run in the same batch) is generation 1 of ``square``, ``square_g2`` its
child not run yet, and ``loop_a``/``loop_b`` name each other as parents (a cycle the walk must
survive)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adp_pipeline.storage import Lake, open_catalog
from adp_pipeline.storage.view_queries import (
    SortKey,
    SortOrder,
    TrajectoryFilter,
    lineage,
    reject_page,
    trajectory_detail,
    trajectory_page,
)
from tests.helpers import Watched, adp, code_task, foreign_requests, free_port, oracle_run, running_view

# What a hostile task or page might carry: each must come back as the very same text.
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
JS_LINK = '<a href="javascript:alert(1)">click me</a>'
MD_IMAGE = "![x](http://198.51.100.7/track.png)"
REMOTE = '<link rel=stylesheet href="http://198.51.100.7/x.css"><iframe src="http://198.51.100.7/"></iframe>'
HOSTILE = [SCRIPT, IMG, JS_LINK, MD_IMAGE, REMOTE]
HOSTILE_TEXT = " ".join(HOSTILE)


@dataclass(frozen=True)
class Viewer:
    url: str
    data: Path
    batch: str


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    root = tmp_path_factory.mktemp("view")
    task_file = root / "hostile.jsonl"
    lines = [
        code_task("square", "print(4)", "4"),
        code_task("wrong", "print(1)", "1", tests="assert False"),
        # The reference code prints the hostile text, so it lands in the step's observation too.
        code_task("hostile", f"print({HOSTILE_TEXT!r})", "ok", description=f"Say ok. {HOSTILE_TEXT}"),
        code_task("square_g1", "print(9)", "9"),  # generation 1 of square (its synthesis row below)
    ]
    task_file.write_text("\n".join(lines) + "\n")
    data = root / "data"
    batch = oracle_run(task_file, data)
    _write_synthesis(Lake(data), batch)
    with running_view(data) as url:
        yield Viewer(url, data, batch)


def _write_synthesis(lake: Lake, batch: str) -> None:
    now = datetime.now(UTC)
    made = [
        {"task_id": task_id, "task_type": "code", "generation": generation, "mutation": mutation,
         "parent_task_ids": parents, "essence_ids": [f"essence-{parents[0]}"], "description": "d", "task": "{}",
         "task_file": "synth-g1.jsonl", "tokens": 0, "created_at": now}
        for task_id, generation, mutation, parents in [
            ("square_g1", 1, "reseed", ["square"]),
            ("square_g2", 2, "harder", ["square_g1"]),
            ("loop_a", 1, "reseed", ["loop_b"]),
            ("loop_b", 1, "reseed", ["loop_a"]),
        ]
    ]  # fmt: skip
    rejects = [
        {"candidate_id": None, "task_type": "code", "mutation": "reseed", "stage": "validation",
         "reason": f"bad verify {HOSTILE_TEXT}", "parent_task_ids": ["square", IMG], "essence_ids": [],
         "description": f"Hostile candidate {HOSTILE_TEXT}", "task": None, "tokens": 3, "created_at": now},
    ] + [
        {"candidate_id": f"dup_{n}", "task_type": "code", "mutation": "paraphrase", "stage": "dedupe",
         "reason": "same as square", "parent_task_ids": ["square", "wrong"], "essence_ids": [],
         "description": "Print 4.", "task": "{}", "tokens": 1, "created_at": now + timedelta(seconds=n % 2)}
        for n in range(3)
    ]  # fmt: skip
    lake.write_partition("synthesized_tasks", batch, made)
    lake.write_partition("synthesis_rejects", batch, rejects)


def test_filter_to_failed_open_a_trajectory_and_see_its_steps(viewer: Viewer, watched: Watched) -> None:
    page = watched.page
    response = page.goto(viewer.url + "/")
    assert response is not None and response.ok
    assert page.locator("td", has_text=viewer.batch).count() == 1
    page.get_by_role("link", name=viewer.batch).click()
    page.locator("select[name=success]").select_option("false")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/trajectories?*success=false*")
    listed = page.locator("tbody tr td:first-child").all_inner_texts()
    assert listed == ["wrong"]  # the one failing task, and only it
    page.get_by_role("link", name="wrong").click()
    page.wait_for_url(f"**/trajectories/{viewer.batch}/wrong?*success=false*")  # the link keeps the filter
    steps = page.locator("section.step")
    assert steps.count() == 2
    assert "python_executor" in steps.nth(0).inner_text()
    assert "print(1)" in steps.nth(0).locator("pre.params").inner_text()
    observation = steps.nth(0).locator("details.observation")
    assert not observation.locator("pre").is_visible()  # folded until opened
    observation.locator("summary").click()
    assert observation.locator("pre").inner_text().strip() == "1"
    assert "complete_task" in steps.nth(1).inner_text()
    assert "failed" in page.locator("body").inner_text()
    assert "python_tests" in page.locator("pre.verifier").inner_text()
    assert foreign_requests(watched.requests, viewer.url) == []


def test_hostile_task_text_and_observation_render_as_text(viewer: Viewer, watched: Watched) -> None:
    page = watched.page
    response = page.goto(f"{viewer.url}/trajectories/{viewer.batch}/hostile")
    assert response is not None and response.ok
    headers = response.headers
    assert "script-src 'none'" in headers["content-security-policy"]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    description = page.locator("pre.description").inner_text()
    for hostile in HOSTILE:
        assert hostile in description
    observation = page.locator("section.step").first.locator("details.observation")
    observation.locator("summary").click()
    shown = observation.locator("pre").inner_text()
    for hostile in HOSTILE:
        assert hostile in shown
    assert page.locator("section.step").first.locator("pre.params").inner_text().count("alert(1)") == 3
    # Not one element came from the data: no script, image, frame, foreign stylesheet or javascript: link.
    assert page.locator("script, img, iframe, a[href^='javascript:' i]").count() == 0
    assert page.locator("link").count() == 1
    assert page.evaluate("1 + 1") == 2  # the page is alive; Playwright's own evaluation is not the page's script
    assert watched.dialogs == []
    assert foreign_requests(watched.requests, viewer.url) == []


# Every URL a page holds: links, images, stylesheets, forms, frames (resolved against the page).
_URLS = r"""() => Array.from(document.querySelectorAll('[href], [src], [action], [srcset], [data], [poster]'))
    .flatMap(e => ['href', 'src', 'action', 'srcset', 'data', 'poster'].filter(n => e.hasAttribute(n))
    .map(n => { const v = e.getAttribute(n).trim().split(/\s/)[0];
                try { return new URL(v, document.baseURI).href; } catch { return v; } }))"""
# Every attribute that would run script: an event handler, or a javascript: value.
_SCRIPTED = r"""() => Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes)
    .filter(a => a.name.startsWith('on') || /^\s*(javascript|vbscript|data):/i.test(a.value))
    .map(a => `${e.tagName.toLowerCase()} ${a.name}=${a.value}`))"""


def _inert(watched: Watched, base: str) -> None:
    """The page holds no element a value could have brought: no script, frame, plugin, <base> or
    meta refresh; no handler or javascript: attribute; only the viewer's own stylesheet and
    screenshots; every URL on the page is the viewer's. Nothing ran and nothing left the host."""
    page = watched.page
    assert page.locator("script, iframe, frame, object, embed, base, meta[http-equiv], svg, math").count() == 0
    assert page.evaluate(_SCRIPTED) == []
    assert [link.get_attribute("href") for link in page.locator("link").all()] == ["/static/view.css"]
    assert page.locator("img").count() == page.locator("img.step-screenshot").count()
    assert [url for url in page.evaluate(_URLS) if not url.startswith(base + "/")] == []
    assert watched.dialogs == []
    assert foreign_requests(watched.requests, base) == []


def test_hostile_text_is_inert_text_on_every_page_it_appears_on(viewer: Viewer, watched: Watched) -> None:
    """The hostile task of a real run (its description, and its observation: the code printed
    it) and a hostile reject, followed through every page a person reaches them by: the list,
    the trajectory, its raw messages, its lineage, the rejects, a hostile parent's lineage."""
    page = watched.page
    response = page.goto(f"{viewer.url}/trajectories?batch={viewer.batch}")
    assert response is not None and response.ok
    row = page.locator("tbody tr", has=page.get_by_role("link", name="hostile", exact=True))
    for hostile in (SCRIPT, IMG):  # the description's preview, as text
        assert hostile in row.inner_text()
    _inert(watched, viewer.url)

    row.get_by_role("link", name="hostile", exact=True).click()
    page.wait_for_url(f"**/trajectories/{viewer.batch}/hostile*")
    for details in page.locator("details").all():
        details.locator("summary").click()  # the folded observation and constraints, opened
    shown = page.locator("body").inner_text()
    for hostile in HOSTILE:
        assert shown.count(hostile) >= 3, hostile  # the description, the parameters, the observation
    _inert(watched, viewer.url)

    page.locator("a.tab", has_text="Messages").click()
    page.wait_for_url(f"**/trajectories/{viewer.batch}/hostile?*tab=messages*")
    messages = page.locator("body").inner_text()
    for hostile in HOSTILE:  # as JSON text: in the user's message (the description) and the tool's (the observation)
        assert messages.count(json.dumps(hostile, ensure_ascii=False)[1:-1]) >= 2, hostile
    _inert(watched, viewer.url)

    page.locator("a.lineage").click()
    page.wait_for_url("**/lineage/hostile")
    assert page.locator("section.task a.task").all_inner_texts() == ["hostile"]
    _inert(watched, viewer.url)

    page.get_by_role("link", name="Rejects", exact=True).click()
    page.wait_for_url("**/rejects")
    reject = page.locator("tbody tr", has=page.locator("pre.reason", has_text="bad verify"))
    assert reject.locator("pre.reason").inner_text() == f"bad verify {HOSTILE_TEXT}"
    _inert(watched, viewer.url)

    reject.get_by_role("link", name=IMG, exact=True).click()  # a parent named like markup
    page.wait_for_url("**/lineage/*")
    assert f"The lake knows no task {IMG}." in page.locator("body").inner_text()
    _inert(watched, viewer.url)


def test_every_page_sends_the_security_headers_and_only_get_is_served(viewer: Viewer) -> None:
    for path in ("/", "/trajectories", f"/trajectories/{viewer.batch}/square", "/static/view.css", "/nowhere"):
        try:
            with urllib.request.urlopen(viewer.url + path, timeout=10) as response:
                headers = response.headers
        except urllib.error.HTTPError as exc:
            assert exc.code == 404 and path == "/nowhere"
            headers = exc.headers
        assert "script-src 'none'" in headers["Content-Security-Policy"], path
        assert headers["X-Content-Type-Options"] == "nosniff", path
    request = urllib.request.Request(viewer.url + "/trajectories", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405


def test_a_missing_trajectory_is_404_with_its_name_escaped(viewer: Viewer) -> None:
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{viewer.url}/trajectories/{viewer.batch}/%3Cscript%3Ex", timeout=10)
    assert missing.value.code == 404
    body = missing.value.read().decode()
    assert "&lt;script&gt;x" in body and "<script>" not in body


def test_keyset_pages_walk_every_trajectory_once_in_order(viewer: Viewer) -> None:
    with open_catalog(viewer.data) as connection:
        walked, after = [], None
        while True:
            page = trajectory_page(connection, TrajectoryFilter(sort=SortKey.BATCH, order=SortOrder.ASC), after, 1)
            walked += [row.task_id for row in page.rows]
            if page.next_after is None:
                break
            after = page.next_after
        assert walked == ["hostile", "square", "square_g1", "wrong"]
        failed = trajectory_page(connection, TrajectoryFilter(batch=viewer.batch, success=False), None, 10)
        assert [row.task_id for row in failed.rows] == ["wrong"] and failed.next_after is None
        other = trajectory_page(connection, TrajectoryFilter(batch="absent-0"), None, 10)
        assert other.rows == []
        assert trajectory_detail(connection, viewer.batch, "nope") is None


def test_view_refuses_a_data_dir_without_a_lake(tmp_path: Path) -> None:
    result = adp("view", "--data-dir", str(tmp_path / "empty"), "--port", str(free_port()))
    assert result.returncode == 2
    assert "no data here yet" in result.stderr
    assert not (tmp_path / "empty").exists()


def test_follow_lineage_from_a_generation_1_task_to_its_parent_and_back(viewer: Viewer, watched: Watched) -> None:
    page = watched.page
    response = page.goto(f"{viewer.url}/trajectories/{viewer.batch}/square_g1")
    assert response is not None and response.ok
    page.locator("a.lineage").click()
    page.wait_for_url("**/lineage/square_g1")
    this, parents, children = (page.locator(f"section.{name}") for name in ("task", "parents", "children"))
    assert this.locator("tbody td").all_inner_texts() == [
        "square_g1", "1", "reseed", "square", "essence-square", "verified"
    ]  # fmt: skip
    assert parents.locator("tbody td").all_inner_texts() == ["square", "0", "", "", "", "verified"]
    assert children.locator("tbody td").all_inner_texts() == [
        "square_g2", "2", "harder", "square_g1", "essence-square_g1", "not run yet"
    ]  # fmt: skip
    parents.locator("a.task").click()  # the parent's own lineage
    page.wait_for_url("**/lineage/square")
    assert page.locator("h1").inner_text() == "Lineage of square"
    assert parents.inner_text() == "None."  # generation 0: no parents
    assert children.locator("a.task").all_inner_texts() == ["square_g1"]
    children.locator("a.trajectory").click()  # the child's outcome opens its trajectory
    page.wait_for_url(f"**/trajectories/{viewer.batch}/square_g1")
    assert page.locator("section.step").count() == 2
    page.go_back()
    children.locator("a.task").click()  # and back to the child's lineage
    page.wait_for_url("**/lineage/square_g1")
    assert this.locator("a.task").all_inner_texts() == ["square_g1"]
    assert foreign_requests(watched.requests, viewer.url) == []


def test_lineage_walks_every_generation_survives_a_cycle_and_refuses_the_unknown(viewer: Viewer) -> None:
    with open_catalog(viewer.data) as connection:
        g2 = lineage(connection, "square_g2")
        assert g2 is not None and g2.task.batch is None and g2.task.generation == 2
        assert [t.task_id for t in g2.ancestors] == ["square_g1", "square"] and not g2.cut
        short = lineage(connection, "square_g2", max_generations=1)
        assert short is not None and [t.task_id for t in short.ancestors] == ["square_g1"] and short.cut
        loop = lineage(connection, "loop_a")
        assert loop is not None and [t.task_id for t in loop.ancestors] == ["loop_b"]
        assert [t.task_id for t in loop.children] == ["loop_b"]
        assert lineage(connection, "nobody") is None
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{viewer.url}/lineage/%3Cscript%3Enobody", timeout=10)
    assert missing.value.code == 404
    body = missing.value.read().decode()
    assert "&lt;script&gt;nobody" in body and "<script>" not in body


def test_open_the_rejects_of_a_batch_and_read_a_reason_as_text(viewer: Viewer, watched: Watched) -> None:
    page = watched.page
    response = page.goto(viewer.url + "/")
    assert response is not None and response.ok
    synthesis = page.locator("tbody tr").first.locator("td").nth(4)
    assert synthesis.inner_text() == "accepted 4 · rejected 4 (dedupe 3, validation 1)"
    synthesis.get_by_role("link", name="validation 1").click()
    page.wait_for_url("**/rejects?*stage=validation*")
    assert "dedupe: 3" in page.locator("p.stages").inner_text()
    assert "validation: 1" in page.locator("p.stages").inner_text()
    (row,) = page.locator("tbody tr").all()
    assert row.locator("pre.reason").inner_text() == f"bad verify {HOSTILE_TEXT}"
    candidate = f"Hostile candidate {HOSTILE_TEXT}"  # no candidate id: its description's preview
    assert row.locator("pre.candidate").inner_text() == candidate[:200] + "…"
    assert page.locator("script, img, iframe, a[href^='javascript:' i]").count() == 0
    assert page.locator("link").count() == 1
    assert watched.dialogs == []
    row.get_by_role("link", name="square").click()  # a reject's parent opens its lineage
    page.wait_for_url("**/lineage/square")
    assert foreign_requests(watched.requests, viewer.url) == []


def test_reject_pages_walk_every_reject_once_per_stage_in_time_order(viewer: Viewer) -> None:
    with open_catalog(viewer.data) as connection:
        walked: list[tuple[str, str | None]] = []
        after = None
        while True:
            page = reject_page(connection, viewer.batch, None, after, 1)
            assert page.per_stage == {"dedupe": 3, "validation": 1}
            walked += [(row.stage, row.candidate_id) for row in page.rows]
            if page.next_after is None:
                break
            after = page.next_after
        assert [stage for stage, _ in walked] == ["dedupe"] * 3 + ["validation"]
        # dup_0 and dup_2 share a time (their order is their digest's); dup_1 is a second later.
        assert {walked[0][1], walked[1][1]} == {"dup_0", "dup_2"} and walked[2:] == [
            ("dedupe", "dup_1"), ("validation", None)
        ]  # fmt: skip
        only = reject_page(connection, viewer.batch, "validation", None, 10)
        assert [r.candidate_id for r in only.rows] == [None] and only.next_after is None
        assert reject_page(connection, "absent-0", None, None, 10).rows == []

"""`adp view` end to end (issue #21, Must show 1 and 4): a real `adp view` over the lake `make
demo` leaves (``demo_lake_with_g1``: HumanEval code, MiniWoB web in Chromium, the mixed
examples, a synthesized generation and the synthesis rejects of the first run), driven in
Chromium as a person uses it: filter to failed, open a failed trajectory and read its steps, open
a MiniWoB trajectory and see each browser step's screenshot, follow lineage from a
generation-1 task to its parent and back, open the rejects of a batch.

The demo's own failures are tasks the oracle has no solution for (no steps), so the lake gets one
more real batch on top: a code task whose reference solution is off by one, which runs and fails
its tests. Each page the journey passes is saved as docs/images/view-<page>.png (1280x800, the
whole page), the screenshots README shows: every test run makes them again, so they stay true.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from playwright.sync_api import Locator, Page

from adp_pipeline.storage import open_catalog
from tests.helpers import REPO, Watched, adp, code_task, foreign_requests, running_view, wait_for

IMAGES = REPO / "docs" / "images"
PAGES = ("batches", "trajectories", "trajectory", "lineage", "rejects")
MAX_IMAGE_BYTES = 300_000


@dataclass(frozen=True)
class Journey:
    url: str
    data: Path
    batches: list[str]
    failed: set[str]  # every failed trajectory's task id
    checks: str  # the batch of the task that fails its tests
    miniwob: str  # the MiniWoB batch of the demo's first run
    rejected: int  # its synthesis rejects
    parent: str  # a MiniWoB task of that batch ...
    child: str  # ... and its generation-1 reseed, run in ...
    child_batch: str  # ... this batch


@pytest.fixture(scope="module")
def journey(demo_lake_with_g1: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journey]:
    root = tmp_path_factory.mktemp("journey")
    data = root / "data"
    shutil.copytree(demo_lake_with_g1, data)
    task_file = root / "checks.jsonl"
    task_file.write_text(
        code_task(
            "off_by_one", "print(6 * 7 + 1)", "43", tests="assert 6 * 7 == 43", description="Print six times seven."
        )
        + "\n"
    )
    ran = adp("run", str(task_file), "--policy", "oracle", env={"ADP_DATA_DIR": str(data)})
    assert ran.returncode == 0, ran.stdout + ran.stderr  # a task that fails its check is no failed run
    with open_catalog(data) as connection:
        batches = [b for (b,) in connection.execute("SELECT DISTINCT batch FROM trajectories ORDER BY 1").fetchall()]
        failed = {t for (t,) in connection.execute("SELECT task_id FROM trajectories WHERE NOT success").fetchall()}
        (miniwob,) = [b for b in batches if b.startswith("miniwob-")]
        (checks,) = [b for b in batches if b.startswith("checks-")]
        (rejected,) = connection.execute(
            "SELECT count(*) FROM synthesis_rejects WHERE batch = ?", [miniwob]
        ).fetchall()[0]
        # The reseed of a login form: a page with a few fields to fill, one screenshot per action.
        parent = "miniwob_login_user_7"
        child, child_batch = connection.execute(
            "SELECT s.task_id, t.batch FROM synthesized_tasks s JOIN trajectories t USING (task_id) "
            "WHERE list_contains(s.parent_task_ids, ?) ORDER BY 1 LIMIT 1",
            [parent],
        ).fetchall()[0]
    assert rejected > 0, "the demo's synthesis rejects some candidates (the rejects page shows them)"
    assert "off_by_one" in failed and len(failed) > 1
    with running_view(data) as url:
        yield Journey(url, data, batches, failed, checks, miniwob, rejected, parent, child, child_batch)


def _loaded(image: Locator) -> bool:
    return bool(image.evaluate("i => i.complete"))


def _document(page: Page, name: str, *, full_page: bool = True) -> None:
    """Save the page (or its first 1280x800) as docs/images/view-<name>.png once every image on it
    has loaded."""
    assert name in PAGES
    for image in page.locator("img").all():
        image.scroll_into_view_if_needed()
        wait_for(partial(_loaded, image), 10, f"{name}: an image to load")
    page.evaluate("window.scrollTo(0, 0)")
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=IMAGES / f"view-{name}.png", full_page=full_page, animations="disabled")


def _wait_for_page(page: Page, path: str, **query: str) -> None:
    """Wait until the page is at ``path`` (its segments as they are: no id here needs encoding)
    with at least ``query`` in its query string."""

    def there(url: str) -> bool:
        parts = urlsplit(url)
        return parts.path == path and query.items() <= dict(parse_qsl(parts.query)).items()

    page.wait_for_url(there)


def _nothing_happened_behind(watched: Watched, url: str) -> None:
    assert watched.dialogs == []
    assert foreign_requests(watched.requests, url) == []


def test_the_batches_page_shows_every_batch_of_the_demo_with_its_synthesis(journey: Journey, watched: Watched) -> None:
    page = watched.page
    response = page.goto(journey.url + "/")
    assert response is not None and response.ok
    listed = page.locator("tbody tr td:first-child").all_inner_texts()
    assert sorted(listed) == journey.batches and len(listed) == 5  # humaneval, miniwob, tasks, generation 1, checks
    miniwob = page.locator("tbody tr", has=page.get_by_role("link", name=journey.miniwob, exact=True))
    assert "web: 32/32" in miniwob.inner_text()
    assert f"rejected {journey.rejected}" in miniwob.inner_text()
    _document(page, "batches")
    _nothing_happened_behind(watched, journey.url)


def test_filter_to_failed_open_a_failed_trajectory_and_see_its_steps(journey: Journey, watched: Watched) -> None:
    page = watched.page
    page.goto(journey.url + "/")
    page.get_by_role("link", name="Trajectories", exact=True).click()
    page.locator("select[name=success]").select_option("false")
    page.get_by_role("button", name="Filter").click()
    _wait_for_page(page, "/trajectories", success="false")
    rows = page.locator("tbody tr")
    listed = set(rows.locator("td:first-child a").all_inner_texts())
    assert listed == journey.failed  # every failure of the lake, and nothing else
    assert rows.locator("span.fail").count() == len(journey.failed)

    page.get_by_role("link", name="off_by_one", exact=True).click()
    _wait_for_page(page, f"/trajectories/{journey.checks}/off_by_one")
    assert "failed" in page.locator("body > p").first.inner_text()
    steps = page.locator("section.step")
    assert steps.count() == 2
    assert "python_executor" in steps.nth(0).locator("h3").inner_text()
    assert "print(6 * 7 + 1)" in steps.nth(0).locator("pre.params").inner_text()
    observation = steps.nth(0).locator("details.observation")
    observation.locator("summary").click()
    assert observation.locator("pre").inner_text().strip() == "43"
    assert "complete_task" in steps.nth(1).locator("h3").inner_text()
    verifier = page.locator("pre.verifier").first.inner_text()
    assert "✗ python_tests" in verifier, verifier  # the check its tests failed
    _nothing_happened_behind(watched, journey.url)


def test_a_miniwob_trajectory_shows_each_browser_step_with_its_screenshot(journey: Journey, watched: Watched) -> None:
    page = watched.page
    page.goto(journey.url + "/")
    page.get_by_role("link", name=journey.miniwob, exact=True).first.click()
    _wait_for_page(page, "/trajectories", batch=journey.miniwob)
    page.get_by_role("link", name=journey.parent, exact=True).click()
    _wait_for_page(page, f"/trajectories/{journey.miniwob}/{journey.parent}")
    assert "succeeded" in page.locator("body > p").first.inner_text()
    steps = page.locator("section.step")
    tools = [step.locator("h3").inner_text() for step in steps.all()]
    browser_steps = [n for n, tool in enumerate(tools) if "browser" in tool]
    assert len(tools) == 4 and len(browser_steps) == 3 and "complete_task" in tools[-1]
    # Each browser action's page, as it looked after the action: an image the viewer serves.
    for n in browser_steps:
        image = steps.nth(n).locator("img.step-screenshot")
        assert image.count() == 1, f"step {n + 1} shows no screenshot"
        image.scroll_into_view_if_needed()
        wait_for(partial(_loaded, image), 10, "the screenshot to load")
        assert image.evaluate("i => i.naturalWidth") > 0
        assert image.evaluate("i => i.src").startswith(journey.url + "/")
    assert steps.nth(len(tools) - 1).locator("img.step-screenshot").count() == 0  # complete_task has no page
    _document(page, "trajectory")
    _nothing_happened_behind(watched, journey.url)


def test_follow_lineage_from_a_generation_1_task_to_its_parent_and_back(journey: Journey, watched: Watched) -> None:
    page = watched.page
    page.goto(journey.url + "/")
    page.get_by_role("link", name=journey.child_batch, exact=True).first.click()
    _wait_for_page(page, "/trajectories", batch=journey.child_batch)
    listed = page.locator("tbody tr td:first-child a").all_inner_texts()
    assert journey.child in listed and all(task.endswith("-reseed-g1") for task in listed)
    # The docs' list is this batch's, its first screen (the failures' descriptions are in Chinese,
    # which a machine without CJK fonts draws as boxes).
    _document(page, "trajectories", full_page=False)
    page.get_by_role("link", name=journey.child, exact=True).click()
    _wait_for_page(page, f"/trajectories/{journey.child_batch}/{journey.child}")
    page.locator("a.lineage").click()
    _wait_for_page(page, f"/lineage/{journey.child}")
    this, parents, children = (page.locator(f"section.{name}") for name in ("task", "parents", "children"))
    cells = this.locator("tbody td").all_inner_texts()
    assert cells[:4] == [journey.child, "1", "miniwob_reseed", journey.parent] and cells[-1] == "verified"
    assert parents.locator("a.task").all_inner_texts() == [journey.parent]
    assert parents.locator("tbody td").nth(1).inner_text() == "0"
    _document(page, "lineage")

    parents.locator("a.task").click()  # the parent's own lineage: generation 0, its children
    _wait_for_page(page, f"/lineage/{journey.parent}")
    assert parents.inner_text() == "None."
    assert journey.child in children.locator("a.task").all_inner_texts()
    children.locator("tr", has=page.get_by_role("link", name=journey.child, exact=True)).locator("a.task").click()
    _wait_for_page(page, f"/lineage/{journey.child}")  # and back to the child
    assert this.locator("a.task").all_inner_texts() == [journey.child]
    _nothing_happened_behind(watched, journey.url)


def test_open_the_rejects_of_a_batch(journey: Journey, watched: Watched) -> None:
    page = watched.page
    page.goto(journey.url + "/")
    miniwob = page.locator("tbody tr", has=page.get_by_role("link", name=journey.miniwob, exact=True))
    miniwob.get_by_role("link", name=f"rejected {journey.rejected}").click()
    _wait_for_page(page, "/rejects", batch=journey.miniwob)
    rows = page.locator("tbody tr")
    assert rows.count() == journey.rejected
    for row in rows.all():
        cells = row.locator("td")
        assert cells.nth(0).inner_text() == journey.miniwob
        assert cells.nth(1).inner_text() == "dedupe"
        assert re.fullmatch(r"exact copy of candidate \S+-reseed-g1", row.locator("pre.reason").inner_text())
        assert row.locator("a").count() >= 1  # its parents, linked to their lineage
    assert page.locator("p.stages").inner_text() == f"Rejects per stage: dedupe: {journey.rejected}"
    _document(page, "rejects")
    parent = rows.first.locator("a").first
    name = parent.inner_text()
    parent.click()  # a reject's parent: the MiniWoB task it was reseeded from
    _wait_for_page(page, f"/lineage/{name}")
    assert page.locator("section.task a.task").all_inner_texts() == [name]
    _nothing_happened_behind(watched, journey.url)


def test_the_readme_shows_every_page_the_journey_documents() -> None:
    """README links each screenshot this file makes, each exists and is small enough for the repository."""
    readme = (REPO / "README.md").read_text()
    # Markdown images and links, and the HTML thumbnails (<a href=...><img src=...>).
    linked = set(re.findall(r"(?:\]\(|(?:src|href)=\")(docs/images/[^)\"#\s]+)", readme))
    made = {f"docs/images/view-{name}.png" for name in PAGES}
    assert made <= linked, f"README does not show {sorted(made - linked)}"
    for link in sorted(linked):
        path = REPO / link
        assert path.is_file(), link
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
        assert path.stat().st_size <= MAX_IMAGE_BYTES, f"{link}: {path.stat().st_size} bytes"

"""`adp view`'s trajectories list (issue #21): every filter, the search and every sort against a
direct DuckDB query over the same lake, keyset walks through the links' own query strings,
previous/next within a filter, bad parameters answered 400, and the form driven in Chromium.

The lake is written with ``Lake.write_partition``: three batches whose rows tie on every sort
value, lack a time, a verifier, a model or a generation, fail with and without an error type,
and whose descriptions carry ``%``, ``_``, quotes, a backslash and non-ASCII letters.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import duckdb
import pytest

from adp_pipeline.storage import Lake, QueryLimits, open_catalog
from adp_pipeline.storage.view_queries import (
    FilterChoices,
    SortKey,
    SortOrder,
    TrajectoryFilter,
    VerifiedFilter,
    neighbours,
    trajectory_page,
)
from adp_pipeline.view.connections import ChoicesCache, SharedCatalog
from adp_pipeline.view.filters import BadParameter, cursor_params, filter_params, parse_query
from adp_pipeline.view.links import route
from tests.helpers import Watched, foreign_requests, lake_task_row, lake_trajectory_row, running_view

BATCHES = ["2026-11-01T00-00-00_a", "2026-11-02T00-00-00_b", "2026-11-03T00-00-00_c"]
PER_BATCH = 40
START = datetime(2026, 11, 1, tzinfo=UTC)
DESCRIPTIONS = [
    "Report 50% done",
    "use snake_case names",
    'It\'s "quoted"',
    "a back\\slash path",
    "Ärger im Büro",
    "snakeXcase lookalike",
    "500 items",
]
SORTS = {"created": "created_at", "task_id": "task_id", "batch": "batch", "duration": "total_duration",
         "steps": "n_steps", "tokens": "total_tokens"}  # fmt: skip
# Each filter as the page's query string, and the same filter written directly in SQL.
FILTERS: list[tuple[dict[str, str], str]] = [
    ({}, "TRUE"),
    ({"batch": BATCHES[1]}, f"batch = '{BATCHES[1]}'"),
    ({"task_type": "web"}, "task_type = 'web'"),
    ({"success": "false"}, "NOT success"),
    ({"success": "true"}, "success"),
    ({"verified": "true"}, "verified"),
    ({"verified": "false"}, "verified = false"),
    ({"verified": "none"}, "verified IS NULL"),
    ({"error_type": "timeout"}, "error_type = 'timeout'"),
    ({"error_type": "none"}, "error_type IS NULL"),
    ({"policy": "openai"}, "policy = 'openai'"),
    ({"model": "m-large"}, "model = 'm-large'"),
    ({"generation": "0"}, "(generation = 0 OR generation IS NULL)"),
    ({"generation": "2"}, "generation = 2"),
    ({"search": "SNAKE"}, "(task_id ILIKE '%snake%' OR description ILIKE '%snake%')"),
    ({"success": "false", "task_type": "web", "policy": "oracle"},
     "NOT success AND task_type = 'web' AND policy = 'oracle'"),
    ({"batch": BATCHES[2], "verified": "none", "generation": "0"},
     f"batch = '{BATCHES[2]}' AND verified IS NULL AND (generation = 0 OR generation IS NULL)"),
]  # fmt: skip


@dataclass(frozen=True)
class Rows:
    data: Path
    ids: list[tuple[str, str]]  # every (batch, task_id)
    descriptions: dict[tuple[str, str], str]


def _trajectory(batch: int, n: int) -> dict[str, object]:
    success = n % 3 != 0
    row = lake_trajectory_row(_task_id(batch, n), [{"role": "user", "content": "hi"}])
    row.update(
        task_type=["code", "web", "reasoning"][(n // 2) % 3],
        success=success,
        verified=None if n % 5 == 0 else success and n % 4 != 1,
        error_type=None if success else ["timeout", "runtime_error", None][(n + batch) % 3],
        error_message=None if success else "it failed",
        policy=["oracle", "openai"][(n // 5) % 2],
        model=None if n % 4 == 0 else ["m-small", "m-large"][(n // 2) % 2],
        generation=None if n % 6 == 0 else n % 3,
        n_steps=n % 4 + 1,
        total_duration=[0.1, 1 / 3, 2.5, 0.1 + 0.2][(n + batch) % 4],
        total_tokens=(n % 5) * 100,
        created_at=None if n % 7 == 3 else START + timedelta(seconds=(n + 2 * batch) // 2),
    )
    return row


def _task_id(batch: int, n: int) -> str:
    return "x_y" if (batch, n) == (2, 13) else f"{'abc'[batch]}-{n:02d}"


def _untimed() -> set[tuple[str, str]]:
    return {
        (BATCHES[b], _task_id(b, n))
        for b in range(len(BATCHES))
        for n in range(PER_BATCH)
        if _trajectory(b, n)["created_at"] is None
    }


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Rows:
    data = tmp_path_factory.mktemp("filters") / "data"
    lake = Lake(data)
    ids, descriptions = [], {}
    for b, batch in enumerate(BATCHES):
        trajectories = [_trajectory(b, n) for n in range(PER_BATCH)]
        tasks = []
        for n in range(PER_BATCH):
            task = lake_task_row(_task_id(b, n))
            task["description"] = DESCRIPTIONS[(n + b) % len(DESCRIPTIONS)] + f" (task {n})"
            if (b, n) != (1, 13):  # a trajectory without a task row: no description to search
                tasks.append(task)
                descriptions[(batch, _task_id(b, n))] = str(task["description"])
            ids.append((batch, _task_id(b, n)))
        steps = [
            {"task_id": t["task_id"], "step_id": 1, "tool": "python_executor", "action_type": "tool_call",
             "action_params": json.dumps({"code": "print(1)"}), "observation": "1", "success": True,
             "duration": 0.1}
            for t in trajectories
        ]  # fmt: skip
        lake.write_partition("tasks", batch, tasks)
        lake.write_partition("steps", batch, steps)
        lake.write_partition("trajectories", batch, trajectories)
    return Rows(data, ids, descriptions)


@pytest.fixture(scope="module")
def lake_db(rows: Rows) -> Iterator[duckdb.DuckDBPyConnection]:
    with Lake(rows.data).connect() as connection:
        yield connection


@pytest.fixture(scope="module")
def catalog(rows: Rows) -> Iterator[duckdb.DuckDBPyConnection]:
    with open_catalog(rows.data) as connection:
        yield connection


@pytest.fixture(scope="module")
def view(rows: Rows) -> Iterator[str]:
    with running_view(rows.data) as url:
        yield url


def _expected(lake_db: duckdb.DuckDBPyConnection, condition: str, sort: str, order: str) -> list[tuple[str, str]]:
    """What a direct query says: the filter's rows, by the sort's column, NULLs last, ties by
    batch then task id in the same direction."""
    column = SORTS[sort]
    sql = (
        "SELECT batch, task_id FROM trajectories LEFT JOIN (SELECT batch, task_id, description FROM tasks) "
        f"USING (batch, task_id) WHERE {condition} ORDER BY {column} {order} NULLS LAST, batch {order}, task_id {order}"
    )
    return [(str(b), str(t)) for b, t in lake_db.execute(sql).fetchall()]


def _walk(catalog: duckdb.DuckDBPyConnection, params: dict[str, str], size: int) -> list[tuple[str, str]]:
    """Every page of the list from the first, each next page read from the link the page shows
    (its query string, as a browser sends it back)."""
    walked: list[tuple[str, str]] = []
    query = parse_query(params.items())
    for _ in range(1000):
        page = trajectory_page(catalog, query.filter(), query.cursor(), size)
        walked += [(row.batch, row.task_id) for row in page.rows]
        if page.next_after is None:
            return walked
        link = route(["trajectories"], filter_params(query.filter()) | cursor_params(page.next_after))
        query = parse_query(parse_qsl(urlsplit(link).query, keep_blank_values=True))
    raise AssertionError("the walk never ended")


def _cases() -> Iterator[tuple[dict[str, str], str, str, str]]:
    """Every filter in the default order, and every sort both ways unfiltered and under two
    filters (one of them the search)."""
    for params, condition in FILTERS:
        yield params, condition, "created", "desc"
    for sort in SORTS:
        for order in ("asc", "desc"):
            for params, condition in (FILTERS[0], FILTERS[3], FILTERS[14]):
                yield params, condition, sort, order


def test_every_filter_and_sort_lists_what_a_direct_query_says_each_row_once(
    rows: Rows, lake_db: duckdb.DuckDBPyConnection, catalog: duckdb.DuckDBPyConnection
) -> None:
    for params, condition, sort, order in _cases():
        expected = _expected(lake_db, condition, sort, order)
        assert expected, (params, "a filter that matches nothing proves little")
        walked = _walk(catalog, params | {"sort": sort, "order": order}, size=9)
        assert walked == expected, (params, sort, order)
        assert len(set(walked)) == len(walked)
    everything = _walk(catalog, {"sort": "duration", "order": "asc"}, size=7)
    assert sorted(everything) == sorted(rows.ids)  # the whole lake, each trajectory once
    untimed = _untimed()  # rows without a time come last both ways, and pages cross into them
    for order in ("asc", "desc"):
        assert set(_walk(catalog, {"sort": "created", "order": order}, size=4)[-len(untimed) :]) == untimed


def test_each_page_shows_its_rows_details_and_description(rows: Rows, catalog: duckdb.DuckDBPyConnection) -> None:
    where = TrajectoryFilter(batch=BATCHES[1], sort=SortKey.TASK_ID, order=SortOrder.ASC)
    page = trajectory_page(catalog, where, None, 50)
    shown = {(r.batch, r.task_id): r for r in page.rows}
    assert len(shown) == PER_BATCH and page.next_after is None
    assert all(r.description == rows.descriptions.get(k) for k, r in shown.items())
    assert shown[(BATCHES[1], "b-13")].description is None  # no task row
    for n in range(PER_BATCH):
        row, written = shown[(BATCHES[1], _task_id(1, n))], _trajectory(1, n)
        assert (row.n_steps, row.total_tokens, row.model, row.total_duration, row.created_at) == (
            written["n_steps"], written["total_tokens"], written["model"], written["total_duration"],
            written["created_at"],
        )  # fmt: skip
        assert row.generation == (written["generation"] or 0)


@pytest.mark.parametrize(
    "needle",
    ["%", "50%", "_", "e_c", "'", '"', "\\", "ÄRGER", "büro", "X_Y", "snake_case", "(task 1"],
)
def test_search_matches_its_text_literally_and_ignores_case(
    rows: Rows, catalog: duckdb.DuckDBPyConnection, needle: str
) -> None:
    expected = {
        key
        for key in rows.ids
        if needle.lower() in key[1].lower() or needle.lower() in rows.descriptions.get(key, "").lower()
    }
    assert expected and len(expected) < len(rows.ids)  # a wildcard would match every row
    query = parse_query(parse_qsl(urlencode({"search": needle})))
    found = trajectory_page(catalog, query.filter(), None, 1000)
    assert {(r.batch, r.task_id) for r in found.rows} == expected


def test_search_wildcards_do_not_match_what_they_would_as_patterns(catalog: duckdb.DuckDBPyConnection) -> None:
    # "e_c" as a LIKE pattern would match "snakeXcase"; "50%" would match "500 items".
    found = trajectory_page(catalog, TrajectoryFilter(search="e_c"), None, 1000)
    assert {r.description.split(" (")[0] for r in found.rows if r.description} == {"use snake_case names"}
    found = trajectory_page(catalog, TrajectoryFilter(search="50%"), None, 1000)
    assert {r.description.split(" (")[0] for r in found.rows if r.description} == {"Report 50% done"}


@pytest.mark.parametrize(
    ("params", "condition", "sort", "order"),
    [
        ({}, "TRUE", "created", "desc"),
        ({}, "TRUE", "created", "asc"),
        ({"success": "false", "task_type": "web"}, "NOT success AND task_type = 'web'", "tokens", "asc"),
        ({"verified": "none"}, "verified IS NULL", "duration", "desc"),
        ({"search": "snake"}, FILTERS[14][1], "steps", "asc"),
    ],
)
def test_previous_and_next_walk_the_filtered_list_in_order(
    lake_db: duckdb.DuckDBPyConnection,
    catalog: duckdb.DuckDBPyConnection,
    params: dict[str, str],
    condition: str,
    sort: str,
    order: str,
) -> None:
    expected = _expected(lake_db, condition, sort, order)
    where = parse_query((params | {"sort": sort, "order": order}).items()).filter()
    for index, (batch, task_id) in enumerate(expected):
        around = neighbours(catalog, where, batch, task_id)
        assert around.previous == (expected[index - 1] if index else None), (batch, task_id)
        assert around.next == (expected[index + 1] if index + 1 < len(expected) else None), (batch, task_id)


def test_filter_choices_are_the_lakes_values(lake_db: duckdb.DuckDBPyConnection, rows: Rows) -> None:
    def distinct(sql: str) -> list[str]:
        found = lake_db.execute(f"SELECT DISTINCT {sql} AS v FROM trajectories WHERE v IS NOT NULL ORDER BY v")
        return [str(v) for (v,) in found.fetchall()]

    choices = ChoicesCache(Lake(rows.data).root)
    with open_catalog(rows.data) as connection:
        found = choices.get(connection)
    assert found == FilterChoices(
        batches=BATCHES[::-1],
        task_types=distinct("task_type"),
        error_types=distinct("coalesce(error_type, 'none')"),
        policies=distinct("policy"),
        models=distinct("model"),
        generations=[0, 1, 2],
    )


def test_choices_and_a_shared_connection_see_a_batch_written_after_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    lake = Lake(data)
    lake.write_partition("trajectories", "b1", [lake_trajectory_row("one", [])])
    shared = SharedCatalog(data, QueryLimits(512, 512, 1, 30), max_age=3600)
    choices = ChoicesCache(lake.root)
    with shared.cursor() as connection:
        assert choices.get(connection).batches == ["b1"]
        assert connection.execute("SELECT count(*) FROM trajectories").fetchone() == (1,)
    lake.write_partition("trajectories", "b2", [lake_trajectory_row("two", []), lake_trajectory_row("three", [])])
    with shared.cursor() as connection:  # the same connection, a new cursor
        assert choices.get(connection).batches == ["b2", "b1"]
        assert connection.execute("SELECT count(*) FROM trajectories").fetchone() == (3,)
        with pytest.raises(duckdb.Error):  # as confined as the catalog's own connection
            connection.execute("SELECT * FROM read_text('/etc/hostname')").fetchall()
    shared.close()
    aged = SharedCatalog(data, QueryLimits(512, 512, 1, 30), max_age=0)  # a new connection each time
    with aged.cursor() as first, aged.cursor() as second:  # the first stays usable while retired
        assert second.execute("SELECT count(*) FROM trajectories").fetchone() == (3,)
        assert first.execute("SELECT count(*) FROM trajectories").fetchone() == (3,)
    aged.close()


def _status_and_body(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize(
    ("query", "name", "says"),
    [
        ("sort=newest", "sort", "created, task_id, batch, duration, steps, tokens"),
        ("order=up", "order", "asc, desc"),
        ("success=maybe", "success", "true, false"),
        ("verified=yes", "verified", "true, false, none"),
        ("generation=first", "generation", "integer"),
        ("generation=-1", "generation", "greater than or equal to 0"),
        ("sucess=false", "sucess", "is not a parameter of this page"),
        ("batch=a&batch=b", "batch", "more than once"),
        ("sort=duration&after_value=fast&after_batch=a&after_task=b", "after_value", "fast"),
        ("sort=%3Cscript%3Ealert(1)%3C/script%3E", "sort", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(view: str, query: str, name: str, says: str) -> None:
    status, body = _status_and_body(f"{view}/trajectories?{query}")
    assert status == 400
    assert f"<code class=parameter>{name}</code>" in body and says in body
    assert "<script>" not in body


def test_the_trajectory_page_refuses_a_bad_filter_and_ignores_its_own_parameters(view: str) -> None:
    status, body = _status_and_body(f"{view}/trajectories/{BATCHES[0]}/a-01?order=sideways")
    assert status == 400 and "<code class=parameter>order</code>" in body
    status, body = _status_and_body(f"{view}/trajectories/{BATCHES[0]}/a-01?tab=steps&policy=oracle")
    assert status == 200 and 'class=list href="/trajectories?policy=oracle"' in body


def test_parse_query_reads_what_filter_params_writes() -> None:
    where = TrajectoryFilter(
        batch="b&c=d",
        success=False,
        verified=VerifiedFilter.NO_VERIFIER,
        generation=0,
        search="50% _x_",
        sort=SortKey.TOKENS,
        order=SortOrder.ASC,
    )
    assert parse_query(parse_qsl(urlsplit(route(["t"], filter_params(where))).query)).filter() == where
    assert filter_params(TrajectoryFilter()) == {}  # the defaults leave the link bare
    with pytest.raises(BadParameter, match="after_value"):
        parse_query([("sort", "steps"), ("after_value", "1.5"), ("after_batch", "b"), ("after_task", "t")])


def test_filter_to_failed_web_open_one_and_follow_next_in_chromium(
    view: str, watched: Watched, lake_db: duckdb.DuckDBPyConnection
) -> None:
    expected = _expected(lake_db, "NOT success AND task_type = 'web'", "created", "desc")
    assert len(expected) >= 3
    page = watched.page
    response = page.goto(view + "/trajectories")
    assert response is not None and response.ok
    assert page.locator("select[name=batch] option").all_inner_texts() == ["any", *BATCHES[::-1]]
    page.locator("select[name=success]").select_option("false")
    page.locator("select[name=task_type]").select_option("web")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/trajectories\?.*task_type=web.*"))
    assert {"task_type": "web", "success": "false"}.items() <= dict(parse_qsl(urlsplit(page.url).query)).items()
    assert page.locator("tbody a.task").all_inner_texts() == [t for _, t in expected]
    assert page.locator("select[name=task_type]").input_value() == "web"  # the form shows the filter
    page.locator("tbody a.task").first.click()
    for index, (batch, task_id) in enumerate(expected):
        page.wait_for_url(re.compile(rf".*/trajectories/{re.escape(quote(batch))}/{re.escape(task_id)}\?.*"))
        assert page.locator("h1").inner_text() == task_id
        assert page.locator("nav.neighbours a.previous").count() == (1 if index else 0)
        if index + 1 == len(expected):
            assert page.locator("nav.neighbours a.next").count() == 0  # the end of the filtered list
            break
        page.locator("nav.neighbours a.next").click()
    page.locator("nav.neighbours a.previous").click()
    page.wait_for_url(re.compile(rf".*/{re.escape(expected[-2][1])}\?.*success=false.*"))
    page.locator("nav.neighbours a.list").click()
    page.wait_for_url(re.compile(r".*/trajectories\?task_type=web&success=false$"))
    assert page.locator("tbody a.task").all_inner_texts() == [t for _, t in expected]
    assert watched.dialogs == [] and foreign_requests(watched.requests, view) == []


def test_the_next_page_link_keeps_the_filter_over_http(view: str, lake_db: duckdb.DuckDBPyConnection) -> None:
    expected = _expected(lake_db, "policy = 'openai'", "duration", "asc")
    url, walked = f"{view}/trajectories?policy=openai&sort=duration&order=asc", []
    while url:
        status, body = _status_and_body(url)
        assert status == 200
        links = [m.replace("&amp;", "&") for m in re.findall(r'<a class=task href="([^"]+)"', body)]
        assert all("policy=openai" in link and "sort=duration" in link for link in links)
        walked += [tuple(unquote(part) for part in urlsplit(link).path.split("/")[2:4]) for link in links]
        found = re.search(r'<a rel=next href="([^"]+)"', body)
        url = view + found.group(1).replace("&amp;", "&") if found else ""
    assert walked == expected
    assert len(expected) > 50  # more than one page of 50


def test_concurrent_requests_each_get_their_own_cursor(view: str) -> None:
    # The server's thread pool runs pages at once on cursors of one shared connection.
    paths = [
        "/trajectories",
        "/trajectories?success=false&sort=tokens&order=asc",
        "/trajectories?search=snake",
        f"/trajectories/{BATCHES[1]}/b-05?verified=none",
        "/",
    ]
    alone = {path: _status_and_body(view + path) for path in paths}
    assert all(status == 200 for status, _ in alone.values())
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda path: (path, _status_and_body(view + path)), paths * 8))
    assert all(answer == alone[path] for path, answer in together)

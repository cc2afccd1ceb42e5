"""`adp view` against a lake that fights back (#21): rows no run should write but a bug, a hostile
model or a hand edit can, written with ``Lake.write_partition`` from the rows of a real ``adp run
--policy oracle``, and a real ``adp view`` process reading them.

- Sizes: every long value of a trajectory's page (observation, parameters, result, errors,
  verifier, description, constraints, a reject's reason) is shown cut, with a note, and read cut
  (the page stays small and fast); a trajectory with thousands of steps shows its first ones and
  says so; the messages tab does not read a record of many MB.
- JSON nested past Python's parser (verifier, parameters, constraints, messages) is shown as text,
  not answered with a 500.
- An unexpected error's page still carries the security headers (Starlette answers it outside
  the middleware).
- A request addressed to another host name (DNS rebinding: a site pointing its own domain at
  127.0.0.1) is refused; ``--host 0.0.0.0`` warns that the viewer has no login.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from adp_pipeline.storage import Lake, QueryLimits
from adp_pipeline.storage.view_queries import MAX_SHOWN_CHARS, MAX_SHOWN_RELATIVES, MAX_SHOWN_STEPS
from adp_pipeline.view import build_app
from adp_pipeline.view.app import MAX_LINKED_PARENTS, SECURITY_HEADERS
from adp_pipeline.view.links import route
from adp_pipeline.view.trajectory_page import MAX_RECORD_SOURCE_CHARS
from runtimes.settings import Settings
from tests.helpers import code_task, free_port, oracle_run, running_view, wait_for

BIG = 3 * MAX_SHOWN_CHARS  # well past what a page shows
MANY_STEPS = MAX_SHOWN_STEPS * 5
# Each long value starts with its own marker, so the page shows which it cut.
LONG = {
    name: f"<{name}>" + "x" * BIG
    for name in ("observation", "final", "error", "step_error", "description", "verifier", "reason", "param")
}
DEEP_OBJECT = '{"a":' * 5000 + "1" + "}" * 5000  # deeper than Python's json parser goes
DEEP_ARRAY = "[" * 5000 + "]" * 5000


@dataclass(frozen=True)
class Hostile:
    url: str
    data: Path
    port: int


def _rows(lake: Lake, table: str, batch: str) -> list[dict[str, Any]]:
    rows = pq.read_table(lake.partition_file(table, batch).parent).to_pylist()
    return [{k: v for k, v in row.items() if k != "batch"} for row in rows]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("redteam")
    (root / "t.jsonl").write_text(code_task("square", "print(4)", "4") + "\n")
    data = root / "data"
    batch = oracle_run(root / "t.jsonl", data)
    lake = Lake(data)
    (trajectory,), steps, (task,) = (_rows(lake, t, batch) for t in ("trajectories", "steps", "tasks"))

    def run(task_id: str, **fields: object) -> dict[str, Any]:
        return {**trajectory, "task_id": task_id, **fields}

    trajectories = [
        run("big", final_result=LONG["final"], error_message=LONG["error"], verifier=LONG["verifier"]),
        run("many", n_steps=MANY_STEPS),
        run("deep", verifier=DEEP_OBJECT, messages=DEEP_ARRAY),
        run("chatty", messages=json.dumps([{"role": "user", "content": "y" * MAX_RECORD_SOURCE_CHARS}])),
    ]
    step = steps[0]
    step_rows = [
        {**step, "task_id": "big", "observation": LONG["observation"], "error_message": LONG["step_error"]},
        {**step, "task_id": "big", "step_id": 1, "action_params": json.dumps({"code": LONG["param"]})},
        *({**step, "task_id": "many", "step_id": n, "observation": f"step {n}"} for n in range(MANY_STEPS)),
        {**step, "task_id": "deep", "action_params": DEEP_OBJECT},
    ]
    tasks = [
        {**task, "task_id": "big", "description": LONG["description"], "constraints": json.dumps({"x": "y" * BIG})},
        {**task, "task_id": "deep", "constraints": DEEP_OBJECT},
    ]
    rejects = [
        {"candidate_id": "c1", "task_type": "code", "mutation": "reseed", "stage": "validation",
         "reason": LONG["reason"], "parent_task_ids": ["square"], "essence_ids": [], "description": "d",
         "task": None, "tokens": 1, "created_at": trajectory["created_at"]},
    ]  # fmt: skip
    lake.write_partition("trajectories", "hostile", trajectories)
    lake.write_partition("steps", "hostile", step_rows)
    lake.write_partition("tasks", "hostile", tasks)
    lake.write_partition("synthesis_rejects", "hostile", rejects)
    # A task run twice: it failed in the first batch and passed when run again, in a batch whose
    # name sorts first (a batch's name says nothing of when it ran).
    before = trajectory["created_at"] - timedelta(days=1)
    lake.write_partition("trajectories", "zzz-first", [run("rerun", success=False, verified=False, created_at=before)])
    lake.write_partition("trajectories", "aaa-again", [run("rerun", success=True, verified=True)])
    # A seed with more children than a page lists, and a task naming more parents than it lists.
    made = {"task_type": "code", "generation": 1, "mutation": "reseed", "essence_ids": [], "description": "d",
            "task": "{}", "task_file": "synth.jsonl", "tokens": 0, "created_at": trajectory["created_at"]}  # fmt: skip
    fan = 2 * MAX_SHOWN_RELATIVES
    lake.write_partition(
        "synthesized_tasks",
        "hostile",
        [{**made, "task_id": f"child-{n:05}", "parent_task_ids": ["seed"]} for n in range(fan)]
        + [{**made, "task_id": "orphan", "parent_task_ids": [f"parent-{n:05}" for n in range(fan)]}],
    )
    with running_view(data) as url:
        yield Hostile(url, data, int(url.rsplit(":", 1)[1]))


def _get(base: str, path: str, method: str = "GET", host: str | None = None) -> tuple[int, dict[str, str], str]:
    port = int(base.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, headers={} if host is None else {"Host": host})
        response = connection.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read().decode(errors="replace"),
        )
    finally:
        connection.close()


def _secured(headers: dict[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name.lower()) == value, name


def test_every_long_value_is_shown_cut_with_a_note(hostile: Hostile) -> None:
    status, _, body = _get(hostile.url, route(["trajectories", "hostile", "big"]))
    assert status == 200
    assert len(body) < 12 * MAX_SHOWN_CHARS  # eight values of 3x the cap, each shown up to the cap
    for name in ("observation", "final", "error", "step_error", "description", "verifier", "param"):
        value = LONG[name]
        escaped = f"&lt;{name}&gt;"
        assert body.count(escaped) >= 1, name
        assert value not in body and "x" * (MAX_SHOWN_CHARS + 1) not in body, name
    notes = re.findall(r"… cut: only the first [\d,]+ characters are shown", body)
    assert len(notes) >= 7  # final, error, step error, description, constraints, verifier, parameters, observation
    # The observation's summary tells its real size, and that it is cut.
    assert f"Observation ({len(LONG['observation'])} chars, cut)" in body

    status, _, rejects = _get(hostile.url, route(["rejects"], {"batch": "hostile"}))
    assert status == 200 and "&lt;reason&gt;" in rejects and "x" * (MAX_SHOWN_CHARS + 1) not in rejects
    assert "… cut" in rejects


def test_a_trajectory_of_thousands_of_steps_shows_the_first_and_says_so(hostile: Hostile) -> None:
    status, _, body = _get(hostile.url, route(["trajectories", "hostile", "many"]))
    assert status == 200
    shown = re.findall(r'<section class="step" id="step-(\d+)"', body)
    assert [int(s) for s in shown] == list(range(MAX_SHOWN_STEPS))  # the first ones, in order
    assert f"<h2>Steps ({MANY_STEPS})</h2>" in body
    assert f"Only the first {MAX_SHOWN_STEPS} of {MANY_STEPS} steps are shown" in body


def test_json_nested_too_deep_is_text_not_a_server_error(hostile: Hostile) -> None:
    status, _, steps_tab = _get(hostile.url, route(["trajectories", "hostile", "deep"]))
    assert status == 200, steps_tab[:500]
    assert "{&quot;a&quot;:{&quot;a&quot;:" in steps_tab  # verifier, parameters, constraints: as text
    status, _, messages = _get(hostile.url, route(["trajectories", "hostile", "deep"], {"tab": "messages"}))
    assert status == 200 and "nested too deep" in messages


def test_the_messages_tab_does_not_read_a_record_of_many_megabytes(hostile: Hostile) -> None:
    status, _, body = _get(hostile.url, route(["trajectories", "hostile", "chatty"], {"tab": "messages"}))
    assert status == 200
    assert "more than a page shows" in body and "adp export" in body
    assert len(body) < 10_000


def test_another_sites_host_name_is_refused_and_every_answer_carries_the_headers(hostile: Hostile) -> None:
    url = hostile.url
    for host in (
        "evil.example",
        f"evil.example:{hostile.port}",
        "127.0.0.1.evil.example",
        "",
        "[::2]:1",
        "evil.example@127.0.0.1",  # a Host is no URL: user info, a path or a fragment is refused
        "localhost/x",
        "evil.example#@localhost",
    ):
        status, headers, body = _get(url, "/", host=host)
        assert status == 421, host
        assert "Unknown host" in body and "hostile" not in body and "square" not in body  # nothing of the lake
        _secured(headers)
    for host in (f"127.0.0.1:{hostile.port}", f"localhost:{hostile.port}", "LOCALHOST"):
        status, headers, _ = _get(url, "/", host=host)
        assert status == 200, host
        _secured(headers)
    for method, path, expected in [
        ("GET", "/no/such/page", 404),
        ("POST", "/", 405),
        ("DELETE", route(["trajectories", "hostile", "big"]), 405),
        ("HEAD", "/trajectories", 200),
        ("GET", "/trajectories?sort=sideways", 400),
        ("GET", route(["screenshots", "hostile", "0", "big"]), 404),
    ]:
        status, headers, _ = _get(url, path, method)
        assert status == expected, (method, path)
        _secured(headers)


def test_a_public_bind_warns_that_the_viewer_has_no_login(hostile: Hostile) -> None:
    said: list[str] = []
    with running_view(hostile.data, host="0.0.0.0", said=said) as url:
        # Bound to every address by choice: any Host is answered (the operator names it).
        status, _, _ = _get(url, "/", host="viewer.internal.example")
        assert status == 200
    assert "no login" in said[0] and "127.0.0.1" in said[0]


def test_a_public_bind_with_adp_view_url_answers_only_that_host(hostile: Hostile) -> None:
    # The compose service: bound to 0.0.0.0 in its container, published on the host's 127.0.0.1,
    # ADP_VIEW_URL saying how it is reached. A page of another site pointing its domain at the
    # published port (DNS rebinding) is refused; the URL's host and local names are answered.
    said: list[str] = []
    env = {"ADP_VIEW_URL": "http://Viewer.Internal.example:8080/"}
    with running_view(hostile.data, host="0.0.0.0", env=env, said=said) as url:
        port = urlsplit(url).port
        for host, expected in [
            ("evil.example", 421),
            (f"evil.example:{port}", 421),
            ("viewer.internal.example:8080", 200),
            (f"127.0.0.1:{port}", 200),
            ("localhost", 200),
        ]:
            status, headers, _ = _get(url, "/", host=host)
            assert status == expected, host
            _secured(headers)
    assert "no login" not in said[0]


def test_an_unexpected_error_page_carries_the_security_headers_and_no_trace(hostile: Hostile) -> None:
    app = build_app(hostile.data, QueryLimits.from_settings(Settings()), hosts=None)

    def broken(request: Request) -> Response:
        raise RuntimeError("<script>secret-trace</script>")

    app.add_route("/broken", broken)  # a bug in a page: Starlette answers it outside the middleware
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "the viewer in a thread")
        status, headers, body = _get(f"http://127.0.0.1:{port}", "/broken")
    finally:
        server.should_exit = True
        thread.join(10)
    assert status == 500
    _secured(headers)
    assert "secret-trace" not in body and "Internal error" in body


def test_a_lineage_lists_its_first_relatives_and_says_how_many_there_are(hostile: Hostile) -> None:
    fan = 2 * MAX_SHOWN_RELATIVES
    status, _, seed = _get(hostile.url, route(["lineage", "seed"]))
    assert status == 200
    children = re.findall(r"/lineage/(child-\d+)", seed)
    assert sorted(set(children)) == [f"child-{n:05}" for n in range(MAX_SHOWN_RELATIVES)]
    assert f"<h2>Children ({fan})</h2>" in seed and f"The first {MAX_SHOWN_RELATIVES} children" in seed

    status, _, orphan = _get(hostile.url, route(["lineage", "orphan"]))
    assert status == 200
    assert f"Parents, up to generation 0 ({MAX_SHOWN_RELATIVES})" in orphan
    assert f"The walk stopped at {MAX_SHOWN_RELATIVES} parents" in orphan
    # Its own row links its first parents and counts the rest, rather than a thousand links.
    assert f"and {fan - MAX_LINKED_PARENTS} more" in orphan
    assert len(re.findall(r'href="/lineage/parent-', orphan)) == MAX_SHOWN_RELATIVES + MAX_LINKED_PARENTS


def test_a_lineage_shows_the_outcome_of_the_latest_run_not_of_the_last_batch_name(hostile: Hostile) -> None:
    status, _, body = _get(hostile.url, route(["lineage", "rerun"]))
    assert status == 200
    task_row = body.split("<section class=task>", 1)[1].split("</section>", 1)[0]
    assert 'href="/trajectories/aaa-again/rerun"' in task_row and "not verified" not in task_row
    assert ">verified<" in task_row


def test_a_re_run_steps_new_screenshot_gets_a_new_url_and_only_a_named_file_is_cached_for_good(
    hostile: Hostile,
) -> None:
    """The screenshot route names a step; the step's page adds the file it shows (``v``), which
    a re-run of the batch changes: a browser that cached the old image forever never shows it
    for the new run."""
    lake = Lake(hostile.data)
    (step,) = (s for s in _rows(lake, "steps", "hostile") if s["task_id"] == "deep")
    page = route(["trajectories", "shots", "deep"])
    lake.write_partition("trajectories", "shots", [{**_rows(lake, "trajectories", "hostile")[0], "task_id": "deep"}])
    seen = []
    for words in ("the first run", "the re-run"):
        jpeg = b"\xff\xd8 " + words.encode() + b" \xff\xd9"
        stored = lake.write_screenshot("shots", "deep", 0, jpeg)
        lake.write_partition("steps", "shots", [{**step, "screenshot": stored}])
        status, _, body = _get(hostile.url, page)
        assert status == 200
        (src,) = set(re.findall(r'<img class=step-screenshot src="([^"]+)"', body))
        src = src.replace("&amp;", "&")
        status, headers, image = _get(hostile.url, src)
        assert status == 200 and words in image and "immutable" in headers["cache-control"]
        seen.append((src, headers["cache-control"]))
        # The step's URL without the file's name is not cached for good: it follows the step.
        status, headers, _ = _get(hostile.url, route(["screenshots", "shots", str(step["step_id"]), "deep"]))
        assert status == 200 and headers["cache-control"] == "no-cache"
    assert seen[0][0] != seen[1][0]

"""Links from Dagster into `adp view` (#21): with ADP_VIEW_URL set (in code here), a real
materialisation's metadata links the batch, the example of its top error type and the batch's
synthesis rejects, and each link answers 200 from a real `adp view` over the same lake with the
page it names; without the setting there is no link. The links are built in one place
(adp_pipeline/view/links.py), encoded as the view encodes its own."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import dagster as dg
import pytest
from pydantic import ValidationError

from adp_pipeline.view.links import ViewLinks, route
from runtimes.settings import Settings
from tests.helpers import code_task, free_port, materialize_file, running_view

# A task id with what a URL must encode: a space, '#', '?', '&', '=', '%' and a non-ASCII letter.
ODD_ID = "bad #1?x=&y%20ü"


def _links(result: dg.ExecuteInProcessResult, node: str) -> dict[str, str]:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items() if isinstance(v, dg.UrlMetadataValue)}


def _task_file(tmp_path: Path) -> Path:
    path = tmp_path / "links.jsonl"
    lines = [code_task("fine", "print(4)", "4"), code_task(ODD_ID, "print(1)", "1", tests="assert False")]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_metadata_links_open_the_viewers_pages_of_the_batch(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/"  # a trailing slash must not double in the links
    linked = settings.model_copy(update={"view_url": base, "synth_max_generation": 0})
    with dg.instance_for_test() as instance:
        result = materialize_file(_task_file(tmp_path), linked, instance)
    assert result.success
    (batch,) = {m.partition for m in result.asset_materializations_for_node("trajectories")}
    assert batch is not None
    trajectories, synthesized = _links(result, "trajectories"), _links(result, "synthesized_tasks")
    assert set(trajectories) == {"view_batch", "view_top_error_example"}
    assert set(synthesized) == {"view_rejects"}

    # The route each names, its segments and query decoded back to the very batch and task id.
    batch_url = urlsplit(trajectories["view_batch"])
    assert (batch_url.scheme, batch_url.netloc, batch_url.path) == ("http", f"127.0.0.1:{port}", "/trajectories")
    assert parse_qs(batch_url.query) == {"batch": [batch]}
    example = urlsplit(trajectories["view_top_error_example"])
    assert not example.query and not example.fragment, "the odd id stays inside its path segment"
    assert [unquote(part) for part in example.path.split("/")] == ["", "trajectories", batch, ODD_ID]
    rejects = urlsplit(synthesized["view_rejects"])
    assert rejects.path == "/rejects" and parse_qs(rejects.query) == {"batch": [batch]}

    # A real viewer over the same lake answers each link with the page it names.
    with running_view(settings.data_dir, port=port):
        pages = {}
        for name, url in {**trajectories, **synthesized}.items():
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200, name
                pages[name] = response.read().decode()
    assert "fine" in pages["view_batch"] and "bad #1?x=&amp;y%20ü" in pages["view_batch"]
    assert (
        "bad #1?x=&amp;y%20ü" in pages["view_top_error_example"] and "assert False" in pages["view_top_error_example"]
    )
    assert "Rejects" in pages["view_rejects"]


def test_no_view_url_no_links(settings: Settings, tmp_path: Path) -> None:
    assert settings.view_url is None
    with dg.instance_for_test() as instance:
        result = materialize_file(
            _task_file(tmp_path), settings.model_copy(update={"synth_max_generation": 0}), instance
        )
    assert result.success
    assert _links(result, "trajectories") == {} and _links(result, "synthesized_tasks") == {}


@pytest.mark.parametrize(
    "bad", ["javascript:alert(1)", "ftp://host/", "/relative", "http://", "http://h/?q=1", "http://h/#x", "data:,x"]
)
def test_the_view_url_must_be_an_http_base(bad: str) -> None:
    with pytest.raises(ValidationError, match="view_url"):
        Settings(view_url=bad)
    with pytest.raises(ValueError, match="http"):
        ViewLinks(bad)


def test_links_encode_every_id_inside_its_segment_or_value() -> None:
    links = ViewLinks("https://viewer.example/adp")
    for hostile in ["../etc", "a/b", "x?y=1#z", "javascript:alert(1)", "%2F", "a&b=c"]:
        url = urlsplit(links.trajectory(hostile, hostile))
        assert url.netloc == "viewer.example" and not url.query and not url.fragment
        assert [unquote(p) for p in url.path.split("/")] == ["", "adp", "trajectories", hostile, hostile]
        lineage = urlsplit(links.lineage(hostile))
        assert [unquote(p) for p in lineage.path.split("/")] == ["", "adp", "lineage", hostile]
        for url_text in (links.batch(hostile), links.rejects(hostile), links.failed(hostile, hostile)):
            query = parse_qs(urlsplit(url_text).query)
            assert query["batch"] == [hostile] and set(query) <= {"batch", "success", "error_type"}
        assert parse_qs(urlsplit(links.failed("b", hostile)).query) == {
            "batch": ["b"],
            "success": ["false"],
            "error_type": [hostile],
        }
    assert route(["trajectories"], {"batch": "", "task_type": ""}) == "/trajectories"  # empty values left out

"""Untrusted text is text in the Dagster UI: what a task file, a model, a page, sandboxed code or
an error says reaches Markdown metadata escaped, so opening an asset page fetches nothing and
follows nothing an attacker chose. Rendered with a CommonMark renderer (markdown-it, tables and
strikethrough on, raw HTML allowed: the strictest reading) to see what a browser would get, with
literal autolinks found the way the Dagster UI's remark-gfm finds them: in the text after
backslash escapes are resolved (linkify-it run after escapes, and remark-gfm's own patterns)."""

from __future__ import annotations

import ast
import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from markdown_it import MarkdownIt
from markdown_it.rules_core import linkify

from adp_pipeline.defs.markdown import markdown_bar_chart, markdown_code, markdown_table, markdown_text
from runtimes.settings import Settings
from tests.helpers import REPO, code_task, materialize_file, task_line

ATTACKER = "attacker.example"
LINKED = "attacker-site.com"  # a domain linkify-it links too (it wants a known top-level domain)
WORD_JOINER = "\u2060"
HOSTILE = [
    f"![x](http://{ATTACKER}/p.png)",
    f"<img src=http://{ATTACKER}/i.png>",
    "[click](javascript:alert(1))",
    f"[ref]: http://{ATTACKER}/r.png",
    f"![r][ref] <http://{ATTACKER}/auto> www.{ATTACKER} bob@{ATTACKER}",
    "*em* **strong** _u_ ~~del~~ `code` # heading",
    "<script>alert(1)</script> &lt;b&gt; &#33;[e](x)",
    "a | b | c \\| d",
    "line one\n![n](http://attacker.example/n.png)\r\n<iframe src=x>",
]
# GFM's literal autolinks: www., http(s)://, ftp://, emails, mailto:/xmpp:, found on every piece
# of text, whatever escapes it had in the Markdown.
AUTOLINKS = [
    f"http://{LINKED}/p.png",
    f"HTTPS://{LINKED}/x?y=1",
    f"ftp://{LINKED}/f",
    f"www.{LINKED}",
    f"WWW.{LINKED}/a.png",
    f"_www.{LINKED}_",
    f"(www.{LINKED})",
    f"bob@{LINKED}",
    f"a.b+c@{LINKED}",
    f"mailto:bob@{LINKED}",
    f"xmpp:bob@{LINKED}/r",
    f"//{LINKED}/x.png",
    f"x:https://{LINKED}",
    f"![x](http://{LINKED}/i.png)",
    f"[a](https://{LINKED}) <https://{LINKED}>",
    f"see www.{ATTACKER} and http://{ATTACKER}/p.png and bob@{ATTACKER}",
]
_RENDERER = MarkdownIt("commonmark", {"html": True, "linkify": True}).enable(["table", "strikethrough", "linkify"])
# markdown-it linkifies before escapes are joined into the text; remark-gfm after. Run linkify-it
# where remark-gfm runs its autolink transform. No fuzzy bare domains (``example.com``): GFM has
# none; its ``www.`` rule is checked by :func:`gfm_autolinks`.
_RENDERER.core.ruler.disable("linkify")
_RENDERER.inline.ruler.disable("linkify")
_RENDERER.core.ruler.after("text_join", "linkify_after_escapes", linkify)
_RENDERER.linkify.set({"fuzzy_link": False})
# remark-gfm's own patterns (mdast-util-gfm-autolink-literal), without the conditions it adds
# (the character before, the shape of the domain): stricter than GFM.
_GFM_URL = re.compile(r"(?:https?://|www(?=\.))[-.\w]+", re.IGNORECASE | re.ASCII)
_GFM_EMAIL = re.compile(r"[-.\w+]+@[-\w]+(?:\.[-\w]+)+", re.ASCII)


def gfm_autolinks(text: str) -> list[str]:
    """The literal autolinks remark-gfm could make of a piece of text (a text node)."""
    return [match.group() for pattern in (_GFM_URL, _GFM_EMAIL) for match in pattern.finditer(text)]


class _Tags(HTMLParser):
    """The tags and attributes a rendering holds, its text, and the text outside code blocks
    (where GFM looks for literal autolinks)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.prose: list[str] = []
        self._in_code = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_code += tag in ("pre", "code")

    def handle_endtag(self, tag: str) -> None:
        self._in_code -= tag in ("pre", "code")

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if not self._in_code:
            self.prose.append(data)

    def shown(self) -> str:
        """The text a reader sees (word joiners are invisible), without the rendering's last line break."""
        return "".join(self.text).replace(WORD_JOINER, "").strip("\n")


def rendered(markdown: str) -> _Tags:
    parser = _Tags()
    parser.feed(_RENDERER.render(markdown))
    return parser


def _unescaped(markdown: str, token: str) -> list[int]:
    """Where ``token`` starts with an even number of backslashes before it (so it is syntax)."""
    found = []
    for match in re.finditer(re.escape(token), markdown):
        backslashes = len(markdown[: match.start()]) - len(markdown[: match.start()].rstrip("\\"))
        if backslashes % 2 == 0:
            found.append(match.start())
    return found


def assert_inert(markdown: str, *, code: bool = False) -> None:
    """No image but adp's own chart data, no link, no raw HTML, no emphasis from the data (in a
    ``code`` block the characters are literal: only the rendering is looked at)."""
    for token in () if code else ("![", "<img", "]("):
        for start in _unescaped(markdown, token):
            # adp's charts: ``![title](data:image/png;base64,...)`` and nothing else.
            assert token != "<img" and markdown[start:].split("](", 1)[1].startswith("data:image/png;base64,"), (
                token,
                markdown[max(0, start - 40) : start + 80],
            )
    shown = rendered(markdown)
    tags = shown.tags
    allowed = {"p", "table", "thead", "tbody", "tr", "th", "td", "strong", "img", "pre", "code"}
    assert {tag for tag, _ in tags} <= allowed, markdown
    assert [gfm_autolinks(text) for text in shown.prose if gfm_autolinks(text)] == [], markdown
    for tag, attrs in tags:
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/png;base64,"), attrs
        targets = [attrs.get(name) or "" for name in ("src", "href", "srcset", "action", "formaction", "background")]
        assert not any(ATTACKER in target or "javascript" in target for target in targets), attrs


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_text_renders_as_exactly_its_text(text: str) -> None:
    escaped = markdown_text(text)
    assert_inert(escaped)
    shown = rendered(escaped)
    assert [tag for tag, _ in shown.tags] == ["p"]
    assert shown.shown().strip() == re.sub(r"[\r\n]+", " ", text).strip()
    # In a table cell too: a pipe in the text neither ends the cell nor adds a column.
    table = markdown_table(("what", "n"), [(text, 1)])
    assert_inert(table.value)
    cells = [tag for tag, _ in rendered(table.value).tags if tag in ("th", "td")]
    assert cells == ["th", "th", "td", "td"]


def _backslash_escaped(text: str) -> str:
    """``text`` with every ASCII punctuation character backslash-escaped: all that escaping can do."""
    return re.sub(r"[!-/:-@\[-`{-~]", lambda match: "\\" + match.group(), text)


@pytest.mark.parametrize("text", AUTOLINKS)
def test_literal_autolinks_are_broken_in_the_text_itself(text: str) -> None:
    # The threat: escaped to the last character, the text still holds a link for GFM.
    escaped = rendered(_backslash_escaped(text))
    assert escaped.shown() == text
    assert any(tag == "a" for tag, _ in escaped.tags) or any(gfm_autolinks(part) for part in escaped.prose)
    # markdown_text: no link for either linkifier, the same characters for the reader.
    shown = markdown_text(text)
    assert_inert(shown)
    assert rendered(shown).shown() == text
    table = markdown_table(("what", "n"), [(text, text)])
    assert_inert(table.value)
    assert rendered(table.value).shown().split() == ["what", "n", *text.split(), *text.split()]


def test_a_code_block_cannot_be_closed_by_its_text_and_chart_labels_are_text() -> None:
    hostile = "\n".join(HOSTILE + AUTOLINKS) + "\n```\n![z](http://attacker.example/z.png)\n````\n"
    block = markdown_code(hostile, "json")
    assert_inert(block.value, code=True)
    assert [tag for tag, _ in rendered(block.value).tags] == ["pre", "code"]  # no link inside code
    assert "".join(rendered(block.value).text).rstrip("\n") == hostile.replace("\r\n", "\n").rstrip("\n")
    chart = markdown_bar_chart(AUTOLINKS[0], HOSTILE + AUTOLINKS, [1.0] * len(HOSTILE + AUTOLINKS))
    assert_inert(chart.value)
    assert markdown_text("") == "" and markdown_text(12) == "12"


def _metadata_values(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, Any]]:
    """Every metadata value of every materialisation and check evaluation of the run, as the
    instance's event log (what the UI reads) holds it."""
    values: list[tuple[str, Any]] = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type is dg.DagsterEventType.ASSET_MATERIALIZATION:
            values += list(event.event_specific_data.materialization.metadata.items())
        elif event.event_type is dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            values += list(event.event_specific_data.metadata.items())
    return values


def test_a_batch_of_hostile_lines_shows_every_one_of_them_as_text(
    tmp_path: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    image, tag, link = HOSTILE[0], HOSTILE[1], HOSTILE[2]
    autolinks = f"www.{LINKED} bob@{LINKED} https://{LINKED}/a.png"
    no_slash = f"![w](http:{ATTACKER}.w.png)*em*<b>"  # an id may not hold '/'
    answer_and_run = {"name": "complete_task", "arguments": {"answer": "1"}}
    lines = [
        # rejected: the line itself, an unknown field's name, a bad value, an id
        f"{{not json {image} {tag} {link} {autolinks}",
        task_line("bad_field", **{image + link: 1}),
        task_line("bad_value", max_steps=f"{autolinks} *em* {image}"),
        task_line(f"{image}"),  # a '/' in an id: rejected, the id in the reason
        # accepted with a warning (an unknown constraints key), then failing: the oracle has nothing
        # to replay, and its message names the task by its hostile id
        task_line(no_slash, constraints={f"{tag}{link}": 1}),
        # accepted, and failing verification with hostile text in the verifier's details
        task_line(
            "wrong_answer",
            constraints={
                "reference_tool_calls": [answer_and_run],
                "verify": {"expected_answer": f"{image} {tag} {autolinks}"},
            },
        ),
        # accepted, its code failing with hostile text on stderr (a step: data, not shown)
        code_task("crashes", f"raise ValueError({image + ' ' + tag!r})", "1"),
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    result = materialize_file(path, settings, instance)
    assert result.success

    values = _metadata_values(instance, result.run_id)
    markdown = {name: value.value for name, value in values if isinstance(value, dg.MarkdownMetadataValue)}
    # The hostile text did reach the tables this test is about (else it would prove nothing).
    assert {"rejects", "warning_lines", "top_errors"} <= set(markdown)
    assert "attacker" in markdown["rejects"] and "attacker" in markdown["top_errors"]
    assert "attacker" in markdown["warning_lines"]
    assert LINKED in markdown["rejects"] and LINKED in markdown["top_errors"]
    for name, text in markdown.items():
        assert_inert(text), name
    shown = rendered(markdown["top_errors"]).shown()
    assert image in shown and f"www.{LINKED} bob@{LINKED}" in shown  # shown as the characters they are
    assert image + link in html.unescape(rendered(markdown["rejects"]).shown())


def test_every_markdown_value_and_every_metadata_dict_is_made_by_the_markdown_module() -> None:
    """Structure: ``MetadataValue.md`` is called only in defs/markdown.py, and every
    ``metadata=`` of a MaterializeResult or AssetCheckResult goes through ``for_people``."""
    offenders = []
    for path in (REPO / "adp_pipeline").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "md" and path.name != "markdown.py":
                offenders.append(f"{path}:{node.lineno}: MetadataValue.md outside defs/markdown.py")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in {
                "MaterializeResult",
                "AssetCheckResult",
            }:
                for keyword in node.keywords:
                    value = keyword.value
                    wrapped = isinstance(value, ast.Call) and getattr(value.func, "id", None) == "for_people"
                    if keyword.arg == "metadata" and not wrapped:
                        offenders.append(f"{path}:{node.lineno}: metadata= not through for_people")
    assert offenders == []

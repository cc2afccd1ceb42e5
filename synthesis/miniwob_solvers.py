"""Gold action scripts for MiniWoB++ episodes, derived from the episode's instruction.

Used to write the oracle references of ``examples/miniwob.jsonl`` (``scripts/export_miniwob.py``
runs each seeded episode in Chromium, solves it from its utterance, and keeps only scripts that
earn the full reward). Each solver maps an utterance to ``browser`` tool calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Call = dict[str, Any]


def _browser(action: str, **arguments: str) -> Call:
    return {"name": "browser", "arguments": {"action": action, **arguments}}


def _click(selector: str) -> Call:
    return _browser("click", selector=selector)


def _fill(selector: str, text: str) -> Call:
    return _browser("fill", selector=selector, text=text)


def _quoted(utterance: str, index: int = 0) -> str:
    return str(re.findall(r'"([^"]*)"', utterance)[index])


def _text_is(css: str, text: str) -> str:
    return f'{css}:text-is("{text}")'


def _choices(utterance: str) -> list[str]:
    listed = re.match(r"Select (.*) and click Submit\.", utterance)
    assert listed, utterance
    words = listed.group(1)
    return [] if words == "nothing" else [word.strip() for word in words.split(",") if word.strip()]


def _tick(utterance: str) -> list[Call]:
    return [*(_click(_text_is("#boxes label", choice)) for choice in _choices(utterance)), _click("#subbtn")]


def _enter_text_2(utterance: str) -> list[Call]:
    text = _quoted(utterance)
    text = text.lower() if "lower case" in utterance else text.upper()
    return [_fill("#tt", text), _click("#subbtn")]


def _focus_nth(utterance: str) -> list[Call]:
    match = re.search(r"(\d+)(?:st|nd|rd|th)", utterance)
    assert match, utterance
    return [_click(f"#tt{match.group(1)}")]


def _choose_list(utterance: str) -> list[Call]:
    match = re.match(r"Select (.+) from the list and click Submit\.", utterance)
    assert match, utterance
    return [_browser("select", selector="#options", value=match.group(1)), _click("#area button")]


SOLVERS: dict[str, Callable[[str], list[Call]]] = {
    "click-button": lambda u: [_click(_text_is("#area button", _quoted(u)))],
    "click-link": lambda u: [_click(_text_is("#area span.alink", _quoted(u)))],
    "click-test": lambda u: [_click("#subbtn")],
    "click-test-2": lambda u: [_click(_text_is("#area button", u.split()[-1].rstrip(".")))],
    "click-button-sequence": lambda u: [
        _click(_text_is("#area button", "ONE")),
        _click(_text_is("#area button", "TWO")),
    ],
    "click-tab": lambda u: [_click(_text_is("#area a", u.removeprefix("Click on ").rstrip(".")))],
    "enter-text": lambda u: [_fill("#tt", _quoted(u)), _click("#subbtn")],
    "enter-text-dynamic": lambda u: [_fill("#tt", _quoted(u)), _click("#subbtn")],
    "enter-text-2": _enter_text_2,
    "enter-password": lambda u: [_fill("#password", _quoted(u)), _fill("#verify", _quoted(u)), _click("#subbtn")],
    "login-user": lambda u: [_fill("#username", _quoted(u)), _fill("#password", _quoted(u, 1)), _click("#subbtn")],
    "focus-text": lambda u: [_click("#tt")],
    "focus-text-2": _focus_nth,
    "click-checkboxes": _tick,
    "click-option": _tick,
    "choose-list": _choose_list,
}


def solve(task: str, utterance: str) -> list[Call]:
    """The gold tool calls (ending with complete_task) for a ``task`` episode saying ``utterance``."""
    return [*SOLVERS[task](utterance), {"name": "complete_task", "arguments": {"answer": "done"}}]

"""The ``browser`` tool: one flat schema for the model, one typed action per ``action`` value.

The model calls ``browser(action, url?, selector?, text?, value?, key?)`` (DESIGN.md §9);
:func:`parse_browser_action` validates that into a discriminated union, so a missing or stray
argument is an error that names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

ActionName = Literal["goto", "click", "fill", "select", "press", "scroll", "extract_text", "snapshot"]


class BrowserArgs(BaseModel):
    """The flat argument schema the model sees."""

    model_config = ConfigDict(extra="forbid")

    action: ActionName = Field(description="What to do.")
    url: str | None = Field(None, description="goto: the address to open.")
    selector: str | None = Field(
        None,
        description="click/fill/select/press/scroll/extract_text: a CSS selector, e.g. one from snapshot "
        'such as [data-adp-id="7"], or text=Submit.',
    )
    text: str | None = Field(None, description="fill: the text to type into the field.")
    value: str | None = Field(None, description="select: the option's value or label; scroll: up or down.")
    key: str | None = Field(None, description="press: a key such as Enter, Tab or ArrowDown.")


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Goto(_Action):
    action: Literal["goto"]
    url: str


class Click(_Action):
    action: Literal["click"]
    selector: str


class Fill(_Action):
    action: Literal["fill"]
    selector: str
    text: str


class Select(_Action):
    action: Literal["select"]
    selector: str
    value: str


class Press(_Action):
    action: Literal["press"]
    key: str
    selector: str | None = None


class Scroll(_Action):
    action: Literal["scroll"]
    value: Literal["up", "down"] = "down"
    selector: str | None = None


class ExtractText(_Action):
    action: Literal["extract_text"]
    selector: str | None = None


class Snapshot(_Action):
    action: Literal["snapshot"]


BrowserAction = Annotated[
    Goto | Click | Fill | Select | Press | Scroll | ExtractText | Snapshot, Field(discriminator="action")
]
_ADAPTER: TypeAdapter[BrowserAction] = TypeAdapter(BrowserAction)


def parse_browser_action(arguments: dict[str, Any]) -> BrowserAction:
    """The typed action of a ``browser`` call (``None`` arguments are dropped first).

    Raises:
        pydantic.ValidationError: unknown action, a missing argument, or one the action does not take.
    """
    return _ADAPTER.validate_python({key: value for key, value in arguments.items() if value is not None})

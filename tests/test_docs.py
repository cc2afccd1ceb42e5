"""The documentation keeps up with the code: every setting is documented, the README's code map
names every package it has, and the README stays a short entry point."""

from __future__ import annotations

import itertools
import re

from markdown_it import MarkdownIt

from runtimes.settings import Settings
from tests.helpers import REPO


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = (REPO / "docs" / "configuration.md").read_text()
    names = {str(field.validation_alias.choices[0]) for field in Settings.model_fields.values()}
    assert names and not [name for name in sorted(names) if f"`{name}`" not in reference]
    assert "`ADP_ENV_FILE`" in reference


def test_the_readme_code_map_names_every_package_and_subpackage() -> None:
    readme = (REPO / "README.md").read_text()
    code_map = readme[readme.index("## Code map") :]
    packages = [f"{p.parent.name}/" for p in REPO.glob("*/__init__.py") if p.parent.name not in {"tests", "bench"}]
    subpackages = [f"runtimes/{p.parent.name}/" for p in (REPO / "runtimes").glob("*/__init__.py")]
    assert not [name for name in packages + subpackages if f"`{name}`" not in code_map]
    assert len(readme.splitlines()) <= 200
    for link in re.findall(r"\]\(((?:docs|bench)/[^)#]+)", readme):
        assert (REPO / link).is_file(), link


PROSE = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]
_TERMINAL = tuple(".:;!?")


def _prose_problems(text: str) -> list[str]:
    """Where a Markdown text looks cut: a paragraph outside lists and tables that does not end a
    sentence, or starts in the middle of one (lowercase, unless it is adp's own name), or a
    heading with no content before the next heading of its level. A table that lost its header
    row is a paragraph of ``| ... |`` lines, so it is caught too."""
    tokens = MarkdownIt("commonmark").enable(["table"]).parse(text)
    problems: list[str] = []
    for before, token in itertools.pairwise(tokens):
        if token.type != "inline" or before.type != "paragraph_open" or before.level != 0:
            continue  # level 0: not in a list item or a block quote
        line = (before.map or [0])[0] + 1
        if not token.content.rstrip().endswith(_TERMINAL):
            problems.append(f"line {line}: a paragraph ends mid-sentence: ...{token.content[-60:]!r}")
        if re.match(r"[a-z]", token.content) and not re.match(r"adp\b", token.content):
            problems.append(f"line {line}: a paragraph starts mid-sentence: {token.content[:60]!r}...")
    blocks = [t for t in tokens if t.level == 0 and (t.type.endswith("_open") or t.nesting == 0)]
    for heading, after in zip(blocks, [*blocks[1:], None], strict=True):
        if heading.type == "heading_open" and (
            after is None or (after.type == "heading_open" and after.tag <= heading.tag)
        ):
            problems.append(f"line {(heading.map or [0])[0] + 1}: a section with nothing in it")
    return problems


def test_no_paragraph_or_section_of_the_docs_is_cut_short() -> None:
    problems = {path.relative_to(REPO).as_posix(): _prose_problems(path.read_text()) for path in PROSE}
    assert {name: found for name, found in problems.items() if found} == {}


def test_the_cut_text_check_sees_each_kind_of_cut() -> None:
    """The check above would pass on anything if it saw nothing: each kind of cut it looks for."""
    whole = "# Title\n\nA sentence.\n\n## Part\n\nAnother, with `code` (and a bracket).\n"
    assert _prose_problems(whole) == []
    assert _prose_problems(whole + "\nDrop a file into `TASKS_DIR` and the sensor (on by default)\n")
    assert _prose_problems(whole + "\nregisters it and launches the job.\n")
    assert _prose_problems("# Title\n\n| `a` | b |\n| `c` | d |\n")  # a table without its header
    assert _prose_problems(whole + "\n## Empty\n\n## Next\n\nText.\n")
    assert _prose_problems(whole + "\n## Empty at the end\n")
    # No cut: list items without a stop or in lowercase, tables, code blocks, a paragraph opening with adp.
    fine = (
        "adp runs.\n\n- item without a stop\n- lowercase item\n\n| a | b |\n| --- | --- |\n| c | d |\n\n```\nx =\n```\n"
    )
    assert _prose_problems(whole + "\n" + fine) == []

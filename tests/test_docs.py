"""The documentation keeps up with the code: every setting is documented, the README's code map
names every package it has, and the README stays a short entry point."""

from __future__ import annotations

import re

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

"""Put the catalog's chat templates in ``tests/chat_templates/upstream/``, each taken from its pinned
package with pip and checked against its SHA-256. Idempotent: a template already there with the
right hash is kept, and no package is downloaded when none is missing. Standard library only.

Run by ``make setup`` (scripts/setup.sh): ``python -m tests.chat_templates.fetch``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.chat_templates.catalog import TEMPLATES, UPSTREAM, ChatTemplate
from tests.pinned import download, read_member, sha256


def missing(upstream: Path = UPSTREAM) -> list[ChatTemplate]:
    """The templates not present in ``upstream`` with their recorded hash."""
    return [
        template
        for template in TEMPLATES
        if not (upstream / template.file).is_file()
        or sha256((upstream / template.file).read_bytes()) != template.sha256
    ]


def fetch(upstream: Path = UPSTREAM) -> list[str]:
    """Fetch what is missing; returns the names written.

    Raises:
        ValueError: a package's file does not have the recorded hash (the upstream text changed:
            review it, then update the catalog).
    """
    written: list[str] = []
    by_package: dict[str, list[ChatTemplate]] = {}
    for template in missing(upstream):
        by_package.setdefault(template.package, []).append(template)
    upstream.mkdir(parents=True, exist_ok=True)
    for package, templates in by_package.items():
        with tempfile.TemporaryDirectory() as tmp:
            # The sdist is what carries llama.cpp's templates, a wheel TRL's.
            archive = download(package, Path(tmp), sdist=package.startswith("llama-cpp-python=="))
            for template in templates:
                data = read_member(archive, template.member)
                if sha256(data) != template.sha256:
                    raise ValueError(
                        f"{package}: {template.member} has SHA-256 {sha256(data)}, the catalog records "
                        f"{template.sha256} for {template.name}"
                    )
                staged = upstream / f".{template.file}.tmp"
                staged.write_bytes(data)
                staged.replace(upstream / template.file)
                written.append(template.name)
    return written


def main() -> None:
    written = fetch()
    if written:
        print(f"chat templates: fetched {', '.join(written)} into {UPSTREAM}")


if __name__ == "__main__":
    main()

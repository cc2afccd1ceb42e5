"""Put the catalog's pinned wheels' packages in ``tests/consumers/upstream/``: each wheel downloaded
with pip, checked against its SHA-256, its import package unpacked and checked again. Idempotent: a
package already there with the recorded files is kept, and nothing is downloaded. Standard library
only.

Run by ``make setup`` (scripts/setup.sh): ``python -m tests.consumers.fetch``.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from tests.consumers.catalog import UPSTREAM, WHEELS, PinnedWheel, tree_sha256
from tests.pinned import download, sha256


def missing(upstream: Path = UPSTREAM) -> list[PinnedWheel]:
    """The wheels whose package is not unpacked under ``upstream`` with the recorded files."""
    return [wheel for wheel in WHEELS if tree_sha256(upstream / wheel.root.name / wheel.package) != wheel.files_sha256]


def fetch(upstream: Path = UPSTREAM) -> list[str]:
    """Fetch what is missing; returns the requirements unpacked.

    Raises:
        ValueError: a wheel or its unpacked package does not have the recorded hash (the package
            index serves other bytes, or the catalog's pin changed: review, then record the new
            hashes in the catalog).
    """
    written: list[str] = []
    for wheel in missing(upstream):
        root = upstream / wheel.root.name
        with tempfile.TemporaryDirectory() as tmp:
            archive = download(wheel.requirement, Path(tmp))
            if sha256(archive.read_bytes()) != wheel.wheel_sha256:
                raise ValueError(
                    f"{archive.name} has SHA-256 {sha256(archive.read_bytes())}, the catalog records "
                    f"{wheel.wheel_sha256} for {wheel.requirement}"
                )
            staged = upstream / f".{root.name}.tmp"
            shutil.rmtree(staged, ignore_errors=True)
            with zipfile.ZipFile(archive) as contents:
                # The import package only; zipfile.extract keeps every member inside `staged`.
                for member in contents.namelist():
                    if member.startswith(f"{wheel.package}/"):
                        contents.extract(member, staged)
        unpacked = tree_sha256(staged / wheel.package)
        if unpacked != wheel.files_sha256:
            shutil.rmtree(staged)
            raise ValueError(
                f"{wheel.requirement}: the unpacked {wheel.package}/ has SHA-256 {unpacked}, the catalog "
                f"records {wheel.files_sha256}"
            )
        shutil.rmtree(root, ignore_errors=True)
        staged.replace(root)
        written.append(wheel.requirement)
    return written


def main() -> None:
    written = fetch()
    if written:
        print(f"consumer packages: fetched {', '.join(written)} into {UPSTREAM}")


if __name__ == "__main__":
    main()

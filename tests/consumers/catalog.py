"""The packages whose own code checks adp's exports, and where each comes from.

Their code stays out of this repository: ``make setup`` downloads each pinned wheel from the Python
package index (:mod:`tests.consumers.fetch`), checks its SHA-256, and unpacks its import package
into ``tests/consumers/upstream/<name>-<version>/`` (ignored by git). The tests import it from
there (:mod:`tests.consumers.llamafactory`) after checking the unpacked files against
``files_sha256``. Standard library only: the fetch runs before anything else is installed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

UPSTREAM = Path(__file__).parent / "upstream"


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel from the package index and the import package the tests take from it."""

    requirement: str  # name==version, for pip
    wheel_sha256: str  # of the .whl file, checked when it is downloaded
    package: str  # the top-level import package unpacked from it
    files_sha256: str  # of the unpacked package (`tree_sha256`), checked before each use

    @property
    def root(self) -> Path:
        """The folder holding the unpacked ``package``: what goes on its import path."""
        name, version = self.requirement.split("==")
        return UPSTREAM / f"{name}-{version}"


# LLaMA-Factory's training-data loader: the sharegpt converter, the dataset description parser,
# the chat templates with their tool formatters, the supervised processor.
LLAMAFACTORY = PinnedWheel(
    requirement="llamafactory==0.9.5",
    wheel_sha256="10776e9b259798bf65f6c5343f6298f0302e92e9cd47472abe29eef69e286c6a",
    package="llamafactory",
    files_sha256="f158c818ced48d67e83d4ff8f08a9eac35c37bcbaf9cfa8e11e22fc4e5e0c3c0",
)

WHEELS: tuple[PinnedWheel, ...] = (LLAMAFACTORY,)


def tree_sha256(package_dir: Path) -> str:
    """One SHA-256 over every file of an unpacked package (relative path and content), bytecode
    caches left out (Python writes them beside the modules it imports); "" when it is not there."""
    if not package_dir.is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()

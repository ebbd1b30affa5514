"""dvc.yaml's code deps cover every module a stage imports, so an edit to it reruns the stage.

`snmn train` imports pipeline/training.py, which imports pipeline/config.py, ... If one of those
is missing from the train stage's deps, editing it leaves `dvc repro` saying "Stage 'train'
didn't change" and the model stale. This walks each stage command's imports (every `import` /
`from ... import` in our packages, at any depth, also inside functions) and checks that dvc.yaml
lists each file, or a folder holding it.
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
    """pipeline.shards → pipeline/shards.py (or the package's __init__.py); None if not ours."""
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
            # `from pipeline import shards` names a module; `from pipeline.x import f` a symbol
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


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT)
    if relative.name == "__init__.py" and len(relative.parts) == 2:
        return True  # a top-level package's empty __init__ holds no code
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


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

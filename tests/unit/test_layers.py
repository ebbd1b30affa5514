"""Imports run one way: stages → pipeline → snmn; snmn/ uses only torch, numpy and the stdlib."""

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ALLOWED_IN_SNMN = {"torch", "numpy", "snmn"}
FORBIDDEN_IN_PIPELINE = {"stages"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_snmn_imports_only_torch_numpy_and_stdlib():
    offenders = {}
    for path in sorted((REPO / "snmn").rglob("*.py")):
        bad = {
            root
            for root in imported_roots(path)
            if root not in ALLOWED_IN_SNMN
            and root not in sys.stdlib_module_names
            and root != "__future__"
        }
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_pipeline_never_imports_stages():
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_roots(path) & FORBIDDEN_IN_PIPELINE)
        for path in sorted((REPO / "pipeline").rglob("*.py"))
        if imported_roots(path) & FORBIDDEN_IN_PIPELINE
    }
    assert offenders == {}


def test_the_walker_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import ray\nfrom pipeline.config import Config\n")
    assert {"ray", "pipeline"} <= imported_roots(sample)

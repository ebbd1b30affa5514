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


# -- pipeline/: packages by concern, one seam for Ray and one for MLflow ------------------------

SEAMS = {"ray": "pipeline/distributed.py", "mlflow": "pipeline/tracking.py"}


def pipeline_unit(path: Path) -> str:
    """pipeline/data/shards.py → "data" (a package); pipeline/config.py → "config" (base)."""
    parts = path.relative_to(REPO / "pipeline").parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def pipeline_imports(path: Path) -> set[str]:
    """Units of pipeline/ that `path` imports (`from pipeline.data.shards import ...` → "data")."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pipeline" and len(parts) > 1:
                target = REPO.joinpath(*parts[:2])
                if target.is_dir() or target.with_suffix(".py").is_file():
                    found.add(parts[1])
    return found


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        unit = pipeline_unit(path)
        graph.setdefault(unit, set()).update(pipeline_imports(path) - {unit})
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph as [a, b, ..., a], or [] if it has none."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt, node]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return []


def test_pipeline_packages_import_each_other_without_a_cycle():
    assert find_cycle(unit_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_ray_and_mlflow_are_imported_only_in_their_seams():
    offenders = {}
    for path in sorted([*(REPO / "pipeline").rglob("*.py"), *(REPO / "stages").rglob("*.py")]):
        relative = str(path.relative_to(REPO))
        bad = {root for root, seam in SEAMS.items() if root in imported_roots(path)}
        bad = {root for root in bad if SEAMS[root] != relative}
        if bad:
            offenders[relative] = sorted(bad)
    assert offenders == {}

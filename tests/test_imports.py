"""The library's imports: no cycle among its modules, every third-party import a declared dependency, and a
command line that answers --help without loading torch."""

import ast
import graphlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

MTLIB = Path("mtlib")
RUN_TIME_ONLY = {"onnxscript"}  # never imported by mtlib: torch.onnx.export runs on it


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules a file imports: at module level only (what runs on import), or anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_no_import_cycle_among_mtlib_modules():
    graph = {f"mtlib.{path.stem}": {name for name in imports(path, top_level_only=True) if name.startswith("mtlib.")}
             for path in MTLIB.glob("*.py")}
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError naming the cycle
    assert order.index("mtlib.config") < order.index("mtlib.model")
    assert graph["mtlib.config"] == set()  # the settings are a leaf: every module may import them


def test_every_third_party_import_is_a_declared_dependency():
    declared = {re.split(r"[<>=\[ ;]", requirement)[0].lower().replace("_", "-")
                for requirement in tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    used = set()
    for path in MTLIB.glob("*.py"):
        for name in imports(path, top_level_only=False):
            root = name.split(".")[0]
            if root != "mtlib" and root not in sys.stdlib_module_names and root != "__future__":
                used |= {d.lower().replace("_", "-") for d in distributions[root]}
    assert used - declared == set(), "imported by mtlib but missing from pyproject.toml"
    assert declared - used == RUN_TIME_ONLY, "declared in pyproject.toml but imported nowhere in mtlib"


def test_help_loads_no_torch():
    code = "import sys; from mtlib.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"

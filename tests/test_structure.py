"""The code's shape: no import cycle in src/, no oversized module, one owner per shared concept,
and the modules the commands read at start-up stay free of MindSpore."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SRC = ROOT / "src"
MAX_LINES = 450
LONG_ALLOWED = {"pt_reader.py"}  # the restricted .pt reader: one format, one job


def src_imports(path: Path) -> set:
    """The src modules a file imports, at top level or inside functions (lazy imports count:
    a cycle through them still ties the two modules together)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "src":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("src."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("src."))
    return found


def import_cycles(graph: dict) -> list:
    """Every cycle met by a depth-first walk of `graph` (module -> imported modules)."""
    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_no_import_cycle_in_src():
    graph = {p.stem: src_imports(p) - {p.stem} for p in SRC.glob("*.py")}
    assert import_cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_no_module_over_the_line_limit():
    sizes = {p.name: len(p.read_text().splitlines()) for p in SRC.glob("*.py")}
    over = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in LONG_ALLOWED}
    assert not over, f"split these by job: {over}"


def _defining_files(pattern: str) -> list:
    return sorted(p.name for p in SRC.glob("*.py") if re.search(pattern, p.read_text(), re.M))


@pytest.mark.parametrize("what,pattern,owner", [
    ("the head/tail slot-name regex", r"\(head\|tail\)", "slots.py"),
    ("the run checkpoint name", r"ipt_step", "weights.py"),
    ("the 48-pixel tile size", r"^\s*PATCH\w* = 48\b", "tasks.py"),
    ("the fast-tiling overlap default", r"^DEFAULT_OVERLAP = ", "tiling.py"),
    ("the shipped weights' file names", r"ipt_tiny_", "weights.py"),
])
def test_one_owner(what, pattern, owner):
    assert _defining_files(pattern) == [owner], what


def test_start_up_modules_do_not_load_mindspore():
    """restore.py's size/path checks and the shell scripts' name look-ups import these; MindSpore
    (about 3 s) must load only when a model does."""
    code = ("import sys; import src.config, src.inference, src.slots, src.tiling, src.weights; "
            "sys.exit(1 if 'mindspore' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr or "mindspore was imported"

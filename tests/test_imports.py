"""The direction of imports between memaware's packages, read from the import statements of its source (those
inside functions too): the one training loop knows no method and no phase 1; phase 1 (heldout) builds on the
methods and the loop, and no method imports phase 1."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "memaware"


def imports_of(path: Path) -> set[str]:
    """The memaware modules (and names from them) that the source file `path` imports, relative imports
    resolved."""
    package = ["memaware", *path.relative_to(SRC).with_suffix("").parts[:-1]]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] == "memaware"}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_relative_imports_of_a_module_resolve_to_memaware_modules():
    loop = imports_of(SRC / "train" / "loop.py")
    assert {"memaware.methods.base", "memaware.train.config", "memaware.errors"} <= loop
    assert "memaware.methods.afr" in imports_of(SRC / "methods" / "__init__.py")


def test_the_loop_imports_no_method_and_no_phase_1():
    wrong = {name for name in imports_of(SRC / "train" / "loop.py") if within(name, "memaware.heldout")
             or (within(name, "memaware.methods") and not within(name, "memaware.methods.base"))}
    assert wrong == set()


def test_no_method_imports_phase_1():
    wrong = {(path.name, name) for path in sorted((SRC / "methods").glob("*.py")) for name in imports_of(path)
             if within(name, "memaware.heldout")}
    assert wrong == set()

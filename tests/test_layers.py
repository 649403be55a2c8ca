"""The layer rules of ARCHITECTURE.md, read from the source: who may import whom."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("contract", "orchestrator", "trainables")


def _imports(path: Path, *, at_import_time: bool = False) -> set[str]:
    """Every module ``path`` imports, anywhere in the file or only at its top level."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body if at_import_time else ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("trainables"), ids=lambda p: p.name)
def test_trainables_import_only_the_contract_from_outside(path):
    outside = {
        name
        for name in _imports(path)
        if name.split(".")[0] in PROJECT and name.split(".")[0] not in ("trainables", "contract")
    }
    assert not outside, f"{path.relative_to(ROOT)} imports {outside}"


@pytest.mark.parametrize("path", _modules("contract"), ids=lambda p: p.name)
def test_the_contract_imports_only_stdlib_and_pydantic(path):
    # At import time: contract.tracking.open_run imports wandb when it is called.
    allowed = {*sys.stdlib_module_names, "pydantic", "contract", "__future__"}
    imported = _imports(path, at_import_time=True)
    wrong = {name for name in imported if name.split(".")[0] not in allowed}
    assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


@pytest.mark.parametrize(
    "path",
    [p for p in _modules("orchestrator") if p.name != "sweep.py"],
    ids=lambda p: str(p.relative_to(ROOT / "orchestrator")),
)
def test_only_the_launch_module_knows_the_trainables(path):
    trainables = {name for name in _imports(path) if name.split(".")[0] == "trainables"}
    assert not trainables, f"{path.relative_to(ROOT)} imports {trainables}"


@pytest.mark.parametrize("path", _modules("orchestrator"), ids=lambda p: p.name)
def test_orchestrator_reaches_analysis_through_its_public_api(path):
    if "analysis" in path.parts:
        return
    private = {n for n in _imports(path) if n.startswith("orchestrator.analysis._")}
    assert not private, f"{path.relative_to(ROOT)} imports {private}"

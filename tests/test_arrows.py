"""The dependency arrows: kernels <- infill <- train, infill <- lsp. Read from every module's imports."""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"infill", "kernels", "train", "lsp"}
FORBIDDEN = {
    "kernels": {"infill", "train", "lsp"},
    "infill": {"train", "lsp"},
    "train": {"lsp"},
    "lsp": {"train"},
}
THIRD_PARTY_ALLOWED = {"kernels": {"torch", "triton"}}


def imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_arrows_point_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    bad = {f"{f.relative_to(ROOT)} imports {name}" for f in files for name in imported_top_levels(f)
           if name in FORBIDDEN[package]}
    assert not bad, sorted(bad)


def test_kernels_import_only_torch_and_triton():
    stdlib = set(sys.stdlib_module_names)
    files = sorted((ROOT / "kernels").rglob("*.py"))
    bad = {f"{f.relative_to(ROOT)} imports {name}" for f in files for name in imported_top_levels(f)
           if name not in stdlib | THIRD_PARTY_ALLOWED["kernels"] | {"kernels"}}
    assert not bad, sorted(bad)


def test_the_checker_sees_a_bad_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("import os\nfrom train.data import x\nimport lsp.server as s\nfrom . import y\n")
    assert imported_top_levels(bad) == {"os", "train", "lsp"}

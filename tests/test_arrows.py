"""The dependency arrows: kernels <- infill <- train, infill <- lsp, and the one door to a model
(features reach a model only through `infill.engines`). Read from every module's imports."""
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


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports, dotted (`from a.b import c` gives a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


# (files, modules they must not import): features see a model only through infill.engines
DOORS = [
    ("lsp", {"infill.generation", "infill.formats", "infill.model", "infill.checkpoint", "infill.tokenizer"}),
    ("infill/evaluate", {"infill.generation", "infill.formats", "infill.model", "infill.tokenizer"}),
    ("lsp/demo.py", {"infill.cli"}),
    ("lsp/types.py", {"infill.evaluate"}),
    ("train/data/config.py", {"train.data.harvest", "train.data.licenses"}),
]


@pytest.mark.parametrize("where,banned", DOORS, ids=[d[0] for d in DOORS])
def test_features_use_the_engine_door(where, banned):
    target = ROOT / where
    files = [target] if target.is_file() else sorted(target.rglob("*.py"))
    assert files
    bad = {f"{f.relative_to(ROOT)} imports {name}" for f in files for name in imported_modules(f)
           if any(name == b or name.startswith(b + ".") for b in banned)}
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
    assert {"train.data", "train.data.x", "lsp.server"} <= imported_modules(bad)

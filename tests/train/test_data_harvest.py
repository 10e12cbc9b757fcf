"""Harvest: discovery, language by extension, binaries, undecodable files, git and site-packages."""
import os
import subprocess

import pytest

from train.data.config import DataConfig
from train.data.harvest import (STDLIB_NAME, clone_source, discover, harvest, language_of,
                                local_source, resolve_sources, site_packages_sources)

CFG = DataConfig()


def test_language_by_extension():
    expected = {"a.py": "python", "a.js": "javascript", "a.ts": "typescript", "a.c": "c",
                "a.cpp": "cpp", "a.hpp": "cpp", "A.java": "java", "a.go": "go", "a.rs": "rust",
                "a.sh": "shell", "A.PY": "python", "a.txt": None, "Makefile": None}
    assert {p: language_of(p) for p in expected} == expected


def _tree(root):
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "pkg" / "tool.sh").write_text("echo hi\n")
    (root / "pkg" / "latin.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    (root / "pkg" / "fake.py").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (root / "pkg" / "big.c").write_text("int x;\n" * 200)
    (root / "pkg" / "image.png").write_bytes(b"\x89PNG\x00")
    (root / "pkg" / "__pycache__" / "mod.py").write_text("cached = 1\n")
    (root / ".hidden" / "h.py").write_text("h = 1\n")


def test_discover_and_read(tmp_path):
    _tree(tmp_path)
    source = local_source(str(tmp_path))
    cfg = DataConfig(max_file_bytes=1000)
    found = list(discover([source], cfg))
    assert sorted(r["path"] for r in found) == ["pkg/big.c", "pkg/fake.py", "pkg/latin.py",
                                                "pkg/mod.py", "pkg/tool.sh"]
    out = {r["path"]: r for r in harvest(found, cfg)}
    assert out["pkg/mod.py"]["text"] == "x = 1\n" and out["pkg/mod.py"]["language"] == "python"
    assert out["pkg/tool.sh"]["language"] == "shell"
    assert out["pkg/fake.py"]["removed"] == "harvest.binary"
    assert out["pkg/latin.py"]["removed"] == "harvest.undecodable"
    assert out["pkg/big.c"]["text"] == "" and "removed" not in out["pkg/big.c"]  # never read
    assert all(r["source"] == tmp_path.name for r in out.values())
    only_c = list(discover([source], DataConfig(languages=("c",))))
    assert [r["path"] for r in only_c] == ["pkg/big.c"]


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                   cwd=cwd, check=True, capture_output=True)


def test_git_checkout_and_clone(tmp_path):
    repo = tmp_path / "myrepo"
    repo.mkdir()
    (repo / "kept.py").write_text("a = 1\n")
    (repo / "ignored.py").write_text("b = 2\n")
    (repo / ".gitignore").write_text("ignored.py\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "kept.py", ".gitignore")
    _git(repo, "commit", "-q", "-m", "init")
    source = local_source(str(repo))
    assert source.kind == "git" and len(source.version) == 40
    assert [r["path"] for r in discover([source], CFG)] == ["kept.py"]
    clone = clone_source(f"file://{repo}", str(tmp_path / "clones"))
    assert clone.name == "myrepo" and clone.version == source.version
    with pytest.raises(ValueError, match="cannot clone"):
        clone_source(f"file://{tmp_path}/missing", str(tmp_path / "clones2"))


def test_site_packages_sources_carry_versions_and_licenses():
    sources = {s.name: s for s in site_packages_sources()}
    std = sources[STDLIB_NAME]
    assert std.license == "PSF-2.0" and std.kind == "stdlib"
    ds = sources["datasketch"]
    assert ds.license == "MIT" and ds.version and ds.files
    assert all(rel.endswith(".py") or language_of(rel) for _, rel, _ in ds.files)
    assert not any("site-packages" in rel for _, rel, _ in std.files or ())


def test_stdlib_groups_by_module():
    (std,) = [s for s in site_packages_sources() if s.name == STDLIB_NAME]
    groups = {r["path"]: r["group"] for r in discover([std], DataConfig(languages=("python",)))
              if r["path"] in ("os.py", "asyncio/events.py", "test/test_os.py")}
    assert groups == {"os.py": "python-stdlib/os", "asyncio/events.py": "python-stdlib/asyncio",
                      "test/test_os.py": "python-stdlib/test/test_os"}


def test_resolve_sources_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        resolve_sources([str(tmp_path / "missing")], False, str(tmp_path))
    with pytest.raises(ValueError, match="no sources"):
        resolve_sources([], False, str(tmp_path))
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "b" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="share the name"):
        resolve_sources([str(tmp_path / "a" / "x"), str(tmp_path / "b" / "x")], False, str(tmp_path))
    assert os.path.isdir(tmp_path)

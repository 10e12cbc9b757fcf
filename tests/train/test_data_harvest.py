"""Harvest: discovery, language by extension, binaries, undecodable files, git and site-packages."""
import os
import subprocess

import pytest

from train.data.config import DataConfig
from train.data.harvest import (STDLIB_NAME, Source, clone_source, discover, harvest, language_of,
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


def _repo_with_fsmonitor(tmp_path):
    repo = tmp_path / "hostile"
    repo.mkdir()
    (repo / "a.py").write_text("a = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "init")
    marker = tmp_path / "pwned"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    hook.chmod(0o755)
    _git(repo, "config", "core.fsmonitor", str(hook))
    (repo / ".git" / "hooks").mkdir(exist_ok=True)
    for name in ("post-checkout", "post-index-change"):
        (repo / ".git" / "hooks" / name).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (repo / ".git" / "hooks" / name).chmod(0o755)
    return repo, marker


def test_git_runs_none_of_the_repositorys_commands(tmp_path):
    repo, marker = _repo_with_fsmonitor(tmp_path)
    # the hook is live: plain git runs it
    subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True)
    assert marker.exists()
    marker.unlink()
    source = local_source(str(repo))
    assert source.kind == "git" and [r["path"] for r in discover([source], CFG)] == ["a.py"]
    assert not marker.exists()
    clone_source(f"file://{repo}", str(tmp_path / "clones"))
    assert not marker.exists()


def test_git_ignores_git_variables_from_outside(tmp_path, monkeypatch):
    repo = tmp_path / "mine"
    other = tmp_path / "other"
    for r, name in ((repo, "mine.py"), (other, "other.py")):
        r.mkdir()
        (r / name).write_text("x = 1\n")
        _git(r, "init", "-q")
        _git(r, "add", name)
        _git(r, "commit", "-q", "-m", "init")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    source = local_source(str(repo))
    assert [rel for _, rel, _ in source.files] == ["mine.py"]


def test_symlinked_directory_is_not_followed_out_of_the_source(tmp_path):
    repo = tmp_path / "repo"
    (repo / "conf").mkdir(parents=True)
    (repo / "conf" / "settings.py").write_text("DEBUG = False\n")
    (repo / "main.py").write_text("import conf\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "settings.py").write_text("SECRET = 'from outside the source'\n")
    (repo / "conf" / "settings.py").unlink()
    (repo / "conf").rmdir()
    (repo / "conf").symlink_to(outside, target_is_directory=True)
    source = local_source(str(repo))
    assert ("conf/settings.py" in [rel for _, rel, _ in source.files])  # git still lists it
    assert [r["path"] for r in discover([source], CFG)] == ["main.py"]
    # the same for a source that lists its files (an installed distribution's RECORD)
    listed = Source(name="dist", root=str(repo), kind="package",
                    files=((str(repo / "conf" / "settings.py"), "conf/settings.py", ""),
                           (str(repo / "main.py"), "main.py", "")))
    assert [r["path"] for r in discover([listed], CFG)] == ["main.py"]
    # a root that is itself reached through a symlink is fine
    (tmp_path / "alias").symlink_to(repo, target_is_directory=True)
    assert [r["path"] for r in discover([local_source(str(tmp_path / "alias"))], CFG)] == ["main.py"]


def test_archives_are_never_opened(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "pkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("pkg/__init__.py", "x = 1\n")
    with zipfile.ZipFile(tmp_path / "src.zip", "w") as z:
        z.writestr("a.py", "x = 1\n")
    (tmp_path / "b.py").write_text("b = 2\n")
    assert [r["path"] for r in discover([local_source(str(tmp_path))], CFG)] == ["b.py"]

"""Harvest: find source files and read them into records (stage 1).

Sources are local directories, git repositories (a local checkout, or a URL cloned shallowly) and
the Python environment itself (`site_packages_sources`: every installed distribution plus the
standard library). Discovery (`discover`) only lists paths and sizes, so it is cheap and runs in one
process; reading (`harvest`) is the first stage of the per-file work that runs in the workers.
"""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from infill.corpus import language_of
from train.data.config import DataConfig
from train.data.licenses import metadata_license
from train.data.records import Record, drop

SKIP_DIRS = frozenset({"__pycache__", "node_modules", ".git", ".hg", ".svn", ".tox", ".venv",
                       "venv", ".mypy_cache", ".pytest_cache"})
BINARY_SNIFF_BYTES = 8192
STDLIB_NAME = "python-stdlib"


@dataclass(frozen=True)
class Source:
    """One place to harvest from.

    `files` lists (absolute path, path inside the source, license search root) when the source
    knows its own files (an installed distribution, a git checkout); None means walk `root`.
    """

    name: str
    root: str
    version: str = ""
    license: str = ""
    kind: str = "dir"  # "dir", "git", "package" or "stdlib"
    files: tuple[tuple[str, str, str], ...] | None = None


# A repository's own .git/config is someone else's code: `core.fsmonitor` names a command that
# `ls-files` runs, `core.hooksPath` the hooks a clone's checkout runs. Command-line `-c` wins over
# every config file, so these turn them off whatever the repository says; ext:: URLs (a command as
# transport) are refused. The filter drivers (`filter.*.clean/smudge/process`) and `diff.external`
# are not run by `ls-files`, `rev-parse` or a clone's checkout without them being configured
# outside the repository, and the pager is never started without a terminal (and is `cat` here).
GIT_SAFE_CONFIG = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null",
                   "-c", "core.pager=cat", "-c", "protocol.ext.allow=never")


def _git_env() -> dict[str, str]:
    """The environment without any GIT_* variable from outside (GIT_DIR, GIT_WORK_TREE,
    GIT_CONFIG_* would point git at another repository or add config), and never a prompt."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_PAGER="cat")
    return env


def _git(root: str, *args: str) -> str:
    return subprocess.run(["git", *GIT_SAFE_CONFIG, "-C", root, *args], check=True,
                          capture_output=True, text=True, env=_git_env(), stdin=subprocess.DEVNULL).stdout


def local_source(path: str) -> Source:
    """A directory or a local git checkout. Raises `ValueError` when it is neither."""
    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise ValueError(f"source {path!r} is not a directory")
    name = os.path.basename(root.rstrip(os.sep)) or root
    if os.path.exists(os.path.join(root, ".git")):
        try:
            listed = _git(root, "ls-files", "-z").split("\0")
            version = _git(root, "rev-parse", "HEAD").strip()
        except (OSError, subprocess.CalledProcessError):
            return Source(name=name, root=root)
        files = tuple((os.path.join(root, rel), rel, root) for rel in sorted(listed) if rel)
        return Source(name=name, root=root, version=version, kind="git", files=files)
    return Source(name=name, root=root)


def clone_source(url: str, into: str) -> Source:
    """Shallow-clone a git URL into the directory `into` and return it as a source."""
    name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repo"
    dest = os.path.join(into, name)
    try:
        subprocess.run(["git", *GIT_SAFE_CONFIG, "clone", "--quiet", "--depth", "1", "--", url, dest],
                       check=True, capture_output=True, text=True, env=_git_env(),
                       stdin=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise ValueError(f"cannot clone {url}: {detail.strip().splitlines()[-1] if detail.strip() else e}")
    return local_source(dest)


def is_git_url(spec: str) -> bool:
    """True for what `clone_source` handles rather than a local path."""
    return spec.startswith(("http://", "https://", "git@", "ssh://", "git://", "file://"))


def stdlib_source() -> Source:
    """The standard library of the running interpreter (PSF-2.0), without site-packages."""
    root = sysconfig.get_paths()["stdlib"]
    version = ".".join(map(str, sys.version_info[:3]))
    return Source(name=STDLIB_NAME, root=root, version=version, license="PSF-2.0", kind="stdlib")


def site_packages_sources(exclude: Iterable[str] = ("infill",)) -> list[Source]:
    """The standard library and every distribution installed on `sys.path`, sorted by name.

    A distribution's files come from its RECORD; its license from its metadata (the license
    stage still prefers a LICENSE file inside the package, for vendored code). Files outside the
    installation directory (scripts in bin/) are ignored, and a file claimed by two distributions
    goes to the first by name.
    """
    sources = [stdlib_source()]
    seen_names, seen_files = set(exclude), set()
    dists = sorted(importlib.metadata.distributions(),
                   key=lambda d: (d.metadata.get("Name") or "").lower())
    for dist in dists:
        name = (dist.metadata.get("Name") or "").strip()
        key = name.lower().replace("_", "-")
        if not name or key in seen_names or not dist.files:
            continue
        seen_names.add(key)
        base = os.path.abspath(str(dist.locate_file("")))
        files = []
        for f in dist.files:
            rel = str(f).replace("\\", "/")
            if rel.startswith("..") or language_of(rel) is None:
                continue
            top = rel.split("/", 1)[0]
            if top.endswith((".dist-info", ".egg-info", ".data")):
                continue
            path = os.path.join(base, rel)
            if path in seen_files:
                continue
            seen_files.add(path)
            # A top-level module has no directory of its own: metadata decides its license.
            files.append((path, rel, os.path.join(base, top) if "/" in rel else ""))
        if files:
            sources.append(Source(name=name, root=base, version=dist.version or "",
                                  license=metadata_license(dist.metadata), kind="package",
                                  files=tuple(sorted(files))))
    return sources


def _walk(source: Source) -> Iterator[tuple[str, str, str]]:
    skip_top = set()
    if source.kind == "stdlib":
        skip_top = {"site-packages", "dist-packages", "lib-dynload"}
    for dirpath, dirnames, filenames in os.walk(source.root):
        rel_dir = os.path.relpath(dirpath, source.root)
        dirnames[:] = sorted(
            d for d in dirnames
            if d not in SKIP_DIRS and not d.startswith(".")
            and not (rel_dir == "." and (d in skip_top or d.startswith("config-")))
            and not os.path.islink(os.path.join(dirpath, d)))
        for fname in sorted(filenames):
            path = os.path.join(dirpath, fname)
            rel = os.path.relpath(path, source.root).replace(os.sep, "/")
            yield path, rel, source.root


def _group(source: Source, rel: str) -> str:
    """Split unit: the whole source, except that the standard library splits by top-level
    module (and the `test` package by test module), as it is a collection of packages."""
    if source.kind != "stdlib":
        return source.name
    parts = [p.removesuffix(".pyi").removesuffix(".py") for p in rel.split("/")]
    if parts[0] == "test" and len(parts) > 1:
        return f"{source.name}/test/{parts[1]}"
    return f"{source.name}/{parts[0]}"


def _inside(path: str, root: str) -> bool:
    """True when `path`, every symlink on the way resolved, lies under `root` (already resolved)."""
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def discover(sources: Iterable[Source], config: DataConfig) -> Iterator[Record]:
    """List the files of every source as records without text (path, language, source, size).

    Rules: only known extensions (`LANGUAGES`), restricted to `config.languages` when set;
    hidden directories, `SKIP_DIRS` and symlinked directories are not entered; symlinked files
    and unreadable paths are skipped; a path whose real location (every symlink on the way
    resolved, e.g. a tracked directory replaced by `conf -> ../outside`) is not under the
    source's root is skipped. Archives (zip, tar, wheels, sdists) have no language here, so they
    are never opened.
    """
    for source in sources:
        entries = source.files if source.files is not None else _walk(source)
        root = os.path.realpath(source.root)
        for path, rel, lic_root in entries:
            language = language_of(rel)
            if language is None or (config.languages and language not in config.languages):
                continue
            try:
                if os.path.islink(path) or not os.path.isfile(path) or not _inside(path, root):
                    continue
                size = os.path.getsize(path)
            except OSError:
                continue
            yield {"path": rel, "language": language, "source": source.name,
                   "version": source.version, "license": source.license,
                   "group": _group(source, rel), "bytes": size,
                   "_file": path, "_license_root": lic_root}


def harvest(records: Iterable[Record], config: DataConfig) -> Iterator[Record]:
    """Read each discovered file into `text` (stage 1).

    Rules (tombstone names in brackets):
    - a file over `config.max_file_bytes` is not read at all; the filter stage drops it by size;
    - a NUL byte in the first 8 KiB marks a binary file [harvest.binary];
    - text must decode as UTF-8 (a BOM is stripped) [harvest.undecodable];
    - a file that vanished or cannot be read [harvest.unreadable].
    Records without a `_file` (text already in memory, from another engine or a test) pass through.
    """
    for record in records:
        if "removed" in record or "_file" not in record:
            yield record
            continue
        if record["bytes"] > config.max_file_bytes:
            yield {**record, "text": ""}
            continue
        try:
            data = Path(record["_file"]).read_bytes()
        except OSError:
            yield drop(record, "harvest.unreadable")
            continue
        record = {**record, "bytes": len(data)}
        if b"\0" in data[:BINARY_SNIFF_BYTES]:
            yield drop(record, "harvest.binary")
            continue
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            yield drop(record, "harvest.undecodable")
            continue
        yield {**record, "text": text}


def resolve_sources(specs: Iterable[str], site_packages: bool, clone_dir: str) -> list[Source]:
    """Sources for the command line: local paths, git URLs (cloned into `clone_dir`), and the
    environment when `site_packages` is set. Raises `ValueError` for a missing path."""
    sources = [clone_source(s, clone_dir) if is_git_url(s) else local_source(s) for s in specs]
    if site_packages:
        sources.extend(site_packages_sources())
    if not sources:
        raise ValueError("no sources: name a directory or repository, or pass --site-packages")
    names = [s.name for s in sources]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"two sources share the name {dups[0]!r}; rename one directory")
    return sources

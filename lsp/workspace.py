"""The workspace as repository context may read it: its files, their imports and definitions.

Rules:
- Privacy: only files under the workspace folders are read; a file or folder that `.gitignore`
  excludes (pathspec's git rules, every `.gitignore` from the folder root down) is not; a path
  whose real location (symlinks resolved) is outside its folder is never opened (checked again right
  before every read); files over `max_file_bytes` are skipped; `.git` and other dot-folders, and
  symlinked folders, are not walked. An update (`Workspace.update`) admits a file only as the scan would.
- Imports (`imports_of`, Python): read with tree-sitter from the module's import lines only, so a
  long module costs what its imports do; resolved (`Workspace.resolve`) against the index: dotted
  module names and every dotted tail of them, relative imports from the importing file's package.
- Definitions (`definitions_of`): the top-level `def`, `class` and `NAME =` of a module, each at
  most `DEFINITION_LINES` lines.
- Only regular files are indexed or read (`read_regular`): a FIFO (extracted tarballs carry them) or a
  device named `helpers.py` would block a read forever. A read opens without blocking, checks the
  open file (regular, within the size limit) and only then reads; the server gathers context off
  the event loop.
- Cost: the index is built once, off the event loop (`Workspace.scan`), and updated file by file; a
  parsed file (text, definitions, chunks) is kept until its mtime or size changes; folder checks
  and import resolutions are kept until the index changes.
"""
from __future__ import annotations

import os
import re
import stat
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pathspec

from lsp import syntax

CHUNK_LINES = 64
MAX_FILE_BYTES = 256 * 1024
DEFINITION_LINES = 40
"""A definition longer than this keeps its first lines (its signature and docstring first)."""
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Chunk:
    """Lines of a file: `path` (workspace-relative, or the document's file name), from `line` (0-based)."""

    path: str
    text: str
    source: str
    line: int = 0
    idents: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def of(cls, path: str, text: str, source: str, line: int = 0) -> "Chunk":
        return cls(path, text, source, line, identifiers(text))


def identifiers(text: str) -> frozenset[str]:
    """The identifier-like words of `text`."""
    return frozenset(_IDENT.findall(text))


def chunks_of(path: str, text: str, source: str, lines: int = CHUNK_LINES) -> list[Chunk]:
    """`text` cut into chunks of `lines` lines (blank chunks skipped)."""
    all_lines = text.splitlines(keepends=True)
    out = []
    for start in range(0, len(all_lines), lines):
        piece = "".join(all_lines[start:start + lines])
        if piece.strip():
            out.append(Chunk.of(path, piece, source, start))
    return out



def is_regular(path: str | os.PathLike) -> bool:
    """Whether `path` is a regular file (symlinks followed), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_regular(path: str | os.PathLike, max_bytes: int) -> str | None:
    """The text of `path` (UTF-8, errors replaced) when it is a regular file of at most `max_bytes`
    bytes, else None: opened non-blocking (a FIFO's open would wait for a writer), then checked with
    `fstat` on what was opened, so a file swapped for a FIFO after a `stat` is still never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data[:max_bytes].decode("utf-8", "replace")


# imports and definitions (tree-sitter) -------------------------------------------------------------

@dataclass(frozen=True)
class Import:
    """`import module` (names empty) or `from module import names`; `level` counts the leading dots."""

    module: str
    level: int = 0
    names: tuple[str, ...] = ()


_IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+[\w.]+[ \t]+import\b|import[ \t]+\w)[^\n]*(?:\n|$)", re.M)


def _import_lines(text: str) -> str:
    """The lines of `text` that start an import statement, with their continuations (a parenthesised
    list, backslashes), dedented: all the parser needs to see, so a 5,000-line module costs what its
    imports do. An import inside a function is kept too; one inside a string may be, harmlessly
    (only names that resolve to workspace files are used)."""
    out = []
    for m in _IMPORT_LINE.finditer(text):
        end = m.end()
        stmt = m.group(0)
        while ("(" in stmt and ")" not in stmt or stmt.rstrip().endswith("\\")) and end < len(text):
            nl = text.find("\n", end)
            nl = len(text) if nl < 0 else nl + 1
            stmt, end = stmt + text[end:nl], nl
        out.append(stmt.lstrip(" \t") + ("" if stmt.endswith("\n") else "\n"))
    return "".join(out)


def imports_of(text: str) -> list[Import]:
    """The import statements of a Python module, in order."""
    return list(_parse_imports(_import_lines(text)))


@lru_cache(maxsize=256)
def _parse_imports(lines: str) -> tuple[Import, ...]:
    """The imports of a module's import lines (the same lines, keystroke after keystroke: cached)."""
    parser = syntax.parser_for("python")
    if parser is None:
        return ()
    root = parser.parse(lines.encode("utf-8", "surrogatepass")).root_node
    out: list[Import] = []
    for node in root.children:
        if node.type == "import_statement":
            for name in node.children_by_field_name("name"):
                dotted = name.child_by_field_name("name") if name.type == "aliased_import" else name
                out.append(Import(dotted.text.decode()))
        elif node.type == "import_from_statement":
            mod = node.child_by_field_name("module_name")
            if mod is None:
                continue
            level, module = 0, mod.text.decode()
            if mod.type == "relative_import":
                prefix = next((c for c in mod.children if c.type == "import_prefix"), None)
                level = len(prefix.text) if prefix is not None else 0
                dotted = next((c for c in mod.children if c.type == "dotted_name"), None)
                module = dotted.text.decode() if dotted is not None else ""
            names = []
            for name in node.children_by_field_name("name"):
                dotted = name.child_by_field_name("name") if name.type == "aliased_import" else name
                names.append(dotted.text.decode())
            out.append(Import(module, level, tuple(names)))
    return tuple(out)


def definitions_of(text: str) -> dict[str, tuple[int, str]]:
    """Top-level definitions of a Python module: name -> (first line, text, at most DEFINITION_LINES lines)."""
    parser = syntax.parser_for("python")
    if parser is None:
        return {}
    data = text.encode("utf-8", "surrogatepass")
    out: dict[str, tuple[int, str]] = {}
    for node in parser.parse(data).root_node.children:
        inner = node.child_by_field_name("definition") if node.type == "decorated_definition" else node
        names = []
        if inner is not None and inner.type in ("function_definition", "class_definition"):
            names = [inner.child_by_field_name("name")]
        elif node.type == "expression_statement" and node.children and node.children[0].type == "assignment":
            left = node.children[0].child_by_field_name("left")
            names = [left] if left is not None and left.type == "identifier" else []
        for name in names:
            if name is None:
                continue
            body = data[node.start_byte:node.end_byte].decode("utf-8", "replace")
            kept = "".join(body.splitlines(keepends=True)[:DEFINITION_LINES])
            out.setdefault(name.text.decode(), (node.start_point[0], kept + ("" if kept.endswith("\n") else "\n")))
    return out


# the workspace --------------------------------------------------------------------------------------

@dataclass
class _Parsed:
    stamp: tuple[int, int]
    text: str
    rel: str
    definitions: dict[str, Chunk]
    chunks: list[Chunk]


def _gitignore(folder: Path) -> pathspec.GitIgnoreSpec | None:
    """The rules of `folder`'s `.gitignore`, or None when it has none (or it is not a regular file)."""
    text = read_regular(folder / ".gitignore", MAX_FILE_BYTES)
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines()) if text is not None else None


class Workspace:
    """The files under the workspace folders that context may read (see the module's privacy rules)."""

    def __init__(self, folders: Iterable[str | os.PathLike] = (), *, max_file_bytes: int = MAX_FILE_BYTES):
        self.folders = [Path(f).resolve() for f in folders]
        self.max_file_bytes = max_file_bytes
        self.modules: dict[str, Path] = {}
        """Dotted module name (and every dotted tail of it) -> file."""
        self.files: set[Path] = set()
        self.generation = 0
        self._parsed: dict[Path, _Parsed] = {}
        self._folders: dict[Path, Path | None] = {}
        """path -> folder_of(path), forgotten whenever the index changes."""
        self._resolved: dict[tuple, list[Path]] = {}
        self._lock = threading.Lock()

    def folder_of(self, path: str | os.PathLike, *, cached: bool = True) -> Path | None:
        """The workspace folder that holds the real location of `path` (symlinks resolved), or None."""
        path = Path(path)
        if cached and path in self._folders:
            return self._folders[path]
        try:
            real = path.resolve()
        except (OSError, RuntimeError):
            return None
        folder = next((f for f in self.folders if real == f or f in real.parents), None)
        if len(self._folders) > 65536:
            self._folders.clear()
        self._folders[path] = folder
        return folder

    def _ignored(self, rel: str, specs: list[tuple[str, pathspec.GitIgnoreSpec]], is_dir: bool) -> bool:
        for base, spec in specs:
            if rel.startswith(base):
                tail = rel[len(base):] + ("/" if is_dir else "")
                if spec.match_file(tail):
                    return True
        return False

    def scan(self) -> None:
        """Walk every folder (no symlinks followed, ignored paths skipped) and index its Python modules."""
        files: set[Path] = set()
        for folder in self.folders:
            specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
            for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
                rel_dir = os.path.relpath(dirpath, folder)
                base = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
                if ".gitignore" in filenames and (ignore := _gitignore(Path(dirpath))) is not None:
                    specs.append((base, ignore))
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                     and not os.path.islink(os.path.join(dirpath, d))
                                     and not self._ignored(base + d, specs, True))
                for name in sorted(filenames):
                    full = Path(dirpath) / name
                    if syntax.language_of(name) is None or self._ignored(base + name, specs, False):
                        continue
                    if self.folder_of(full) is not None and is_regular(full):
                        files.add(full.absolute())
        self._index(files)

    def _index(self, files: set[Path]) -> None:
        modules: dict[str, Path] = {}
        for full in sorted(files, key=lambda p: (len(p.parts), str(p))):  # shorter paths win a name
            folder = self.folder_of(full)
            if folder is None or full.suffix not in (".py", ".pyi"):
                continue
            parts = list(full.relative_to(folder).with_suffix("").parts) if full.is_relative_to(folder) \
                else [full.stem]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            for k in range(len(parts)):
                modules.setdefault(".".join(parts[k:]), full)
        with self._lock:
            self.files, self.modules = files, modules
            self._folders, self._resolved = {}, {}
            self.generation += 1

    def _admitted(self, full: Path) -> bool:
        """Whether the scan would index `full`: under a folder (really), not in a dot-folder, a symlinked
        folder or an ignored path (the `.gitignore` files from the folder's root down to it)."""
        if syntax.language_of(full.name) is None:  # first: editors report build outputs by the thousand
            return False
        if not is_regular(full):
            return False
        folder = self.folder_of(full, cached=False)
        if folder is None or not full.is_relative_to(folder):
            return False
        parts = full.relative_to(folder).parts
        specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
        for depth in range(len(parts)):
            here = folder.joinpath(*parts[:depth])
            base = "/".join(parts[:depth]) + ("/" if depth else "")
            if (ignore := _gitignore(here)) is not None:
                specs.append((base, ignore))
            last = depth == len(parts) - 1
            name = parts[depth]
            if not last and (name.startswith(".") or (here / name).is_symlink()):
                return False
            if self._ignored(base + name, specs, not last):
                return False
        return True

    def update(self, path: str | os.PathLike, *, deleted: bool = False) -> None:
        """A file changed, appeared or went (workspace/didChangeWatchedFiles, didSave)."""
        full = Path(path).absolute()
        known = full in self.files
        if not known and (deleted or not self._admitted(full)):
            return
        self._parsed.pop(full, None)
        if known and not deleted and is_regular(full):  # new content, same file: no re-index
            with self._lock:
                self.generation += 1
            return
        files = set(self.files)
        files.discard(full)
        if not deleted and self._admitted(full):
            files.add(full)
        self._index(files)

    def parsed(self, path: Path) -> _Parsed | None:
        """The text, definitions and chunks of a workspace file (cached by mtime and size), or None
        when it may not be read (outside the folders, too big, unreadable)."""
        try:
            st = path.stat()
            if st.st_size > self.max_file_bytes or not stat.S_ISREG(st.st_mode):
                return None
            stamp = (st.st_mtime_ns, st.st_size)
            held = self._parsed.get(path)
            if held is not None and held.stamp == stamp:
                return held  # checked when it was read, and unchanged since
            if self.folder_of(path, cached=False) is None:  # checked again right before every read
                return None
        except OSError:
            return None
        text = read_regular(path, self.max_file_bytes)
        if text is None:
            return None
        rel = self.relative(path)
        definitions = {name: Chunk.of(rel, body, "definitions", line)
                       for name, (line, body) in definitions_of(text).items()}
        held = _Parsed(stamp, text, rel, definitions, chunks_of(rel, text, "imports"))
        self._parsed[path] = held
        return held

    def relative(self, path: Path) -> str:
        folder = self.folder_of(path)
        if folder is not None:
            try:
                return Path(path).resolve().relative_to(folder).as_posix()
            except ValueError:
                pass
        return Path(path).name

    def resolve(self, imp: Import, from_path: Path | None) -> list[Path]:
        """Workspace files an import names: the module, and for `from m import x`, module m.x where it is
        one (cached until the index changes)."""
        key = (imp, from_path)
        if key not in self._resolved:
            if len(self._resolved) > 65536:
                self._resolved.clear()
            self._resolved[key] = self._resolve(imp, from_path)
        return self._resolved[key]

    def _resolve(self, imp: Import, from_path: Path | None) -> list[Path]:
        with self._lock:
            modules = self.modules
        found: list[Path] = []

        def add(p: Path | None) -> None:
            if p is not None and p not in found:
                found.append(p)
        if imp.level and from_path is not None:
            base = from_path.parent
            for _ in range(imp.level - 1):
                base = base.parent
            stem = base.joinpath(*imp.module.split(".")) if imp.module else base
            add(self._module_file(stem) if imp.module else None)
            for name in imp.names:
                add(self._module_file(stem / name))
            if not found:
                add(self._module_file(stem))
            return found
        if imp.module:
            add(modules.get(imp.module))
            for name in imp.names:
                add(modules.get(f"{imp.module}.{name}"))
        return found


    def _module_file(self, stem: Path) -> Path | None:
        """The indexed file of module path `stem` (stem.py or stem/__init__.py), or None."""
        files = self.files
        for candidate in (stem.with_name(stem.name + ".py"), stem / "__init__.py"):
            if candidate in files:
                return candidate
        return None

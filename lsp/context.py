"""Repository context for completions: chunks of the rest of the project, ranked, within a budget.

Sources (`SOURCES`), each a list of `Chunk`s:
- "open": the other open documents, in chunks of `CHUNK_LINES` lines.
- "recent": recently visited and edited chunks, as llama.vim keeps them: a chunk of `CHUNK_LINES`
  lines around the place is picked on open, save and edit (an edit picks again only once it moved
  half a chunk away from the last pick in that document); a new chunk evicts the ones too similar to
  it (Jaccard > `SIMILAR`), and the oldest go once the ring holds `RING_SIZE`.
- "imports": the workspace files the current file imports, resolved from its import statements
  (tree-sitter, Python) to files under the workspace folders.
- "definitions": the top-level definitions (def, class, NAME =) of those files whose names occur
  near the cursor.

Ranking (`gather`): by Jaccard similarity between a chunk's identifier set and the identifiers of
the `CHUNK_LINES` lines around the cursor; definitions of names near the cursor first. A chunk too
similar to the text around the cursor (Jaccard > `SIMILAR`: the same code again) is dropped, as are
duplicates. Ties break on (source, path, line), so the same inputs give the same context. Chunks are
taken best first while their text fits `max_chars`; the engine then keeps the ones that fit its token
budget (`infill.engines.base.fit_context`). Jaccard is written here because it is three lines over
sets; BM25 would need corpus statistics that change with every edit.

Privacy (`Workspace`): only open documents and files under the workspace folders are read; a file or
folder that `.gitignore` excludes (pathspec's git rules, every `.gitignore` from the folder root
down) is not; a path whose real location (symlinks resolved) is outside its folder is never
opened; files over `max_file_bytes` are skipped; `.git` and other dot-folders are not walked.

Cost: the index is built once, off the event loop (`Workspace.scan`), and updated file by file; a
gather touches only the parsed files of the current file's imports (cached by mtime and size), the
open documents and the ring, so it does not grow with the workspace.
"""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pathspec

from lsp import syntax
from lsp.options import CONTEXT_SOURCES as SOURCES
CHUNK_LINES = 64
RING_SIZE = 16
SIMILAR = 0.9
MAX_FILE_BYTES = 256 * 1024
DEFINITION_LINES = 40
"""A definition longer than this keeps its first lines (its signature and docstring first)."""
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SOURCE_ORDER = {s: i for i, s in enumerate(("definitions", *SOURCES))}


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


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    if not a or not b:
        return 0.0
    common = len(a & b) if len(a) < len(b) else len(b & a)
    return common / (len(a) + len(b) - common)


def chunks_of(path: str, text: str, source: str, lines: int = CHUNK_LINES) -> list[Chunk]:
    """`text` cut into chunks of `lines` lines (blank chunks skipped)."""
    all_lines = text.splitlines(keepends=True)
    out = []
    for start in range(0, len(all_lines), lines):
        piece = "".join(all_lines[start:start + lines])
        if piece.strip():
            out.append(Chunk.of(path, piece, source, start))
    return out


@lru_cache(maxsize=64)
def _open_chunks(path: str, text: str) -> list[Chunk]:
    """`chunks_of` an open document, computed once per text (a gather runs on every source change)."""
    return chunks_of(path, text, "open")


def around(text: str, line: int, lines: int = CHUNK_LINES) -> tuple[int, str]:
    """(first line, text) of the `lines` lines centred on `line`."""
    all_lines = text.splitlines(keepends=True)
    start = max(0, min(line - lines // 2, len(all_lines) - lines))
    return start, "".join(all_lines[start:start + lines])


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
                if ".gitignore" in filenames:
                    try:
                        lines = (Path(dirpath) / ".gitignore").read_text("utf-8", "replace").splitlines()
                        specs.append((base, pathspec.GitIgnoreSpec.from_lines(lines)))
                    except OSError:
                        pass
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                     and not os.path.islink(os.path.join(dirpath, d))
                                     and not self._ignored(base + d, specs, True))
                for name in sorted(filenames):
                    full = Path(dirpath) / name
                    if syntax.language_of(name) is None or self._ignored(base + name, specs, False):
                        continue
                    if self.folder_of(full) is not None:
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
        folder = self.folder_of(full, cached=False)
        if folder is None or not full.is_relative_to(folder):
            return False
        parts = full.relative_to(folder).parts
        specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
        for depth in range(len(parts)):
            here = folder.joinpath(*parts[:depth])
            base = "/".join(parts[:depth]) + ("/" if depth else "")
            try:
                lines = (here / ".gitignore").read_text("utf-8", "replace").splitlines()
                specs.append((base, pathspec.GitIgnoreSpec.from_lines(lines)))
            except OSError:
                pass
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
        if known and not deleted and full.is_file():  # new content, same file: no re-index
            with self._lock:
                self.generation += 1
            return
        files = set(self.files)
        files.discard(full)
        if not deleted and full.is_file() and self._admitted(full):
            files.add(full)
        self._index(files)

    def parsed(self, path: Path) -> _Parsed | None:
        """The text, definitions and chunks of a workspace file (cached by mtime and size), or None
        when it may not be read (outside the folders, too big, unreadable)."""
        try:
            st = path.stat()
            if st.st_size > self.max_file_bytes:
                return None
            stamp = (st.st_mtime_ns, st.st_size)
            held = self._parsed.get(path)
            if held is not None and held.stamp == stamp:
                return held  # checked when it was read, and unchanged since
            if self.folder_of(path, cached=False) is None:  # checked again right before every read
                return None
            text = path.read_text("utf-8", "replace")
        except OSError:
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


# the ring of recent chunks ----------------------------------------------------------------------------

class RecentChunks:
    """llama.vim's ring of chunks picked as the user works (see the module rules)."""

    def __init__(self, size: int = RING_SIZE, similar: float = SIMILAR):
        self.size, self.similar = size, similar
        self.chunks: list[Chunk] = []
        self.generation = 0
        self._last: dict[str, int] = {}

    def pick(self, path: str, text: str, line: int, *, edit: bool = False) -> bool:
        """Take the chunk of `text` around `line`; whether the ring changed."""
        if edit and path in self._last and abs(self._last[path] - line) < CHUNK_LINES // 2:
            return False
        self._last[path] = line
        start, piece = around(text, line)
        if not piece.strip():
            return False
        new = Chunk.of(path, piece, "recent", start)
        if any(c.path == new.path and c.text == new.text for c in self.chunks):
            return False
        self.chunks = [c for c in self.chunks if jaccard(c.idents, new.idents) <= self.similar] + [new]
        del self.chunks[:-self.size]
        self.generation += 1
        return True

    def forget(self, path: str) -> None:
        self._last.pop(path, None)


# gathering ---------------------------------------------------------------------------------------------

def gather(text: str, line: int, path: Path | None, *, workspace: Workspace, recent: RecentChunks | None,
           open_docs: dict[str, str], sources: Iterable[str] = SOURCES, max_chars: int = 4096,
           python: bool = True) -> list[Chunk]:
    """The context for a cursor on `line` of `text` (the file at `path`), best first, at most
    `max_chars` of chunk text in all. `open_docs` maps the other open documents' paths to their text."""
    sources = set(sources)
    start, window = around(text, line)
    query = identifiers(window)
    here = workspace.relative(path) if path is not None else ""
    candidates: list[Chunk] = []
    if python and path is not None and sources & {"imports", "definitions"}:
        for imp in imports_of(text):
            for target in workspace.resolve(imp, path):
                if target == path.absolute():
                    continue
                parsed = workspace.parsed(target)
                if parsed is None:
                    continue
                if "imports" in sources:
                    candidates += parsed.chunks
                if "definitions" in sources:
                    candidates += [parsed.definitions[name] for name in sorted(query & parsed.definitions.keys())]
    if "open" in sources:
        for other in sorted(open_docs):
            if other != here:
                candidates += _open_chunks(other, open_docs[other])
    if "recent" in sources and recent is not None:
        for c in recent.chunks:
            if c.path == here and c.line < start + CHUNK_LINES and start < c.line + CHUNK_LINES:
                continue  # it overlaps the text around the cursor, which the prompt has already
            candidates.append(c)

    similarity = [jaccard(c.idents, query) for c in candidates]
    order = sorted(range(len(candidates)), key=lambda i: (
        -(similarity[i] + (1.0 if candidates[i].source == "definitions" else 0.0)),
        _SOURCE_ORDER[candidates[i].source], candidates[i].path, candidates[i].line))
    out: list[Chunk] = []
    used, seen = 0, set()
    for i in order:
        c = candidates[i]
        if c.text in seen or c.source != "definitions" and similarity[i] > SIMILAR:
            continue
        if c.source != "definitions" and any(o.source == "definitions" and o.path == c.path
                                             and c.line <= o.line < c.line + CHUNK_LINES for o in out):
            continue  # its definition is already taken
        if used + len(c.text) > max_chars:
            continue
        seen.add(c.text)
        out.append(c)
        used += len(c.text)
    return out


# what the server holds ----------------------------------------------------------------------------------

def path_of(uri: str) -> Path | None:
    """The local path of a file:// URI, or None."""
    from urllib.parse import unquote, urlparse

    parts = urlparse(uri)
    return Path(unquote(parts.path)).absolute() if parts.scheme == "file" else None


class RepositoryContext:
    """The workspace index, the ring and the open documents, for the server; `for_completion` keeps
    its answer until a source changes (another document, the index, the ring) or the cursor moves to
    another band of `CHUNK_LINES // 2` lines, so typing at the cursor does not change the context."""

    def __init__(self):
        self.workspace = Workspace()
        self.recent = RecentChunks()
        self.open: dict[str, tuple[str, str]] = {}
        """uri -> (path shown to the model, text) of every open document."""
        self._versions: dict[str, int] = {}
        self._cache: dict[str, tuple[tuple, list[Chunk]]] = {}
        self.ready = threading.Event()

    def start(self, folders: Iterable[str], *, max_file_bytes: int = MAX_FILE_BYTES) -> threading.Thread:
        """Index `folders` in a background thread (set `ready` when done)."""
        self.workspace = Workspace(folders, max_file_bytes=max_file_bytes)
        self.ready.clear()

        def run():
            try:
                self.workspace.scan()
            finally:
                self.ready.set()
        thread = threading.Thread(target=run, name="infill-context-index", daemon=True)
        thread.start()
        return thread

    def _shown(self, uri: str) -> str:
        path = path_of(uri)
        return self.workspace.relative(path) if path is not None else uri.rsplit("/", 1)[-1]

    def opened(self, uri: str, text: str, line: int = 0) -> None:
        self.open[uri] = (self._shown(uri), text)
        self._versions[uri] = self._versions.get(uri, 0) + 1
        self.recent.pick(self._shown(uri), text, line)

    def changed(self, uri: str, text: str, line: int) -> None:
        self.open[uri] = (self._shown(uri), text)
        self._versions[uri] = self._versions.get(uri, 0) + 1
        self.recent.pick(self._shown(uri), text, line, edit=True)

    def saved(self, uri: str, text: str | None, line: int = 0) -> None:
        if (path := path_of(uri)) is not None:
            self.workspace.update(path)
        if text is not None:
            self.recent.pick(self._shown(uri), text, line)

    def watched(self, uri: str, deleted: bool) -> None:
        if (path := path_of(uri)) is not None:
            self.workspace.update(path, deleted=deleted)

    def closed(self, uri: str) -> None:
        self.open.pop(uri, None)
        self._cache.pop(uri, None)
        self._versions[uri] = self._versions.get(uri, 0) + 1
        self.recent.forget(self._shown(uri))

    def for_completion(self, uri: str, text: str, line: int, *, sources: Iterable[str] = SOURCES,
                       max_chars: int = 4096, python: bool = True) -> list[Chunk]:
        """The context for a completion on `line` of document `uri` (cached, see the class docstring)."""
        sources = tuple(sources)
        others = tuple(sorted((u, v) for u, v in self._versions.items() if u != uri))
        key = (self.workspace.generation, self.recent.generation, others, line // (CHUNK_LINES // 2),
               sources, max_chars)
        held = self._cache.get(uri)
        if held is not None and held[0] == key:
            return held[1]
        open_docs = {shown: t for u, (shown, t) in self.open.items() if u != uri}
        chunks = gather(text, line, path_of(uri), workspace=self.workspace, recent=self.recent,
                        open_docs=open_docs, sources=sources, max_chars=max_chars, python=python)
        self._cache[uri] = (key, chunks)
        return chunks

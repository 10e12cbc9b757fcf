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

What may be read, and how imports and definitions are found: `lsp.workspace`.

Cache-model sources (`RepositoryContext.cache_sources`): the same sources as whole texts, nearest
first, each with a version: the other open documents, the files the current file imports, the recent
chunks, then the other files of the current file's folder (the project layer of SLP-Core's nesting).
The current file's own copy on disk is never one (the open document is newer, and the cache reads it
whole). They pass the same privacy rules (`Workspace.parsed`).

Cost: a gather touches only the parsed files of the current file's imports, the open documents and
the ring, so it does not grow with the workspace; `RepositoryContext` keeps its answer until a
source changes.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from lsp.options import CONTEXT_SOURCES as SOURCES
from lsp.options import ServerOptions
from lsp.workspace import (CHUNK_LINES, DEFINITION_LINES, MAX_FILE_BYTES, Chunk, Import, Workspace, chunks_of,
                           definitions_of, identifiers, imports_of)

__all__ = ["CHUNK_LINES", "DEFINITION_LINES", "MAX_FILE_BYTES", "RING_SIZE", "SIMILAR", "SOURCES", "Chunk",
           "Import", "RecentChunks", "RepositoryContext", "Workspace", "around", "chunks_of", "completion_context", "definitions_of",
           "gather", "identifiers", "imports_of", "jaccard", "path_of"]
RING_SIZE = 16
SIMILAR = 0.9
_SOURCE_ORDER = {s: i for i, s in enumerate(("definitions", *SOURCES))}


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    if not a or not b:
        return 0.0
    common = len(a & b) if len(a) < len(b) else len(b & a)
    return common / (len(a) + len(b) - common)



@lru_cache(maxsize=64)
def _open_chunks(path: str, text: str) -> list[Chunk]:
    """`chunks_of` an open document, computed once per text (a gather runs on every source change)."""
    return chunks_of(path, text, "open")


def around(text: str, line: int, lines: int = CHUNK_LINES) -> tuple[int, str]:
    """(first line, text) of the `lines` lines centred on `line`."""
    all_lines = text.splitlines(keepends=True)
    start = max(0, min(line - lines // 2, len(all_lines) - lines))
    return start, "".join(all_lines[start:start + lines])



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
    another band of `CHUNK_LINES // 2` lines, so typing at the cursor does not change the context.
    The server calls `for_completion` on a thread (it reads files) and everything else on the loop."""

    def __init__(self):
        self.workspace = Workspace()
        self.recent = RecentChunks()
        self.open: dict[str, tuple[str, str]] = {}
        """uri -> (path shown to the model, text) of every open document."""
        self._versions: dict[str, int] = {}
        """uri -> a number that changes with every open and edit (of the open documents only)."""
        self._counter = itertools.count(1)
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
        self._versions[uri] = next(self._counter)
        self.recent.pick(self._shown(uri), text, line)

    def changed(self, uri: str, text: str, line: int) -> None:
        self.open[uri] = (self._shown(uri), text)
        self._versions[uri] = next(self._counter)
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
        self._versions.pop(uri, None)  # the other documents' cache keys change with it
        self.recent.forget(self._shown(uri))

    def cache_sources(self, uri: str, text: str, *, sources: Iterable[str] = SOURCES, folder: bool = True,
                      python: bool = True) -> list[tuple[str, object, str]]:
        """(key, version, text) of the cache model's sources for document `uri` (see the module rules)."""
        sources, here = set(sources), path_of(uri)
        out: list[tuple[str, object, str]] = []
        seen = {uri} | ({here.as_uri()} if here is not None else set())

        def add(key: str, version: object, body: str) -> None:
            if key not in seen and body.strip():
                seen.add(key)
                out.append((key, version, body))

        def add_files(files: Iterable[Path]) -> None:
            for f in files:
                if (parsed := self.workspace.parsed(f)) is not None:
                    add(f.as_uri(), parsed.stamp, parsed.text)
        if "open" in sources:
            for other in sorted(self.open):
                add(other, self._versions.get(other, 0), self.open[other][1])
                if (p := path_of(other)) is not None:
                    seen.add(p.as_uri())  # its copy on disk is older
        if python and here is not None and "imports" in sources:
            add_files(f for imp in imports_of(text) for f in self.workspace.resolve(imp, here))
        if "recent" in sources:
            shown = self._shown(uri)
            for c in self.recent.chunks:
                if c.path != shown:
                    add(f"recent:{c.path}:{c.line}", hash(c.text), c.text)
        if folder and here is not None:
            add_files(sorted(f for f in self.workspace.files if f.parent == here.parent))
        return out

    def for_completion(self, uri: str, text: str, line: int, *, sources: Iterable[str] = SOURCES,
                       max_chars: int = 4096, python: bool = True) -> list[Chunk]:
        """The context for a completion on `line` of document `uri` (cached, see the class docstring)."""
        sources = tuple(sources)
        versions, opened = dict(self._versions), dict(self.open)  # atomic copies: this runs off the loop
        others = tuple(sorted((u, v) for u, v in versions.items() if u != uri))
        key = (self.workspace.generation, self.recent.generation, others, line // (CHUNK_LINES // 2),
               sources, max_chars)
        held = self._cache.get(uri)
        if held is not None and held[0] == key:
            return held[1]
        open_docs = {shown: t for u, (shown, t) in opened.items() if u != uri}
        chunks = gather(text, line, path_of(uri), workspace=self.workspace, recent=self.recent,
                        open_docs=open_docs, sources=sources, max_chars=max_chars, python=python)
        self._cache[uri] = (key, chunks)
        return chunks


def completion_context(repo: RepositoryContext, uri: str, text: str, line: int, options: ServerOptions, *,
                       cache: bool = True, python: bool = True) -> dict:
    """The context arguments of `lsp.completion.complete_steps` for a cursor on `line` of document
    `uri`, as the server passes them: the prompt's chunks (with `contextTokens` > 0) and the cache
    model's sources (with `cache`), none with the `context` option off; the file's path and folder."""
    if not options.context:
        return {}
    out: dict = {}
    if options.context_tokens:
        chunks = repo.for_completion(uri, text, line, sources=options.context_sources,
                                     max_chars=4 * options.context_tokens, python=python)
        out["context"] = tuple((c.path, c.text) for c in chunks)
    if cache and options.cache:
        out["sources"] = tuple(repo.cache_sources(uri, text, sources=options.context_sources, python=python))
    path, ws = path_of(uri), repo.workspace
    folder = ws.folder_of(path) if path is not None else None
    return {**out, "path": ws.relative(path) if path is not None else None,
            "repo": folder.name if folder is not None else None}

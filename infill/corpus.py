"""The corpus as files on disk: the record, the language table and the shard reader, defined once.

Read by the data pipeline (`train.data`: harvest, shard writer, config), the training loader, the
evaluations that read held-out code (`infill.evaluate.documents`) and the language server
(`lsp.syntax`). `infill` never imports `train`, so these facts live here.

Rules:
- A record is a JSON-ready dict (`Record`); the fields a shard holds are `OUTPUT_FIELDS`, in order.
- `LANGUAGES` maps a file extension (lower case, with the dot) to the corpus's language name; files
  with any other extension are not harvested. CUDA (`.cu`, `.cuh`) is its own language, "cuda".
- `GRAMMARS` names the tree-sitter grammar of a language where it differs from the language name,
  and `EDITOR_ONLY` adds the languages the editor knows how to parse but the corpus does not hold.
- `HELD_OUT_PACKAGES` are installed distributions no corpus may hold (the data pipeline drops them
  by default), so the rest-of-line evaluation (`infill eval rest-of-line`) reads code no model saw.
- Shards are `{split}-{index:05d}.jsonl.gz`: one record per line. `read_shard` also reads a plain
  `.jsonl`; a line that is not a JSON object is a `ValueError` naming the file and line.
"""
from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterator
from typing import Any

Record = dict[str, Any]

OUTPUT_FIELDS = ("text", "path", "language", "source", "version", "license", "group", "split")

LANGUAGES: dict[str, str] = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".cu": "cuda", ".cuh": "cuda",
    ".java": "java",
    ".go": "go",
    ".rs": "rust",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell",
}
GRAMMARS: dict[str, str] = {"shell": "bash"}
"""Language -> tree-sitter grammar, where the names differ."""
GRAMMAR_BY_EXT: dict[str, str] = {".tsx": "tsx"}
"""Extensions whose grammar is not their language's (TypeScript with JSX)."""
EDITOR_ONLY: dict[str, str] = {
    ".rb": "ruby", ".lua": "lua", ".kt": "kotlin", ".swift": "swift", ".cs": "csharp", ".php": "php",
    ".scala": "scala",
}
"""Extension -> tree-sitter grammar of languages the editor parses but the corpus does not hold."""

HELD_OUT_PACKAGES: tuple[str, ...] = ("detect-secrets",)
"""Distributions kept out of every corpus, by normalised name (lower case, `_` as `-`).

detect-secrets 1.5.0 (Apache-2.0, 87 Python files, about 7,800 lines of ordinary application code:
plugins, a scanner, a CLI) was installed after the default model's corpus was built, is vendored by
no package that the corpus holds (unlike requests, urllib3 and certifi, which pip vendors, or httpx
and httpcore, whose forks httpx2 and httpcore2 are in it), and is not a test suite or generated code.
"""


def package_key(name: str) -> str:
    """A distribution name as `HELD_OUT_PACKAGES` spells it: lower case, `_` and `.` as `-`."""
    return name.strip().lower().replace("_", "-").replace(".", "-")


SHARD_GLOB = "*-[0-9][0-9][0-9][0-9][0-9].jsonl.gz"


def language_of(path: str) -> str | None:
    """The corpus language of a file by its extension, or None when the corpus does not hold it."""
    return LANGUAGES.get(os.path.splitext(path)[1].lower())


def grammar_of_extension(ext: str) -> str | None:
    """The tree-sitter grammar for files ending in `ext` (".py"), or None."""
    ext = ext.lower()
    if ext in GRAMMAR_BY_EXT:
        return GRAMMAR_BY_EXT[ext]
    if ext in LANGUAGES:
        return GRAMMARS.get(LANGUAGES[ext], LANGUAGES[ext])
    return EDITOR_ONLY.get(ext)


def shard_paths(data_dir: str, split: str | None = None) -> list[str]:
    """Sorted shard files of a built corpus, of one split or all."""
    pattern = f"{split}-[0-9]*.jsonl.gz" if split else SHARD_GLOB
    return sorted(glob.glob(os.path.join(str(data_dir), pattern)))


def read_shard(path: str | os.PathLike) -> Iterator[Record]:
    """The records of one shard (`.jsonl.gz` or `.jsonl`), in order; blank lines are skipped."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise ValueError(f"{path}:{n}: not a JSON record") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{n}: not a JSON record")
            yield record


def read_shards(data_dir: str, split: str | None = None) -> Iterator[Record]:
    """Stream the records of a built corpus, shard by shard, in order."""
    for path in shard_paths(data_dir, split):
        yield from read_shard(path)

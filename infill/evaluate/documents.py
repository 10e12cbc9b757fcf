"""Held-out documents for the evaluations that read code: a directory of files, or data shards.

Rules:
- A directory that holds data-pipeline shards (`*.jsonl.gz` / `*.jsonl`, one JSON record per line
  with `text`, `path`, `language` and `split`) yields their records whose split is not `train`
  (the pipeline's `validation` groups, which no training step saw), read by `infill.corpus`.
- Any other directory yields its source files (recursively, sorted, UTF-8 only), with the language
  from the file extension (`infill.corpus.LANGUAGES`); hidden directories and `__pycache__` are skipped,
  and so are the directories the caller names in `skip` (at any depth).
- Order is deterministic, so `--limit N` always means the same N documents.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infill.corpus import LANGUAGES, read_shard


@dataclass(frozen=True)
class Document:
    path: str
    language: str
    text: str


def _shards(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith((".jsonl.gz", ".jsonl")))


def iter_documents(directory: Path, languages: set[str] | None = None, *,
                   skip: frozenset[str] = frozenset()) -> Iterator[Document]:
    """Held-out documents under `directory` (see the module rules); only `languages` if given; no file
    under a directory named in `skip`."""
    if not directory.is_dir():
        raise ValueError(f"{directory}: not a directory")
    shards = _shards(directory)
    if shards:
        for shard in shards:
            for n, record in enumerate(read_shard(shard), 1):
                text, language = record.get("text"), record.get("language") or ""
                if not isinstance(text, str):
                    raise ValueError(f"{shard}: record {n} is not a data-shard record (needs text and language)")
                if record.get("split") == "train" or not text:
                    continue
                if languages is None or language in languages:
                    yield Document(record.get("path", f"{shard.name}:{n}"), language, text)
        return
    for path in sorted(directory.rglob("*")):
        if any(part.startswith(".") or part == "__pycache__" or part in skip
               for part in path.relative_to(directory).parts):
            continue
        language = LANGUAGES.get(path.suffix.lower())
        if not path.is_file() or language is None or (languages is not None and language not in languages):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            yield Document(str(path.relative_to(directory)), language, text)

"""What the syntax around the cursor says: the language of a document, whether a block was just opened,
the document's indentation unit.

Rules:
- The language comes from the editor's languageId, else the file extension. tree-sitter grammars come
  from tree-sitter-python and tree-sitter-language-pack 0.13 (bundled grammars, nothing downloaded);
  a language without a grammar falls back to indentation rules (a line ending in ":" or "{").
- Only a window of text before the cursor is parsed (`WINDOW_CHARS`), so a 5 MB file costs what a small
  one does. Parsing stops at the cursor (plus the "}" an editor would insert after a "{"): a block
  opened there is at the end of the tree.
- A block opener is a ":" or "{" token whose parent is a block-bearing node (a definition, statement,
  clause or body), not a literal: `{` of a dict or object literal does not want a body.
"""
from __future__ import annotations

import logging
import threading
from functools import lru_cache
from pathlib import PurePosixPath
from urllib.parse import unquote, urlparse

from infill import corpus

log = logging.getLogger(__name__)

WINDOW_CHARS = 8192
OPENERS = (":", "{")

# Extension -> tree-sitter grammar: the corpus's languages (`infill.corpus`, the one table), and a few more.
LANGUAGE_BY_EXT: dict[str, str] = {ext: corpus.grammar_of_extension(ext)
                                   for ext in (*corpus.LANGUAGES, *corpus.EDITOR_ONLY)}
# Editor languageIds that differ from the tree-sitter name.
LANGUAGE_BY_ID: dict[str, str] = {
    "javascriptreact": "javascript", "typescriptreact": "tsx", "shellscript": "bash", "sh": "bash",
    "c++": "cpp", "objective-c": "objc",
}
_NOT_BLOCKS = ("ERROR", "dictionary", "set", "object", "lambda", "initializer_list", "struct_expression",
               "object_pattern", "array", "slice", "subscript", "pair")
_BLOCKS = ("block", "body", "definition", "declaration", "statement", "clause", "function", "class",
           "method", "item", "impl", "trait", "struct", "enum", "interface", "module", "namespace", "case")


def extension_of(uri: str) -> str:
    """The file extension of a document URI (".py"), or "" when it has none."""
    try:
        return PurePosixPath(unquote(urlparse(uri).path)).suffix.lower()
    except ValueError:
        return ""


def language_of(uri: str, language_id: str | None = None) -> str | None:
    """The tree-sitter language of a document, or None when unknown."""
    if language_id:
        name = LANGUAGE_BY_ID.get(language_id, language_id)
        if name in LANGUAGE_BY_EXT.values() or _grammar(name) is not None:
            return name
    return LANGUAGE_BY_EXT.get(extension_of(uri))


def parser_for(language: str | None):
    """A tree-sitter parser for `language`, or None when no grammar is installed for it. One parser per
    thread: a tree-sitter parser is not thread-safe, and big documents are parsed off the event loop
    while the loop parses small ones."""
    grammar = _grammar(language)
    if grammar is None:
        return None
    parsers = _local.__dict__.setdefault("parsers", {})
    if language not in parsers:
        import tree_sitter
        parsers[language] = tree_sitter.Parser(grammar)
    return parsers[language]


_local = threading.local()


@lru_cache(maxsize=None)
def _grammar(language: str | None):
    """The tree-sitter `Language` of `language`, or None when no grammar is installed for it."""
    if not language:
        return None
    try:
        import tree_sitter
        if language == "python":
            import tree_sitter_python
            return tree_sitter.Language(tree_sitter_python.language())
        import tree_sitter_language_pack
        return tree_sitter_language_pack.get_language(language)
    except Exception as exc:  # a missing or broken grammar: indentation rules instead
        log.info("no tree-sitter grammar for %s: %s", language, exc)
        return None


def _window(prefix: str) -> str:
    """The end of `prefix`, cut at a line start, at most about WINDOW_CHARS long."""
    if len(prefix) <= WINDOW_CHARS:
        return prefix
    cut = prefix.find("\n", len(prefix) - WINDOW_CHARS)
    return prefix[cut + 1:] if cut >= 0 else prefix[-WINDOW_CHARS:]


def opens_block(prefix: str, language: str | None) -> bool:
    """Whether the last non-blank character of `prefix` opens a block that wants a body."""
    text = _window(prefix).rstrip()
    if not text or text[-1] not in OPENERS:
        return False
    parser = parser_for(language)
    if parser is None:
        return True
    data = text.encode("utf-8", "surrogatepass")
    at = len(data) - 1
    if text[-1] == "{":  # close it, as the editor would: an unclosed brace is an ERROR in most grammars
        data += b"}"
    tree = parser.parse(data)
    node = tree.root_node.descendant_for_byte_range(at, at + 1)
    if node is None or node.type not in OPENERS or node.parent is None:
        return False
    parent = node.parent.type
    if any(bad in parent for bad in _NOT_BLOCKS):
        return False
    return any(good in parent for good in _BLOCKS)


def indent_unit(text: str, sample_lines: int = 2000) -> str:
    """The document's indentation step: a tab, or the smallest space indent seen (4 when none)."""
    tabs, widths = 0, []
    for line in text[:200_000].split("\n", sample_lines)[:sample_lines]:
        if line.startswith("\t"):
            tabs += 1
        elif line.startswith(" ") and line.strip():
            widths.append(len(line) - len(line.lstrip(" ")))
    if tabs > len(widths):
        return "\t"
    return " " * min(widths) if widths and min(widths) <= 8 else "    "

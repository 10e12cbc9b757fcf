"""Word tokens of a file, shared by the decontamination and dedup stages.

A word is a maximal run of `\\w` characters: identifiers, keywords and numbers; punctuation and
whitespace separate words and are dropped, so re-indenting or re-spacing a file does not change its
words. Both stages cut the same text right after one another in a worker, so the last results are
memoised, keyed by the text itself (a str caches its hash, and the lookup is by identity first).
"""
from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"\w+")


@lru_cache(maxsize=2)
def words(text: str) -> tuple[str, ...]:
    """The words of `text`, in order."""
    return tuple(_WORD.findall(text))

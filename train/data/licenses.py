"""License: find each file's SPDX license and keep the permissive ones (stage 2).

Where a license comes from, first match wins:
1. the nearest LICENSE / LICENCE / COPYING file (any extension or `-NAME` suffix) in the file's
   directory or a parent, up to the root of its repository or package (so vendored code keeps its
   own license); several different licenses in one directory (LICENSE-MIT + LICENSE-APACHE) are
   read as a choice, `A OR B`;
2. the package metadata: `License-Expression`, else a short `License` field, else the
   `License ::` classifiers (see `metadata_license`);
3. otherwise "unknown".
License texts are recognised by the distinctive sentence of each license (`classify_text`), not by
a full-text match: good enough to sort permissive from copyleft, not a legal opinion.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from email.message import Message

from train.data.config import DataConfig
from train.data.records import Record, drop

UNKNOWN = "unknown"

# Distinctive phrases, checked in order: the first hit names the license. PSF comes before GPL
# because Python's LICENSE discusses GPL compatibility; LGPL/AGPL before GPL for the same reason.
_TEXT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PSF-2.0", ("python software foundation license",)),
    ("AGPL-3.0", ("gnu affero general public license",)),
    ("LGPL-3.0", ("gnu lesser general public license version 3",)),
    ("LGPL-2.1", ("gnu lesser general public license", "gnu library general public license")),
    ("GPL-3.0", ("gnu general public license version 3",)),
    ("GPL-2.0", ("gnu general public license",)),
    ("MPL-2.0", ("mozilla public license version 2.0", "mozilla public license, version 2.0")),
    ("EPL-2.0", ("eclipse public license",)),
    ("Apache-2.0", ("apache license version 2.0", "apache license, version 2.0")),
    ("MIT", ("permission is hereby granted, free of charge",)),
    ("ISC", ("permission to use, copy, modify, and/or distribute this software for any purpose",
             "permission to use, copy, modify, and distribute this software for any purpose")),
    ("BSD-3-Clause", ("neither the name", "endorse or promote products derived")),
    ("BSD-2-Clause", ("redistribution and use in source and binary forms",)),
    ("Unlicense", ("this is free and unencumbered software released into the public domain",)),
    ("BSL-1.0", ("boost software license",)),
    ("Zlib", ("altered source versions must be plainly marked",)),
    ("CC0-1.0", ("cc0 1.0 universal", "creative commons zero")),
)
# BSD-3 phrases only count in a BSD text.
_NEEDS = {"BSD-3-Clause": "redistribution and use in source and binary forms"}
# Only the head of a license file decides (titles and first paragraphs).
_HEAD_CHARS = 4000

_ALIASES = {
    "mit": "MIT", "mit license": "MIT", "the mit license": "MIT", "expat": "MIT",
    "bsd": "BSD-3-Clause", "bsd license": "BSD-3-Clause", "new bsd": "BSD-3-Clause",
    "3-clause bsd license": "BSD-3-Clause", "bsd 3-clause": "BSD-3-Clause",
    "bsd-3-clause": "BSD-3-Clause", "modified bsd": "BSD-3-Clause",
    "bsd 2-clause": "BSD-2-Clause", "simplified bsd": "BSD-2-Clause",
    "apache 2.0": "Apache-2.0", "apache-2.0": "Apache-2.0", "apache 2.0 license": "Apache-2.0",
    "apache license 2.0": "Apache-2.0", "apache license, version 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache": "Apache-2.0",
    "isc": "ISC", "isc license": "ISC", "isc license (iscl)": "ISC",
    "psf": "PSF-2.0", "psf-2.0": "PSF-2.0", "python software foundation license": "PSF-2.0",
    "unlicense": "Unlicense", "the unlicense (unlicense)": "Unlicense",
    "public domain": "Unlicense", "zlib": "Zlib", "zlib/libpng license": "Zlib",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0", "mpl 2.0": "MPL-2.0",
    "gpl": "GPL-2.0", "gplv2": "GPL-2.0", "gplv3": "GPL-3.0",
    "gnu general public license v2 (gplv2)": "GPL-2.0",
    "gnu general public license v3 (gplv3)": "GPL-3.0",
    "gnu general public license (gpl)": "GPL-2.0",
    "gnu lesser general public license v3 (lgplv3)": "LGPL-3.0",
    "gnu lesser general public license v2 or later (lgplv2+)": "LGPL-2.1",
    "gnu library or lesser general public license (lgpl)": "LGPL-2.1",
    "gnu affero general public license v3": "AGPL-3.0",
    "boost software license 1.0 (bsl-1.0)": "BSL-1.0",
    "historical permission notice and disclaimer (hpnd)": "HPND",
}
_LICENSE_NAME = re.compile(r"^(licen[cs]e|copying)([-_. ].*)?$", re.IGNORECASE)
_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


def classify_text(text: str) -> str:
    """SPDX id of a license text from its distinctive sentences, or "unknown"."""
    head = _normalise(text[:_HEAD_CHARS])
    for spdx, phrases in _TEXT_RULES:
        if spdx in _NEEDS and _NEEDS[spdx] not in head:
            continue
        if any(p in head for p in phrases):
            return spdx
    return UNKNOWN


def normalise_id(name: str) -> str:
    """Canonical SPDX spelling of a license name or alias; unknown names pass through."""
    key = " ".join(name.strip().lower().split())
    if key in _ALIASES:
        return _ALIASES[key]
    words = set(re.findall(r"[a-z0-9.]+", key))
    if "apache" in words and ("2.0" in words or "2" in words):
        return "Apache-2.0"
    if "mit" in words and "license" in words and len(words) <= 3:
        return "MIT"
    if "bsd" in words and not ({"gpl", "lgpl"} & words):
        return "BSD-2-Clause" if "2-clause" in key else "BSD-3-Clause"
    return name.strip()


def metadata_license(meta: Message) -> str:
    """SPDX expression from core metadata, or "" when it says nothing usable."""
    expr = (meta.get("License-Expression") or "").strip()
    if expr:
        return expr
    field = (meta.get("License") or "").strip()
    if field and "\n" not in field and len(field) <= 80:
        if " AND " in field or " OR " in field:
            return field
        spdx = normalise_id(field)
        if spdx != field or spdx.lower() in {k.lower() for k in _ALIASES.values()}:
            return spdx
    elif field:
        spdx = classify_text(field)
        if spdx != UNKNOWN:
            return spdx
    ids = []
    for classifier in meta.get_all("Classifier") or []:
        parts = [p.strip() for p in classifier.split("::")]
        if parts[0] == "License" and len(parts) > 1:
            spdx = normalise_id(parts[-1])
            if spdx != parts[-1] or parts[-1] in _ALIASES.values():
                ids.append(spdx)
    ids = sorted(set(ids))
    return " OR ".join(ids)


def _parse(tokens: list[str], allowed: set[str]) -> bool:
    """Recursive descent over an SPDX expression: OR binds looser than AND; `X WITH exc` is X."""
    pos = 0

    def factor() -> bool:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("truncated expression")
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            ok = expr()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise ValueError("unbalanced parentheses")
            pos += 1
            return ok
        if pos < len(tokens) and tokens[pos].upper() == "WITH":
            pos += 2
        return normalise_id(tok.removesuffix("+")).lower() in allowed

    def term() -> bool:
        nonlocal pos
        ok = factor()
        while pos < len(tokens) and tokens[pos].upper() == "AND":
            pos += 1
            ok = factor() and ok
        return ok

    def expr() -> bool:
        nonlocal pos
        ok = term()
        while pos < len(tokens) and tokens[pos].upper() == "OR":
            pos += 1
            ok = term() or ok
        return ok

    result = expr()
    if pos != len(tokens):
        raise ValueError("trailing tokens")
    return result


def is_allowed(expression: str, allowed: Iterable[str]) -> bool:
    """Whether an SPDX expression may be kept: `A OR B` if either is allowed, `A AND B` if both.
    An unparsable expression is allowed only when listed verbatim."""
    allowed_set = {a.lower() for a in allowed}
    if expression.lower() in allowed_set:
        return True
    try:
        return _parse(_TOKEN.findall(expression), allowed_set)
    except ValueError:
        return False


class LicenseFinder:
    """Nearest-license-file lookup with a per-directory cache (one per worker process)."""

    def __init__(self) -> None:
        self._dir_cache: dict[str, str | None] = {}

    def _in_dir(self, directory: str) -> str | None:
        if directory in self._dir_cache:
            return self._dir_cache[directory]
        found = []
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            names = []
        for name in names:
            path = os.path.join(directory, name)
            if _LICENSE_NAME.match(name) and os.path.isfile(path):
                try:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        spdx = classify_text(f.read(_HEAD_CHARS))
                except OSError:
                    continue
                if spdx != UNKNOWN and spdx not in found:
                    found.append(spdx)
        result = " OR ".join(found) if found else None
        self._dir_cache[directory] = result
        return result

    def find(self, path: str, root: str) -> str | None:
        """License of the nearest license file from `path`'s directory up to `root`, or None."""
        if not root:
            return None
        root = os.path.abspath(root)
        directory = os.path.dirname(os.path.abspath(path))
        while True:
            found = self._in_dir(directory)
            if found:
                return found
            if directory == root or len(directory) <= len(root):
                return None
            directory = os.path.dirname(directory)


def filter_licenses(records: Iterable[Record], config: DataConfig,
                    finder: LicenseFinder | None = None) -> Iterator[Record]:
    """Set each record's `license` and keep the allowed ones (stage 2).

    Rules: license lookup order as in the module docstring; a file is kept when its expression is
    allowed by `config.licenses` (see `is_allowed`). Tombstones: [license.unknown] when no
    license was found, [license.not_allowed] otherwise.
    """
    finder = finder or LicenseFinder()
    for record in records:
        if "removed" in record:
            yield record
            continue
        spdx = finder.find(record.get("_file", ""), record.get("_license_root", ""))
        record = {**record, "license": spdx or record.get("license") or UNKNOWN}
        if is_allowed(record["license"], config.licenses):
            yield record
        elif record["license"] == UNKNOWN:
            yield drop(record, "license.unknown")
        else:
            yield drop(record, "license.not_allowed")

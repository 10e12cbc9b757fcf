"""The server's options: one dataclass, read from `initializationOptions` and `workspace/didChangeConfiguration`.

Rules:
- Keys on the wire are camelCase (`maxTokens`); each maps onto one field. The settings may also come
  wrapped in an `{"infill": {...}}` section, as editors send them.
- An update changes only the keys it names. A bad value (wrong type, out of range) or an unknown key
  never fails the update: the field falls back to its default and the problem is reported in words
  the user can act on (the server shows them with `window/showMessage`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

SECTION = "infill"
CONTEXT_SOURCES = ("open", "recent", "imports", "definitions")
"""The same names as `lsp.context.SOURCES` (which imports them from here)."""
TELEMETRY = ("off", "local")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class ServerOptions:
    """What the user can set; every field has a safe default."""

    model: str | None = None
    """Checkpoint directory; None: $INFILL_MODEL, then the built-in default (as `infill complete`)."""
    device: str = "auto"
    """auto, cpu or cuda[:N]."""
    max_tokens: int = 64
    """Token budget of one completion."""
    temperature: float = 0.0
    """0 is greedy (deterministic, and the fastest: prompt-lookup drafting)."""
    time_budget_ms: float = 2000.0
    """A completion stops generating after this long and returns what it has."""
    cache_mb: float = 256.0
    """Memory for the per-document session KV caches (LRU); 0 turns the session cache off."""
    completion: bool = True
    """textDocument/inlineCompletion and textDocument/completion."""
    type_hints: bool = True
    """Inferred type annotations (inlay hints, hover, code action)."""
    variable_names: bool = True
    """Variable-name suggestions (code action, rename)."""
    type_confidence: float = 0.5
    """Smallest probability for an inferred type to be shown."""
    name_suggestions: int = 3
    """How many model-suggested names the rename code action offers (top k)."""
    context: bool = True
    """Repository context: other files of the project before the prompt (`lsp.context`)."""
    context_tokens: int = 1024
    """Most tokens the repository context takes (never more than half the prompt)."""
    context_sources: tuple[str, ...] = ("open", "recent", "imports", "definitions")
    """Where context comes from: open (documents), recent (edited and visited chunks), imports
    (workspace files the current file imports), definitions (of names near the cursor, from those)."""
    context_file_kb: int = 256
    """Workspace files larger than this are never read for context."""
    cache: bool = True
    """The cache model: an n-gram model of the document and the workspace sources of repository
    context, mixed into the model's next-token distribution (`infill.cache`; engines with logits)."""
    cache_sources_mb: float = 64.0
    """Memory for the cache model's token ids (the least recently used source goes first)."""
    fill_holes: bool = True
    """The "Fill N holes in `name`" code action (`lsp.fill`)."""
    hole_patterns: tuple[str, ...] | None = None
    """Regular expressions a hole's whole text matches (`lsp.holes`); None: `lsp.holes.DEFAULT_PATTERNS`."""
    telemetry: str = "off"
    """Acceptance records (`lsp.records`): off, or local (JSONL files on this machine; nothing is sent)."""
    telemetry_text: bool = False
    """Acceptance records also hold the suggestion's text (and the text that replaced it)."""
    telemetry_dir: str | None = None
    """Where the records go; None: the user data directory (platformdirs)."""
    max_document_mb: float = 5.0
    """An open document larger than this (MiB of text) gets no model feature, parse or context: the
    status says it is too large; editing it still works."""

    def __post_init__(self):
        problems = [p for f in fields(self) if (p := _check(f.name, getattr(self, f.name)))]
        if problems:
            raise ValueError("; ".join(problems))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(name: str, v: Any) -> str | None:
    """Why value `v` is bad for field `name`, or None when it is fine."""
    key = camel(name)
    if name == "model":
        return None if v is None or (isinstance(v, str) and v.strip()) else f"{key} must be a directory path"
    if name == "device":
        return None if isinstance(v, str) and _DEVICE.fullmatch(v) else f"{key} must be auto, cpu or cuda[:N]"
    if name == "max_tokens":
        ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024
        return None if ok else f"{key} must be an integer from 1 to 1024"
    if name == "name_suggestions":
        ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 20
        return None if ok else f"{key} must be an integer from 1 to 20"
    if name == "context_tokens":
        ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 16384
        return None if ok else f"{key} must be an integer from 0 to 16384"
    if name == "context_file_kb":
        ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65536
        return None if ok else f"{key} must be an integer from 1 to 65536 (KiB)"
    if name == "context_sources":
        ok = isinstance(v, tuple) and all(isinstance(x, str) and x in CONTEXT_SOURCES for x in v)
        return None if ok else f"{key} must be a list of {', '.join(CONTEXT_SOURCES)}"
    if name == "hole_patterns":
        ok = v is None or isinstance(v, tuple) and all(isinstance(x, str) and _compiles(x) for x in v)
        return None if ok else f"{key} must be a list of regular expressions"
    if name == "telemetry":
        return None if v in TELEMETRY else f"{key} must be one of {', '.join(TELEMETRY)}"
    if name == "telemetry_dir":
        return None if v is None or (isinstance(v, str) and v.strip()) else f"{key} must be a directory path"
    if name in ("temperature",):
        return None if _is_number(v) and 0 <= v <= 2 else f"{key} must be a number from 0 to 2"
    if name == "time_budget_ms":
        return None if _is_number(v) and 10 <= v <= 60_000 else f"{key} must be a number from 10 to 60000"
    if name == "max_document_mb":
        return None if _is_number(v) and 0.01 <= v <= 64 else f"{key} must be a number of MiB from 0.01 to 64"
    if name in ("cache_mb", "cache_sources_mb"):
        return None if _is_number(v) and 0 <= v <= 1 << 20 else f"{key} must be a number of MiB, 0 or more"
    if name == "type_confidence":
        return None if _is_number(v) and 0 <= v <= 1 else f"{key} must be a probability from 0 to 1"
    return None if isinstance(v, bool) else f"{key} must be true or false"


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


_FIELDS = {camel(f.name): f.name for f in fields(ServerOptions)}
DEFAULTS = ServerOptions()


def update_options(current: ServerOptions, raw: Any) -> tuple[ServerOptions, list[str]]:
    """`current` with the settings in `raw` applied, and the problems found (see the module rules)."""
    if raw is None:
        return current, []
    if isinstance(raw, dict) and isinstance(raw.get(SECTION), dict):
        raw = raw[SECTION]
    if not isinstance(raw, dict):
        return current, [f"settings must be a JSON object, got {type(raw).__name__}; using the defaults"]
    problems, changes = [], {}
    for key, value in raw.items():
        name = _FIELDS.get(key) or (key if key in _FIELDS.values() else None)
        if name is None:
            problems.append(f"unknown setting {key!r} (known: {', '.join(sorted(_FIELDS))})")
            continue
        if name in ("temperature", "time_budget_ms", "cache_mb", "cache_sources_mb", "type_confidence",
                    "max_document_mb") and _is_number(value):
            value = float(value)
        if name in ("context_sources", "hole_patterns") and isinstance(value, list):
            value = tuple(dict.fromkeys(value))
        if (why := _check(name, value)) is not None:
            problems.append(f"{why}, got {value!r}; using the default {getattr(DEFAULTS, name)!r}")
            value = getattr(DEFAULTS, name)
        changes[name] = value
    return replace(current, **changes), problems

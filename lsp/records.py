"""Acceptance records: the schema, written down once, and the one JSONL file per day that holds them.

The language server writes them (`lsp.acceptance` decides what happened); `infill report` reads them
(`lsp.report`); nothing else touches them, and nothing is ever sent anywhere (docs/lsp.md).

Rules:
- Off unless the user sets `telemetry: "local"`. The files live in `platformdirs`' user data
  directory (`~/.local/share/infill/records` on Linux), or in `telemetryDir`.
- One file per UTC day, `YYYY-MM-DD.jsonl`, named by the record's own time; append-only, one JSON
  object per line, each line written with one `write` of an `O_APPEND` file (two editors' servers
  may share the directory); directory 0700, files 0600.
- Every key of a record is a key of `FIELDS` (the writer checks); a record never holds code text
  unless `telemetryText` is on, and then only in the `text` field.
- Writing never raises into the server: a full disk or a read-only directory is reported once per
  directory (the server shows it to the user) and the record is dropped. Reading skips a line that
  is not a record of this schema (a crash mid-write, a hand edit) with a warning naming the file and
  the line.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

VERSION = 1
EVENTS = ("show", "accept", "reject", "retention")
ACCEPT_KINDS = ("full", "word", "line")
RETENTION_AFTER_S = (30, 120, 300)
"""When a kept suggestion is compared with the document again, in seconds after its acceptance."""

FIELDS: dict[str, str] = {
    "v": "schema version (1)",
    "time": "when the event happened, UTC, ISO 8601 with milliseconds (`2026-12-04T23:40:00.123Z`)",
    "event": "`show`, `accept`, `reject` or `retention`",
    "id": "the suggestion's id (the `id` of `infill/didShow`, `infill/didAccept`, `infill.accepted`)",
    "model": "the model's name (the checkpoint directory's name, or `openai:URL`)",
    "engine": "the engine's kind: `infill`, `hf`, `openai` or `openai#llama-infill` (`infill.engines.load.ENGINES`)",
    "language": "the document's language (`python`, `typescript`, ...)",
    "latencyMs": "request to suggestion, milliseconds",
    "ttftMs": "request to first generated token, milliseconds (null when no model ran)",
    "promptTokens": "tokens of the prompt",
    "cachedTokens": "prompt tokens served by the session KV cache",
    "contextTokens": "prompt tokens of repository context (null with context off)",
    "cacheModel": "whether the cache model (the n-gram mixture) was used (null when the engine does not say)",
    "typedThrough": "true when the suggestion was the rest of the previous one, with no model call",
    "length": "characters of the suggestion",
    "lines": "lines of the suggestion",
    "extends": "show: the id of the earlier suggestion this one continues (typed through or extended), else null",
    "kind": "accept: `full`, `word` or `line`",
    "acceptedLength": "accept, retention: characters of the suggestion accepted so far",
    "reason": "reject: `timeout` (neither accepted nor continued within 10 s), `client` or `closed`",
    "after": "retention: seconds since the acceptance (30, 120 or 300)",
    "similarity": "retention: 1 - Levenshtein distance / longer length, accepted text against the text now there",
    "text": "only with `telemetryText: true`: show, the suggestion; retention, the text now in its place",
}
_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})\.jsonl")


def default_dir() -> Path:
    """Where records go unless `telemetryDir` says otherwise."""
    import platformdirs

    return platformdirs.user_data_path("infill", appauthor=False) / "records"


def timestamp(t: float) -> str:
    """The `time` field of epoch seconds `t`."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    """The aware datetime of a `time` field (ValueError when it is not one)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def check(record: dict) -> str | None:
    """Why `record` is not a record of this schema, or None when it is."""
    if not isinstance(record, dict):
        return "not a JSON object"
    unknown = set(record) - set(FIELDS)
    if unknown:
        return f"unknown fields {sorted(unknown)}"
    if record.get("event") not in EVENTS:
        return f"event must be one of {', '.join(EVENTS)}"
    if not isinstance(record.get("id"), str) or not isinstance(record.get("time"), str):
        return "id and time must be strings"
    try:
        parse_time(record["time"])
    except ValueError:
        return f"time {record['time']!r} is not ISO 8601"
    return None


class RecordStore:
    """Appends records to the day's file of `directory` (see the module rules)."""

    def __init__(self, directory: Path | str, warn: Callable[[str], None] = log.warning):
        self.directory = Path(directory).expanduser()
        self.warn = warn
        """Told once, in one line, when records cannot be written (the server shows it to the user)."""
        self._failed = False

    def path_for(self, record: dict) -> Path:
        return self.directory / f"{record['time'][:10]}.jsonl"

    def append(self, record: dict) -> None:
        problem = check(record)
        assert problem is None, problem  # the server builds records from FIELDS only
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path_for(record), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                self.warn(f"acceptance records: cannot write to {self.directory} ({exc.strerror or exc}); "
                          "records are dropped")


def read_records(directory: Path | str, since: datetime | None = None,
                 warn: Callable[[str], None] = log.warning) -> Iterator[dict]:
    """The records of `directory` at or after `since`, oldest file first; bad lines are skipped with
    a `warn`ing. Only `YYYY-MM-DD.jsonl` files are read."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        return
    days = sorted((m.group(1), p) for p in directory.iterdir() if (m := _DAY.fullmatch(p.name)))
    for day, path in days:
        if since is not None and day < since.strftime("%Y-%m-%d"):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    warn(f"{path}:{n}: not JSON ({exc.msg}), skipped")
                    continue
                if (why := check(record)) is not None:
                    warn(f"{path}:{n}: not a record ({why}), skipped")
                    continue
                if since is None or parse_time(record["time"]) >= since:
                    yield record

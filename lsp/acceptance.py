"""What happened to each suggestion: shown, accepted (fully or in part), rejected, kept. The server
tells `Acceptance` what it offered, what the client reported and how the documents changed; it writes
`lsp.records` records.

Rules:
- A suggestion offered to the client gets an id; its inline completion item carries the id in its
  `command` (`infill.accepted`, see `command`). The client reports `infill/didShow`,
  `infill/didAccept` (full, word or line, with the accepted length) and `infill/didReject`; running
  the item's command is a full acceptance.
- Rejected by timeout (Continue's rule): shown, and neither accepted nor continued within
  `REJECT_AFTER_S`. Continued: a later suggestion of the same document, shown, that extends it: the
  user typed the first k characters of it (k >= 0) and the new one starts with the rest of it. A
  suggestion accepted after its timeout (within `FORGET_REJECTED_S`) is still recorded as accepted,
  and the report counts it as accepted.
- Retention: at 30 s, 2 min and 5 min after the first acceptance, the accepted text is compared with
  the text now at its place: the place is tracked through every didChange (an edit before it moves
  it, an edit inside it becomes part of it, text typed right after it is not part of it).
  similarity = 1 - Levenshtein distance / the longer length (rapidfuzz). A document closed before a
  check ends its checks (no record); a shown suggestion pending when its document closes is rejected
  with reason `closed`.
- Time comes from a `Clock` handed in, so the rules are tested without waiting; `sweep` applies the
  time rules and is called by the server once a second while anything is pending (and by tests
  after they move their clock).
- Only documents with a live suggestion are tracked: a copy of their text is kept in memory to map
  each change's range to offsets; nothing here writes code text unless `text` is on.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from lsp import positions
from lsp.completion import Edit
from lsp.records import ACCEPT_KINDS, RETENTION_AFTER_S, VERSION, RecordStore, timestamp

log = logging.getLogger(__name__)
FOLLOW_CHANGES = 100
"""A didChange with more edits than this is not followed edit by edit (see `Acceptance.changed`)."""

COMMAND = "infill.accepted"
REJECT_AFTER_S = 10.0
FORGET_OFFERED_S = 60.0
"""A suggestion offered but never shown is forgotten after this long."""
FORGET_REJECTED_S = 600.0
"""A rejected suggestion is kept this long after it was shown, so a late Tab is still an acceptance."""
MAX_LIVE = 512
"""Most suggestions kept at once (the oldest go first): a client that never reports costs nothing."""


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...


class SystemClock:
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)


@dataclass
class Suggestion:
    id: str
    uri: str
    start: int
    """Where the suggestion starts in the tracked document (moved by edits before it)."""
    text: str
    meta: dict
    offered_at: float
    state: str = "offered"
    """offered, shown, extended, rejected, accepted."""
    extends: str | None = None
    shown_at: float | None = None
    accepted: str = ""
    accepted_at: float | None = None
    end: int = 0
    """After acceptance: the end of the accepted text's place (its start is `start`)."""
    checks: list[int] = field(default_factory=list)


class Acceptance:
    """The suggestions alive and the documents they live in; writes to `store` (None: telemetry off)."""

    def __init__(self, clock: Clock | None = None):
        self.clock = clock or SystemClock()
        self.store: RecordStore | None = None
        self.text = False
        self.live: dict[str, Suggestion] = {}
        self.docs: dict[str, str] = {}

    def configure(self, store: RecordStore | None, text: bool) -> None:
        """Start (a store), stop (None) or redirect recording; stopping forgets everything pending."""
        self.store, self.text = store, text
        if store is None:
            self.live.clear()
            self.docs.clear()

    @property
    def pending(self) -> bool:
        return bool(self.live)

    # what the server offered -----------------------------------------------------------------------
    def offer(self, uri: str, text: str, edit: Edit, meta: dict) -> str | None:
        """A suggestion returned to the client for document `uri` (whose text is `text`): its id."""
        if self.store is None:
            return None
        if self.docs.get(uri) != text:
            self.docs[uri] = text
        new = Suggestion(uuid.uuid4().hex[:16], uri, edit.start, edit.text, meta, self.clock.monotonic())
        new.extends = next((s.id for s in reversed(self.live.values())
                            if s.uri == uri and s.state in ("offered", "shown") and _extends(s, new, text)), None)
        self.live[new.id] = new
        while len(self.live) > MAX_LIVE:
            self._drop(next(iter(self.live.values())))
        return new.id

    # what the client reported ----------------------------------------------------------------------
    def shown(self, id: str) -> None:
        s = self.live.get(id)
        if s is None or s.state != "offered":
            return
        s.state, s.shown_at = "shown", self.clock.monotonic()
        before = self.live.get(s.extends) if s.extends else None
        if before is not None and before.state in ("offered", "shown"):
            before.state = "extended"
            self._drop_if_done(before)
        self._write(s, "show", extends=s.extends, text=s.text if self.text else None)

    def accepted(self, id: str, kind: str = "full", length: int | None = None) -> None:
        s = self.live.get(id)
        if s is None or kind not in ACCEPT_KINDS:
            log.debug("acceptance of unknown suggestion %s (%s)", id, kind)
            return
        n = len(s.text) if kind == "full" or length is None else max(0, min(int(length), len(s.text)))
        if n <= len(s.accepted) and s.accepted_at is not None:
            return  # nothing new (a repeated command)
        if s.state == "offered":  # a client that never says didShow: accepting it showed it
            self.shown(id)
        elif s.state == "extended":
            return  # its continuation is the one on screen
        s.state, s.accepted = "accepted", s.text[:n]
        doc = self.docs.get(s.uri, "")
        if not doc.startswith(s.accepted, s.start):  # the place moved in a way we did not see: find it
            near = doc.find(s.accepted, max(0, s.start - len(s.text)))
            s.start = near if near >= 0 else s.start
        s.end = s.start + len(s.accepted)
        if s.accepted_at is None:
            s.accepted_at, s.checks = self.clock.monotonic(), list(RETENTION_AFTER_S)
        self._write(s, "accept", kind=kind, acceptedLength=n)

    def rejected(self, id: str, reason: str = "client") -> None:
        s = self.live.get(id)
        if s is not None and s.state in ("offered", "shown"):
            was_shown = s.state == "shown"
            s.state = "rejected"
            if was_shown:
                self._write(s, "reject", reason=reason)
            self._drop_if_done(s)

    # documents -------------------------------------------------------------------------------------
    def changed(self, uri: str, changes, final: str, encoding: str) -> None:
        """Follow didChange `changes` (lsprotocol content changes) of a tracked document whose text
        after them is `final`."""
        doc = self.docs.get(uri)
        if doc is None:
            return
        mine = [s for s in self.live.values() if s.uri == uri]
        if not mine or len(changes) > FOLLOW_CHANGES:
            # Nothing to follow, or a Replace All: following each edit is quadratic on a long line
            # (issue 28's deafness), so the suggestions keep their offsets in the new text.
            self.docs[uri] = final
            return
        for change in changes:
            rng = getattr(change, "range", None)
            if rng is not None:
                cs = positions.to_offset(doc, rng.start.line, rng.start.character, encoding)
                ce = max(cs, positions.to_offset(doc, rng.end.line, rng.end.character, encoding))
                new = change.text
            else:
                cs, ce, new = _difference(doc, change.text)
            doc = doc[:cs] + new + doc[ce:]
            for s in mine:
                _follow(s, cs, ce, len(new))
        if doc != final:  # a change we could not follow: start over from the server's text
            log.debug("acceptance: lost track of %s", uri)
            doc = final
        self.docs[uri] = doc

    def closed(self, uri: str) -> None:
        for s in [s for s in self.live.values() if s.uri == uri]:
            self.rejected(s.id, "closed")
            self._drop(s)
        self.docs.pop(uri, None)

    # time ------------------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Apply the time rules: reject what timed out, check retention that is due, forget the rest."""
        now = self.clock.monotonic()
        for s in list(self.live.values()):
            if s.state == "shown" and now - s.shown_at >= REJECT_AFTER_S:
                self.rejected(s.id, "timeout")
            elif s.state == "offered" and now - s.offered_at >= FORGET_OFFERED_S or \
                    s.state == "rejected" and now - (s.shown_at or s.offered_at) >= FORGET_REJECTED_S:
                self._drop(s)
            while s.state == "accepted" and s.checks and now - s.accepted_at >= s.checks[0]:
                self._retention(s, s.checks.pop(0))
            self._drop_if_done(s)

    def _retention(self, s: Suggestion, after: int) -> None:
        from rapidfuzz.distance import Levenshtein

        now_there = self.docs.get(s.uri, "")[s.start:s.end]
        similarity = Levenshtein.normalized_similarity(s.accepted, now_there)
        self._write(s, "retention", after=after, acceptedLength=len(s.accepted), similarity=round(similarity, 4),
                    text=now_there if self.text else None)

    # bookkeeping -----------------------------------------------------------------------------------
    def _drop_if_done(self, s: Suggestion) -> None:
        if s.state == "extended" or (s.state == "accepted" and not s.checks):
            self._drop(s)

    def _drop(self, s: Suggestion) -> None:
        self.live.pop(s.id, None)
        if not any(o.uri == s.uri for o in self.live.values()):
            self.docs.pop(s.uri, None)

    def _write(self, s: Suggestion, event: str, **fields) -> None:
        if self.store is None:
            return
        record = {"v": VERSION, "time": timestamp(self.clock.time()), "event": event, "id": s.id, **s.meta,
                  "length": len(s.text), "lines": s.text.count("\n") + 1}
        record.update((k, v) for k, v in fields.items() if v is not None or k == "extends")
        self.store.append(record)


def _extends(old: Suggestion, new: Suggestion, text: str) -> bool:
    """Whether `new` (offered on `text`) continues `old`: see the module rules."""
    k = new.start - old.start
    return 0 <= k <= len(old.text) and text.startswith(old.text[:k], old.start) \
        and new.text.startswith(old.text[k:])


def _follow(s: Suggestion, cs: int, ce: int, n: int) -> None:
    """Move `s`'s place for text[cs:ce] replaced by `n` characters (see the module rules)."""
    delta = n - (ce - cs)
    if s.accepted_at is None:  # before acceptance only its start matters; the acceptance inserts at it
        if ce < s.start or (ce == s.start and cs < s.start):
            s.start += delta
        elif cs < s.start:  # an edit across its start: it now starts where the edit ended
            s.start = cs + n
        return
    if ce <= s.start and not (cs == ce == s.start == s.end):
        s.start, s.end = s.start + delta, s.end + delta
    elif cs >= s.end:
        return
    else:  # an edit overlapping the accepted text becomes part of its place
        s.start, s.end = min(s.start, cs), (s.end + delta if ce <= s.end else cs + n)


def _difference(old: str, new: str) -> tuple[int, int, str]:
    """The one replacement old[cs:ce] -> new[cs:cs + len(new) - (len(old) - (ce - cs))] that turns
    `old` into `new` (common prefix and suffix, found by bisection so each step compares in C)."""
    lo, hi = 0, min(len(old), len(new))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if old[:mid] == new[:mid] else (lo, mid - 1)
    prefix = lo
    lo, hi = 0, min(len(old), len(new)) - prefix
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if old[len(old) - mid:] == new[len(new) - mid:] else (lo, mid - 1)
    return prefix, len(old) - lo, new[prefix:len(new) - lo]

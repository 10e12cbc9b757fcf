"""The records' store and the acceptance rules, in process with a clock the test moves (the same
flows through a real client are in test_records_e2e.py)."""
import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest
from lsprotocol import types

from lsp.acceptance import Acceptance, _difference
from lsp.completion import Edit
from lsp.records import FIELDS, RecordStore, read_records
from support import ManualClock

META = {"model": "m", "engine": "local", "language": "python", "latencyMs": 5.0}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "lsp.md"


def tracker(tmp_path, wall=datetime(2026, 12, 4, 12, tzinfo=timezone.utc).timestamp(), text=False):
    acc = Acceptance(ManualClock(wall))
    acc.configure(RecordStore(tmp_path / "rec"), text)
    return acc


def show(acc, text: str, uri: str = "file:///a.py") -> str:
    """Offer `text` at the start of an empty document `uri` and say it was shown: its id."""
    sid = acc.offer(uri, "", Edit(text, 0, 0), META)
    acc.shown(sid)
    return sid


def events(tmp_path) -> list[tuple[str, str]]:
    return [(r["event"], r["id"]) for r in read_records(tmp_path / "rec")]


def test_one_file_per_utc_day_private_to_the_user(tmp_path):
    acc = tracker(tmp_path, wall=datetime(2026, 12, 4, 23, 59, 55, tzinfo=timezone.utc).timestamp())
    sid = acc.offer("file:///a.py", "x = ", Edit("1", 4, 4), META)
    acc.shown(sid)
    acc.clock.advance(10)
    acc.sweep()  # the reject falls on the next day
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert files == ["2026-12-04.jsonl", "2026-12-05.jsonl"]
    assert [json.loads(line)["event"] for line in (tmp_path / "rec" / files[1]).read_text().splitlines()] == ["reject"]
    assert stat.S_IMODE(os.stat(tmp_path / "rec").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "rec" / files[0]).st_mode) == 0o600


def test_a_corrupted_line_is_skipped_with_a_warning(tmp_path):
    acc = tracker(tmp_path)
    sid = acc.offer("file:///a.py", "x = ", Edit("1", 4, 4), META)
    acc.shown(sid)
    [day] = (tmp_path / "rec").iterdir()
    with open(day, "a") as f:
        f.write('{"v":1,"time":"2026-12-04T12:00:01.000Z","event":"acc\n')  # a crash mid-write
    acc.accepted(sid)
    warnings = []
    assert [r["event"] for r in read_records(tmp_path / "rec", None, warnings.append)] == ["show", "accept"]
    assert warnings == [f"{day}:2: not JSON (Invalid control character at), skipped"]


def test_code_text_only_when_asked(tmp_path):
    secret = "password = 'hunter2'"
    for text in (False, True):
        show(tracker(tmp_path / str(text), text=text), secret)
        raw = b"".join(p.read_bytes() for p in (tmp_path / str(text) / "rec").iterdir())
        assert (b"hunter2" in raw) is text


def test_every_field_is_described_in_the_docs():
    docs = DOCS.read_text()
    assert [f for f in FIELDS if f"`{f}`" not in docs] == []


def test_an_unwritable_directory_drops_records_and_never_raises(tmp_path):
    (tmp_path / "file").write_text("")
    acc, told = Acceptance(ManualClock()), []
    acc.configure(RecordStore(tmp_path / "file" / "rec", told.append), False)
    show(acc, "x")
    show(acc, "y", "file:///b.py")
    assert told == [f"acceptance records: cannot write to {tmp_path / 'file' / 'rec'} (Not a directory); "
                    "records are dropped"]


def change(start, end, new):
    """A didChange content change of line 0."""
    return types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(0, start), types.Position(0, end)), text=new)


def test_the_accepted_text_is_followed_through_edits(tmp_path):
    acc = tracker(tmp_path)
    uri, doc = "file:///a.py", "y = f("
    sid = acc.offer(uri, doc, Edit("a, b)", 6, 6), META)
    acc.shown(sid)
    steps = [(6, 6, "a, b)"),  # the acceptance
             (0, 0, "zz"),  # before it: moves it
             (13, 13, " # ok"),  # right after it: not part of it
             (8, 10, "a,  ")]  # inside it: part of it
    for start, end, new in steps:
        doc = doc[:start] + new + doc[end:]
        acc.changed(uri, [change(start, end, new)], doc, "utf-16")
        if new == "a, b)":
            acc.accepted(sid)
    acc.clock.advance(30)
    acc.sweep()
    [*_, kept] = read_records(tmp_path / "rec")
    assert doc == "zzy = f(a,   b) # ok"
    assert kept["after"] == 30 and kept["similarity"] == pytest.approx(1 - 2 / 7, abs=1e-4)  # "a, b)" vs "a,   b)"


def test_a_full_text_change_is_followed_too(tmp_path):
    assert _difference("abcdef", "abXYef") == (2, 4, "XY")
    assert _difference("aaaa", "aaaaa") == (4, 4, "a")
    assert _difference("", "new") == (0, 0, "new")


def test_closing_a_document_rejects_what_is_shown_and_ends_retention(tmp_path):
    acc = tracker(tmp_path)
    show(acc, "x")
    kept = acc.offer("file:///a.py", "", Edit("zz", 0, 0), META)
    acc.accepted(kept)
    acc.closed("file:///a.py")
    acc.clock.advance(400)
    acc.sweep()
    assert [e for e, _ in events(tmp_path)] == ["show", "show", "accept", "reject"]
    assert not acc.pending and not acc.docs


def test_a_suggestion_accepted_late_and_again_is_recorded_once_per_step(tmp_path):
    acc = tracker(tmp_path)
    sid = show(acc, "hello world")
    acc.accepted(sid, "word", 6)
    acc.accepted(sid, "word", 6)  # nothing new
    acc.accepted(sid, "full")
    acc.accepted(sid, "full")  # the command after a didAccept full
    assert [(r["event"], r.get("kind"), r.get("acceptedLength")) for r in read_records(tmp_path / "rec")] == [
        ("show", None, None), ("accept", "word", 6), ("accept", "full", 11)]


def test_a_tab_after_the_timeout_is_still_an_acceptance(tmp_path):
    acc = tracker(tmp_path)
    late, gone = show(acc, "late"), show(acc, "gone", "file:///b.py")
    acc.clock.advance(15)
    acc.sweep()
    acc.accepted(late)  # the ghost text stayed on screen while the user thought
    acc.clock.advance(600)
    acc.sweep()
    acc.accepted(gone)  # too late: forgotten
    assert [(e, i) for e, i in events(tmp_path) if e != "retention"] == [
        ("show", late), ("show", gone), ("reject", late), ("reject", gone), ("accept", late)]

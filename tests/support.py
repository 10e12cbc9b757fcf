"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""
import queue
import sysconfig
import time
from pathlib import Path

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def stdlib_texts(limit: int = 40) -> list[str]:
    """Source of the first `limit` top-level standard-library modules (a local, PSF-licensed corpus)."""
    files = sorted(STDLIB.glob("*.py"))[:limit]
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


def require_sandbox() -> None:
    """Skip a test that needs the evaluation sandbox where the machine cannot give it, except under CI
    (CI=true): there a missing sandbox (no bwrap, no cgroup) fails the test instead of hiding."""
    import os

    import pytest

    from infill.evaluate.sandbox import protections

    prot = protections()
    if prot["mode"] != "sandbox":
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the evaluation sandbox: {prot['reason']}")
        pytest.skip(f"no evaluation sandbox here: {prot['reason']}")


def leftover(tag: str) -> list[int]:
    """Host pids whose command line carries `tag` (what a sandbox run must not leave behind)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if tag.encode() in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
            except OSError:
                pass
    return found


SCALE_DOC = '''\
def scale(values, factor=2):
    result = []
    for v in values:
        result.append(v * factor)
    return result


def other(result):
    return result.count(0)
'''
"""A small Python document with type slots, a renameable local and a second function (LSP tests)."""


def wait_response(inbox, msg_id, timeout=60):
    """The JSON-RPC response to `msg_id` from a queue of decoded messages (notifications skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        if msg.get("id") == msg_id and "method" not in msg:
            return msg
    raise AssertionError(f"no response to {msg_id}")


class ManualClock:
    """A clock for `lsp.acceptance` that moves only when a test says so (no test waits for time)."""

    def __init__(self, wall: float = 1_790_000_000.0):
        self.mono, self.wall = 1000.0, wall

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

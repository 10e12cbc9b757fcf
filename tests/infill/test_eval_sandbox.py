"""The sandbox: verdicts, limits, and a malicious program that must change nothing outside it."""
import os
import time
import uuid
from pathlib import Path

import pytest

from infill.evaluate.sandbox import SandboxConfig, protections, run_program

FAST = SandboxConfig(timeout_s=2.0)


def leftover(tag: str) -> list[int]:
    """Pids whose command line carries `tag`."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if tag.encode() in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("source, status", [
    ("import math\nassert math.gcd(12, 18) == 6\n", "passed"),
    ("assert 1 == 2\n", "failed"),
    ("raise SystemExit(3)\n", "failed"),
    ("def f(:\n", "failed"),
    ("while True:\n    pass\n", "timeout"),
])
def test_verdicts(source, status):
    assert run_program(source, FAST).status == status


def test_failure_detail_is_the_last_stderr_line():
    result = run_program("raise KeyError('zz')\n", FAST)
    assert result.status == "failed" and result.detail == "KeyError: 'zz'"


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("INFILL_SECRET_TOKEN", "hunter2")
    src = "import os, sys\nassert 'INFILL_SECRET_TOKEN' not in os.environ, os.environ\nassert sys.flags.isolated\n"
    assert run_program(src, FAST).passed


def test_memory_limit():
    result = run_program("x = bytearray(3 * 2**30)\n", SandboxConfig(timeout_s=2.0, memory_mb=256))
    assert result.status == "failed" and "MemoryError" in result.detail


def test_file_size_limit():
    src = "f = open('big', 'wb')\nf.write(b'x' * (4 * 2**20))\nf.flush()\n"
    assert run_program(src, SandboxConfig(timeout_s=2.0, file_mb=1)).status == "failed"


def test_timeout_is_wall_clock_and_bounded():
    started = time.monotonic()
    result = run_program("import time\ntime.sleep(60)\n", SandboxConfig(timeout_s=1.0))
    assert result.status == "timeout" and time.monotonic() - started < 6


@pytest.mark.skipif(protections()["mode"] != "namespaces", reason="needs Linux namespaces (unshare)")
def test_no_network():
    src = ("import socket\ns = socket.socket()\ns.settimeout(1)\n"
           "try:\n    s.connect(('1.1.1.1', 80))\nexcept OSError:\n    raise SystemExit(0)\nraise SystemExit(1)\n")
    assert run_program(src, FAST).passed


def test_malicious_program_changes_nothing(tmp_path, monkeypatch):
    """Fork bomb, a setsid'd infinite loop, writes to $HOME and elsewhere, signals to the harness."""
    home = tmp_path / "home"
    home.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setenv("HOME", str(home))
    tag = f"infill-test-{uuid.uuid4().hex}"
    harness = os.getpid()
    src = f"""
import os, signal, pathlib
for target in [{str(home / 'pwned')!r}, {str(outside / 'pwned')!r}, os.path.expanduser('~/pwned'),
               os.path.join({str(home)!r}, '.bashrc')]:
    try:
        pathlib.Path(target).write_text('x')
    except Exception:
        pass
for pid, sig in (({harness}, signal.SIGKILL), (os.getppid(), signal.SIGKILL), (-1, signal.SIGKILL)):
    try:
        os.kill(pid, sig)
    except Exception:
        pass
try:
    if os.fork() == 0:
        os.setsid()
        while True:
            pass
except Exception:
    pass
try:
    while True:
        os.fork()
except Exception:
    pass
while True:
    pass
"""
    started = time.monotonic()
    result = run_program(src, SandboxConfig(timeout_s=2.0), tag=tag)
    assert result.status in ("timeout", "failed")
    assert time.monotonic() - started < 10
    assert list(home.iterdir()) == [] and list(outside.iterdir()) == []
    time.sleep(0.2)
    assert leftover(tag) == []
    assert run_program("pass\n", FAST).passed  # the harness and the sandbox still work


def test_user_process_count_is_plausible():
    from infill.evaluate import sandbox

    assert 1 <= sandbox._user_processes() < 100_000


def test_protections_are_reported():
    p = protections()
    assert p["mode"] in ("namespaces", "fallback") and p["timeout"] and p["scrubbed_env"]
    assert p["in_process_guard"] == (p["mode"] == "fallback")


def test_fallback_mode_guards_writes_signals_and_forks(tmp_path, monkeypatch):
    """Without namespaces: host temp dir, in-process guard; nothing outside changes, nothing is left."""
    from infill.evaluate import sandbox

    fallback = {**protections(), "mode": "fallback", "runs_as_nobody": False, "in_process_guard": True}
    monkeypatch.setattr(sandbox, "protections", lambda: fallback)
    target = tmp_path / "pwned"
    assert run_program("open('inside.txt', 'w').write('ok')\nassert open('inside.txt').read() == 'ok'\n", FAST).passed
    for src in (f"open({str(target)!r}, 'w')\n", "import os\nos.kill(os.getppid(), 9)\n", "import os\nos.fork()\n",
                "import subprocess\nsubprocess.run(['true'])\n"):
        result = run_program(src, FAST)
        assert result.status == "failed" and "sandbox" in result.detail, (src, result)
    assert not target.exists()
    assert run_program("while True:\n    pass\n", SandboxConfig(timeout_s=1.0)).status == "timeout"

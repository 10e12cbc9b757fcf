"""The sandbox: verdicts, limits, clean-up, and a malicious program that must change nothing outside it.
(The hostile-sample suite is tests/infill/test_eval_hostile.py.)"""
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import leftover, require_sandbox

from infill.evaluate import cgroups
from infill.evaluate.sandbox import SandboxConfig, protections, run_program

FAST = SandboxConfig(timeout_s=2.0)


@pytest.fixture(autouse=True)
def _sandboxed(request):
    if request.node.originalname != "test_bad_limits_are_value_errors":
        require_sandbox()


@pytest.mark.parametrize("source, status", [
    ("import math\nassert math.gcd(12, 18) == 6\n", "passed"),
    ("from collections import namedtuple\nimport typing, re, fractions, heapq, statistics, random, hashlib\n"
     "P = namedtuple('P', 'x y')\nassert P(1, 2).y == 2\n", "passed"),
    ("assert 1 == 2\n", "failed"),
    ("raise SystemExit(3)\n", "failed"),
    ("raise SystemExit(0)\n", "failed"),
    ("import os\nos._exit(0)\n", "failed"),
    ("def f(:\n", "failed"),
    ("while True:\n    pass\n", "timeout"),
])
def test_verdicts(source, status):
    assert run_program(source, FAST).status == status


def test_failure_detail_is_the_exception():
    result = run_program("raise KeyError('zz')\n", FAST)
    assert result.status == "failed" and result.detail == "KeyError: 'zz'"


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("INFILL_SECRET_TOKEN", "hunter2")
    src = ("import os, sys\nassert 'INFILL_SECRET_TOKEN' not in os.environ, os.environ\nassert sys.flags.isolated\n"
           "assert os.getuid() == 65534 or os.geteuid() != 0\n")
    assert run_program(src, FAST).passed


def test_memory_limit():
    result = run_program("x = bytearray(3 * 2**30)\n", SandboxConfig(timeout_s=2.0, memory_mb=256))
    assert result.status == "failed" and "MemoryError" in result.detail


def test_file_size_limit():
    src = "f = open('big', 'wb')\nf.write(b'x' * (4 * 2**20))\nf.flush()\n"
    assert run_program(src, SandboxConfig(timeout_s=2.0, file_mb=1)).status == "failed"
    assert run_program(src.replace("(4 * 2**20)", "2**18"), SandboxConfig(timeout_s=2.0, file_mb=1)).passed


def test_process_limit_is_per_sample():
    src = ("import os, time\nn = 0\ntry:\n    for _ in range(64):\n        if os.fork() == 0:\n"
           "            time.sleep(3); os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nassert n < 8, n\n")
    assert run_program(src, SandboxConfig(timeout_s=10, pids=8)).passed


def test_timeout_is_wall_clock_and_bounded():
    started = time.monotonic()
    result = run_program("import time\ntime.sleep(60)\n", SandboxConfig(timeout_s=1.0))
    assert result.status == "timeout" and time.monotonic() - started < 30


def test_parallel_runs_keep_their_own_verdicts():
    programs = ["pass\n" if i % 2 else "assert False\n" for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: run_program(p, FAST), programs))
    assert [r.passed for r in results] == [bool(i % 2) for i in range(8)]


def test_cgroups_are_removed_after_the_run(monkeypatch):
    made = []
    init = cgroups.SampleCgroup.__init__

    def recording_init(self, *args):
        init(self, *args)
        made.append(list(self.dirs))

    monkeypatch.setattr(cgroups.SampleCgroup, "__init__", recording_init)
    run_program("import os\nif os.fork() == 0:\n    import time; time.sleep(30)\n", FAST)
    assert len(made) == 1 and len(made[0]) == len(cgroups.cgroup_root().dirs)
    assert all(not os.path.exists(d) for d in made[0])


def test_malicious_program_changes_nothing(tmp_path, monkeypatch):
    """Fork bomb, a setsid'd infinite loop, writes to $HOME and elsewhere, signals to the harness."""
    home = tmp_path / "home"
    home.mkdir(mode=0o777)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o777)
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
    assert time.monotonic() - started < 60
    assert list(home.iterdir()) == [] and list(outside.iterdir()) == []
    deadline = time.monotonic() + 30
    while leftover(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftover(tag) == []
    assert run_program("pass\n", FAST).passed  # the harness and the sandbox still work


def test_protections_are_reported():
    p = protections()
    assert p["mode"] == "sandbox" and p["reason"] == "" and p["cgroup"] in ("v1", "v2")
    assert p["read_only_fs"] and p["private_proc"] and p["secret_verdict"]


@pytest.mark.parametrize("kwargs", [{"timeout_s": 0}, {"memory_mb": 10}, {"file_mb": 0}, {"pids": 4}])
def test_bad_limits_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        SandboxConfig(**kwargs)


CWD_FLIP = '''
import os, threading, time
os.makedirs("/tmp/proc/self", exist_ok=True)
with open("/tmp/proc/self/maps", "w") as f:
    f.write("decoy")
os.chdir("/tmp")
done = []

def flip():
    while not done:
        os.chdir("/")
        os.chdir("/tmp")

threading.Thread(target=flip, daemon=True).start()
opened, deadline = 0, time.monotonic() + 6
while not opened and time.monotonic() < deadline:
    try:
        with open("proc/self/maps") as f:
            opened += "decoy" not in f.read(200)
    except Exception:
        pass
done.append(1)
if not opened:
    raise SystemExit("the real /proc/self/maps was never opened")
'''


def test_flipping_the_working_directory_never_opens_proc():
    """The audit hook checks a path with `stat`, then Python opens it: a thread flipping the working
    directory between `/tmp` (where `proc/self/maps` is a decoy) and `/` opened the real
    `/proc/self/maps` 4 times in the review. The program passes only if it opens it once."""
    require_sandbox()
    result = run_program(CWD_FLIP, SandboxConfig(timeout_s=15.0))
    assert not result.passed, result
    assert run_program("import os\nos.listdir('/tmp')\n", SandboxConfig(timeout_s=15.0)).passed

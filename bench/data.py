"""Benchmark of `infill data build`: MB/s per worker, share of time per stage, dedup memory.

    python bench/data.py --json [--mb 20] [--workers 1 2]

The corpus is a slice of the running interpreter's standard library (the first `--mb` MB of its
files in sorted order), so the numbers are reproducible on any machine with the same Python.
- `build`: wall time of the whole pipeline (discovery, workers, dedup, shards, report) for each
  worker count; MB/s counts input bytes. Also the CPU seconds of the main process and of the
  workers, and MB per CPU-second: on a shared machine wall-clock MB/s depends on the load
  (reported too), CPU time much less.
- `stages`: every stage run alone, one after the other, over the materialised slice in one process;
  the share is of the sum of stage times (discovery and shard writing excluded).
- `dedup_bytes_per_kept_file`: memory held by the dedup index per kept file (tracemalloc), the
  figure behind the memory bound stated in docs/data.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train.data.config import DataConfig  # noqa: E402
from train.data.dedup import Deduplicator, deduplicate  # noqa: E402
from train.data.harvest import Source, discover, stdlib_source  # noqa: E402
from train.data.pipeline import GLOBAL_STAGES, MAP_STAGES, build  # noqa: E402


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


def bench_build(source: Source, config: DataConfig, workers: int) -> dict:
    n_bytes = sum(os.path.getsize(f) for f, _, _ in source.files)
    cpu = lambda who: sum(resource.getrusage(who)[:2])  # noqa: E731  user + system seconds
    with tempfile.TemporaryDirectory() as out:
        self0, children0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        report = build([source], out, config, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        main_cpu = cpu(resource.RUSAGE_SELF) - self0
        worker_cpu = cpu(resource.RUSAGE_CHILDREN) - children0  # pool workers, reaped on exit
    mb = n_bytes / 1e6
    return {"seconds": round(seconds, 2), "mb_per_s": round(mb / seconds, 2),
            "mb_per_s_per_worker": round(mb / seconds / workers, 2),
            # CPU time is what a busy machine cannot distort: MB per CPU-second of all processes
            "cpu_s_main": round(main_cpu, 2), "cpu_s_workers": round(worker_cpu, 2),
            "mb_per_cpu_s": round(mb / (main_cpu + worker_cpu), 2),
            # per-file stages per worker CPU-second, and the ceiling set by the main process
            # (discovery, dedup, shard writing), which does not parallelise
            "worker_mb_per_cpu_s": round(mb / worker_cpu, 2) if worker_cpu > 0 else None,
            "main_mb_per_cpu_s": round(mb / main_cpu, 2) if workers > 1 else None,
            "load_avg_1min": round(os.getloadavg()[0], 2),
            "files_kept": report["totals"]["files_kept"]}


def bench_stages(source: Source, config: DataConfig) -> dict:
    records = list(discover([source], config))
    seconds = {}
    for stage in MAP_STAGES + GLOBAL_STAGES:
        start = time.perf_counter()
        records = list(stage(records, config))
        seconds[stage.__name__] = time.perf_counter() - start
    total = sum(seconds.values())
    return {"seconds": {k: round(v, 3) for k, v in seconds.items()},
            "share": {k: round(v / total, 3) for k, v in seconds.items()},
            "records": records}


def bench_dedup_memory(fingerprinted: list[dict], config: DataConfig) -> float:
    live = [{k: v for k, v in r.items() if k != "removed"} for r in fingerprinted
            if "_minhash" in r]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    state = Deduplicator(config)
    kept = sum("removed" not in r for r in deduplicate(live, config, state))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del state
    return held / max(kept, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--mb", type=float, default=30.0, help="MB of the standard library")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    config = DataConfig()
    source = stdlib_slice(args.mb, config)
    n_bytes = sum(os.path.getsize(f) for f, _, _ in source.files)
    result = {"python": sys.version.split()[0], "cpu_count": os.cpu_count(),
              "input_mb": round(n_bytes / 1e6, 1), "files": len(source.files), "build": {}}
    for workers in args.workers:
        result["build"][str(workers)] = bench_build(source, config, workers)
    stages = bench_stages(source, config)
    records = stages.pop("records")
    result["stages"] = stages
    # Fingerprints survive to the end of the stage run on kept records only; recompute the
    # index from the fingerprint stage's output for the memory figure.
    from train.data.dedup import fingerprint

    kept_before_dedup = list(fingerprint(({k: v for k, v in r.items() if not k.startswith("_")}
                                          for r in records if "removed" not in r), config))
    result["dedup_bytes_per_kept_file"] = round(bench_dedup_memory(kept_before_dedup, config))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for workers, b in result["build"].items():
            print(f"{workers} worker(s): {b['mb_per_s']} MB/s ({b['mb_per_s_per_worker']} per worker), "
                  f"{b['mb_per_cpu_s']} MB per CPU-second, load {b['load_avg_1min']}")
        for name, share in stages["share"].items():
            print(f"  {name:18s} {share:6.1%}")
        print(f"dedup index: {result['dedup_bytes_per_kept_file']} bytes per kept file")
    return 0


if __name__ == "__main__":
    sys.exit(main())

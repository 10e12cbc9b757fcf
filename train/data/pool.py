"""Pipeline: chain the stages over a stream of files, in parallel, into shards and a report.

    discover --> [harvest -> licenses -> filter -> redact -> decontaminate -> fingerprint] --> dedup -> split -> shards
    (1 process)   per-file stages, `workers` processes, in order                               (1 process)

Every stage is a plain function `stage(records, config) -> records` over iterators of dict records
(see `records`), so the same functions run unchanged in one process (`run_stages`), in a
multiprocessing pool (`build --workers N`), or in a distributed engine (docs/data.md). The
per-file stages keep no state across files (caches aside), so they run anywhere in any order; the
dedup stage keeps global state and sees the stream in source order, which makes the output
deterministic for a given set of sources, whatever the number of workers.

Rule order differs from the issue's numbering in one place: redaction and decontamination run per
file before dedup (so their cost is parallel, and files that differ only in a redacted email
become exact duplicates). A file breaking several rules is counted under the first it meets.

Memory bound: at most `2 * workers` chunks of at most `CHUNK_FILES` files / `CHUNK_BYTES` bytes
are in flight, each file at most `max_file_bytes`; the rest of the corpus is on disk. What grows
with the corpus is only the dedup index (about 8 KB per kept file, see `dedup`) and the report's
per-package counters.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from tqdm import tqdm

from infill.corpus import package_key
from train.data.config import DataConfig
from train.data.decontaminate import decontaminate
from train.data.dedup import Deduplicator, deduplicate, fingerprint
from train.data.filters import filter_quality
from train.data.harvest import Source, discover, harvest
from train.data.licenses import LicenseFinder, filter_licenses
from train.data.records import Record
from train.data.redact import redact
from train.data.report import Report, write_report
from train.data.shards import ShardWriter, shard_paths
from train.data.split import assign_split

Stage = Callable[[Iterable[Record], DataConfig], Iterator[Record]]

# Per-file stages, in order; each runs in the workers.
MAP_STAGES: tuple[Stage, ...] = (harvest, filter_licenses, filter_quality, redact, decontaminate,
                                 fingerprint)
# Stages that need the whole stream in order; they run in the main process.
GLOBAL_STAGES: tuple[Stage, ...] = (deduplicate, assign_split)

CHUNK_FILES = 64
CHUNK_BYTES = 4_000_000


def run_stages(records: Iterable[Record], config: DataConfig,
               stages: Iterable[Stage] = MAP_STAGES + GLOBAL_STAGES) -> Iterator[Record]:
    """Chain `stages` lazily over `records` in this process."""
    for stage in stages:
        records = stage(records, config)
    return iter(records)


# Worker-process state, set once by `_init_worker`.
_worker_config: DataConfig | None = None
_worker_finder: LicenseFinder | None = None


def _init_worker(config: DataConfig) -> None:
    global _worker_config, _worker_finder
    _worker_config, _worker_finder = config, LicenseFinder()


def _map_chunk(chunk: list[Record], config: DataConfig | None = None,
               finder: LicenseFinder | None = None) -> list[Record]:
    config = config or _worker_config
    finder = finder or _worker_finder
    records: Iterable[Record] = chunk
    for stage in MAP_STAGES:
        if stage is filter_licenses:
            records = filter_licenses(records, config, finder)
        else:
            records = stage(records, config)
    return list(records)


def _chunks(records: Iterable[Record]) -> Iterator[list[Record]]:
    chunk, size = [], 0
    for record in records:
        chunk.append(record)
        size += min(record.get("bytes", 0), CHUNK_BYTES)
        if len(chunk) >= CHUNK_FILES or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def map_parallel(records: Iterable[Record], config: DataConfig, workers: int) -> Iterator[Record]:
    """`MAP_STAGES` over `records` with `workers` processes, output in input order.

    At most 2 * workers chunks are in flight, so memory stays bounded however fast the
    input is and however slow the consumer."""
    if workers <= 1:
        finder = LicenseFinder()
        for chunk in _chunks(records):
            yield from _map_chunk(chunk, config, finder)
        return
    with mp.get_context().Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
        pending: deque = deque()
        for chunk in _chunks(records):
            pending.append(pool.apply_async(_map_chunk, (chunk,)))
            while len(pending) >= 2 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


def _prepare_out(out_dir: str, overwrite: bool) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output directory {out_dir!r}: {e.strerror}") from e
    if not os.access(out_dir, os.W_OK):
        raise ValueError(f"output directory {out_dir!r} is not writable")
    old = shard_paths(out_dir) + [os.path.join(out_dir, f) for f in
                                  ("report.json", "report.md", "report.png")
                                  if os.path.exists(os.path.join(out_dir, f))]
    if old and not overwrite:
        raise ValueError(f"output directory {out_dir!r} already holds a corpus; pass --overwrite")
    for path in old:
        os.remove(path)


def build(sources: list[Source], out_dir: str, config: DataConfig, *, workers: int = 1,
          progress: bool = True, overwrite: bool = False) -> dict:
    """Run the whole pipeline over `sources` into `out_dir`; return the report's dict. Sources named in
    `config.exclude_packages` (by default the evaluations' held-out package) are dropped first.

    Raises `ValueError` for an unusable output directory or held-out path."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    missing = [p for p in config.held_out if not os.path.exists(p)]
    if missing:
        raise ValueError(f"held-out path {missing[0]!r} does not exist")
    _prepare_out(out_dir, overwrite)
    start = time.perf_counter()
    sources = [s for s in sources if package_key(s.name) not in config.exclude_packages]
    # A first, stat-only pass sizes the progress bar without holding the file list.
    total = sum(r["bytes"] for r in discover(sources, config))
    report = Report()
    dedup_state = Deduplicator(config)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="infill data build", file=sys.stderr,
               disable=not progress, smoothing=0.05)
    with ShardWriter(out_dir, config.shard_bytes) as writer:
        mapped = map_parallel(discover(sources, config), config, workers)
        kept = assign_split(deduplicate(mapped, config, dedup_state), config)
        for record in kept:
            report.add(record)
            if "removed" not in record:
                writer.write(record)
            bar.update(record.get("bytes", 0))
    bar.close()
    data = report.to_dict(
        sources=[f"{s.name} {s.version}".strip() for s in sources],
        config=config.to_dict(), workers=workers,
        elapsed_s=round(time.perf_counter() - start, 2), shards=writer.shards)
    write_report(data, out_dir)
    return data

"""Reference for bench/data.py: `infill data build` as it ran before datatrove (pool_ref).

The per-file stages in a `multiprocessing` pool (`map_parallel`), then exact and near dedup in the
main process over the stream in order (`deduplicate`: SHA-256 digests and a datasketch MinHash LSH
of 256-permutation signatures, candidates confirmed by their estimated Jaccard similarity), then
the split and one `ShardWriter`. It measured slower than datatrove's local executor
(docs/data.md, "Performance and memory"), so `train/data/pipeline.py` runs on datatrove only;
this copy is kept so the benchmark compares both in one run, and is used by nothing else.
The per-file stages themselves are the library's, imported, not copied.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

import numpy as np
from datasketch import LeanMinHash, MinHashLSH
from tqdm import tqdm

from infill.corpus import package_key
from train.data.config import DataConfig
from train.data.decontaminate import decontaminate
from train.data.dedup import normalise_whitespace
from train.data.filters import filter_quality
from train.data.harvest import Source, discover, harvest
from train.data.licenses import LicenseFinder, filter_licenses
from train.data.records import Record, drop
from train.data.redact import redact
from train.data.report import Report, write_report
from train.data.shards import ShardWriter
from train.data.split import assign_split
from train.data.words import words

_SCHEME = "affine32"  # uint32 hash values: the LSH index only reads them, band by band
_BATCH = 1024  # shingles per numpy batch: a (batch, num_perm) buffer of 1 MiB stays in cache


def exact_hash(text: str) -> str:
    """Hex SHA-256 of the whitespace-normalised text."""
    return hashlib.sha256(normalise_whitespace(text).encode("utf-8")).hexdigest()


def _fmix32(h: np.ndarray) -> np.ndarray:
    # MurmurHash3's finaliser: spreads CRC-32 values before the affine permutations.
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def shingle_hashes(text: str, size: int) -> np.ndarray:
    """Distinct uint32 hashes of the runs of `size` consecutive words (a shorter file is one
    shingle). Each word is CRC-32 hashed once; a shingle's hash is a polynomial of its words'."""
    tokens = words(text)
    table = {w: zlib.crc32(w.encode("utf-8")) for w in set(tokens)}
    ids = np.fromiter(map(table.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
    if len(ids) == 0:
        return np.zeros(1, dtype=np.uint32)
    if len(ids) <= size:
        ids = np.concatenate([ids, np.zeros(size - len(ids), dtype=np.uint64)])
    n = len(ids) - size + 1
    h = np.zeros(n, dtype=np.uint64)
    for k in range(size):
        h = h * np.uint64(0x100000001B3) + ids[k:k + n]  # wraps mod 2**64, as intended
    return np.unique(_fmix32((h ^ (h >> np.uint64(32))).astype(np.uint32)))


@lru_cache(maxsize=4)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint64).astype(np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def minhash(text: str, config: DataConfig) -> np.ndarray:
    """MinHash signature (uint32, `config.num_perm` values) of the text's word shingles.

    Permutation i is h -> a_i * h + b_i mod 2**32 with odd a_i (a bijection), applied to all
    shingle hashes at once in numpy, in batches that bound the (batch, num_perm) temporary."""
    a, b = _permutations(config.num_perm, config.seed)
    hashes = shingle_hashes(text, config.shingle_size)
    sig = np.full(config.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
    buf = np.empty((min(_BATCH, len(hashes)), config.num_perm), dtype=np.uint32)
    for start in range(0, len(hashes), _BATCH):
        block = buf[: len(hashes[start:start + _BATCH])]
        np.multiply(hashes[start:start + _BATCH, None], a[None, :], out=block)
        block += b
        np.minimum(sig, block.min(axis=0), out=sig)
    return sig


def fingerprint(records: Iterable[Record], config: DataConfig) -> Iterator[Record]:
    """Attach `_sha256` and `_minhash` (signature bytes) to each kept file, for `deduplicate`."""
    for record in records:
        if "removed" in record:
            yield record
            continue
        yield {**record, "_sha256": exact_hash(record["text"]),
               "_minhash": minhash(record["text"], config).tobytes()}


def _band_key(data: bytes) -> bytes:
    # LSH buckets keyed by an 8-byte digest of each band instead of the band itself.
    return hashlib.blake2b(data, digest_size=8).digest()


class Deduplicator:
    """The state of `deduplicate`: digests, an LSH index and the kept signatures."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self.seen: set[bytes] = set()
        self.lsh = MinHashLSH(threshold=config.near_threshold, num_perm=config.num_perm,
                              hashfunc=_band_key)
        self.signatures: list[np.ndarray] = []

    def rule(self, record: Record) -> str | None:
        """"dedup.exact" / "dedup.near" when `record` duplicates a kept file, else None (and
        `record` joins the kept set)."""
        digest = bytes.fromhex(record.get("_sha256") or exact_hash(record["text"]))
        if digest in self.seen:
            return "dedup.exact"
        raw = record.get("_minhash")
        sig = (np.frombuffer(raw, dtype=np.uint32) if raw is not None
               else minhash(record["text"], self.config))
        # LeanMinHash: the LSH index reads only the hash values; a full MinHash would rebuild
        # its permutation table (about 1 ms) for every file.
        m = LeanMinHash(seed=self.config.seed, hashvalues=sig.astype(np.uint64), scheme=_SCHEME)
        for key in self.lsh.query(m):
            if np.count_nonzero(self.signatures[key] == sig) / sig.size >= self.config.near_threshold:
                return "dedup.near"
        self.seen.add(digest)
        self.lsh.insert(len(self.signatures), m, check_duplication=False)
        self.signatures.append(sig)
        return None


def deduplicate(records: Iterable[Record], config: DataConfig,
                state: Deduplicator | None = None) -> Iterator[Record]:
    """Drop exact and near duplicates of earlier kept files (stage 4).

    Rules: [dedup.exact] same SHA-256 of whitespace-normalised text as a kept file;
    [dedup.near] a kept file among the LSH candidates has estimated Jaccard similarity of
    5-word shingles >= `config.near_threshold` (0.7). The first file of a cluster in stream
    order wins, so the result is deterministic for a fixed source order.
    """
    state = state or Deduplicator(config)
    for record in records:
        if "removed" in record:
            yield record
            continue
        rule = state.rule(record)
        yield record if rule is None else drop(record, rule)



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
    os.makedirs(out_dir, exist_ok=True)  # the benchmark builds into a new directory
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

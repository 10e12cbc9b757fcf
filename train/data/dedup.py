"""Dedup: keep one file of each exact or near-duplicate cluster (stage 4).

Two halves, so the expensive part parallelises:
- `fingerprint` (per file, runs in the workers): SHA-256 of the whitespace-normalised text, and a
  MinHash of its 5-word shingles (256 permutations, computed in numpy: see `minhash`).
- `deduplicate` (global, runs in one process over the stream in a fixed order): candidates from
  `datasketch.MinHashLSH` (bands and rows chosen by datasketch for the threshold), confirmed by
  the estimated Jaccard similarity of the signatures; the first file of a cluster is kept, every
  later one is dropped.

Memory bound: `deduplicate` holds, per *kept* file, a 32-byte digest, the 1 KiB signature and the
LSH buckets (one entry in each of the b bands datasketch picks, 25 for 0.7 and 256 permutations):
about 8 KB per kept file measured by `bench/data.py`, never the text. A million kept files need
about 8 GB, whatever their total size. Past that, dedup per language or per source family, or use
an LSH with external storage (datasketch's Redis backend, or datatrove's multi-machine MinHash
dedup; see docs/data.md).
"""
from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from functools import lru_cache

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from train.data.config import DataConfig
from train.data.records import Record, drop
from train.data.words import words

_SCHEME = "affine32"  # uint32 hash values: the LSH index only reads them, band by band
_BATCH = 1024  # shingles per numpy batch: a (batch, num_perm) buffer of 1 MiB stays in cache


def normalise_whitespace(text: str) -> str:
    """Every run of whitespace as one space, ends stripped: re-indented copies are exact dups."""
    return " ".join(text.split())


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

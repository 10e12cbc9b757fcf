"""The training data stream: corpus records -> masked examples -> packed rows, resumable.

Rules:
- Order: every epoch visits the shards in a seeded random order, and the records of each shard in a
  seeded random order (a shard is held in memory while it is read). With `pack_by="repo"` the unit
  of that order is a chunk of one package (record `source`): its files in path order, cut into runs
  of about `pack_chunk_kb` KB, the chunks of all packages in a seeded random order; consecutive files
  of a package follow each other, every file behind its `<|file|>` header, packed into shared
  attention segments (`train.packing`): repository-level packing. The corpus is the `train` split
  of an `infill data build` directory, or, without one, a few standard-library modules.
- Masking runs on the fly (`train.masking.document_examples`), a pure function of
  (seed, epoch, position), so every epoch sees new spans and `num_workers` processes can mask in
  parallel (results kept in order) without changing a single token.
- Position: `{"epoch", "shard", "record", "chunk", "offset"}` names the example in progress and the
  tokens of it already consumed. Starting a stream at a position reproduces the rest of the
  stream exactly; this is how `--resume` continues where a checkpoint left off.
- Every rank of a distributed run reads the same stream and trains on its slice of each step's rows,
  so N processes see exactly the batch one process would.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import random
import sysconfig
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from infill.corpus import read_shard, shard_paths
from infill.tokenizer import CodeTokenizer
from train.config import TrainConfig
from train.masking import chunk_budget, document_examples
from train.packing import Row, pack

START = {"epoch": 0, "shard": 0, "record": 0, "chunk": 0, "offset": 0}


class Corpus:
    """Documents of one split, shard by shard. A shard is a path (gzip JSONL) or a list of records."""

    def __init__(self, shards: list):
        self.shards = shards

    @classmethod
    def from_dir(cls, data_dir: str, split: str) -> "Corpus":
        if not Path(data_dir).is_dir():
            raise ValueError(f"{data_dir}: no such corpus directory (build one with `infill data build`)")
        paths = shard_paths(data_dir, split)
        if not paths:
            raise ValueError(f"{data_dir}: no {split} shards (build them with `infill data build`)")
        return cls(paths)

    def records(self, shard: int) -> list[dict]:
        item = self.shards[shard]
        if isinstance(item, list):
            return item
        return list(read_shard(item))

    def iter_records(self) -> Iterator[dict]:
        for i in range(len(self.shards)):
            yield from self.records(i)


def stdlib_corpus(n_modules: int) -> tuple[Corpus, Corpus]:
    """(train, validation) corpora of `n_modules` standard-library modules (every sixth held out).

    The modules are the alphabetically first top-level ones between 4 and 80 KB: a local,
    PSF-licensed corpus that needs no `infill data build`."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(stdlib.glob("*.py")) if 4_000 <= p.stat().st_size <= 80_000][:n_modules]
    if not files:
        raise ValueError(f"no standard-library modules found under {stdlib}")
    records = [{"text": p.read_text(encoding="utf-8", errors="replace"), "path": p.name, "language": "python",
                "source": "python-stdlib", "license": "PSF-2.0"} for p in files]
    val = records[5::6] or records[-1:]
    train = [r for r in records if r not in val] or records
    return Corpus([train]), Corpus([val])


def corpora(config: TrainConfig) -> tuple[Corpus, Corpus | None]:
    """(train, validation) of a config: the data directory's splits, or the standard-library corpus."""
    if config.data is None:
        return stdlib_corpus(config.stdlib_modules)
    train = Corpus.from_dir(config.data, "train")
    val = Corpus(shard_paths(config.data, "validation"))
    return train, (val if val.shards else None)


def _order(n: int, seed: int, *salt) -> list[int]:
    order = list(range(n))
    random.Random(":".join(map(str, (seed, "order") + salt))).shuffle(order)
    return order


# Worker side: the tokenizer and objective are sent once per worker, not once per document.
_WORKER: dict = {}


def _init_worker(tokenizer_json: str, config_dict: dict) -> None:
    from tokenizers import Tokenizer

    _WORKER["tok"] = CodeTokenizer(Tokenizer.from_str(tokenizer_json))
    _WORKER["config"] = TrainConfig.from_dict(config_dict)


def _work(job):
    record, epoch, key = job
    config = _WORKER["config"]
    return _examples(_WORKER["tok"], config, record, epoch, key)


def _examples(tok: CodeTokenizer, config: TrainConfig, record: dict, epoch: int, key: str):
    budget = chunk_budget(config.seq_len, min(config.objective.max_spans, tok.n_masks - 1))
    objective = config.objective
    if config.pack_by == "repo":  # every file of a package row says where it starts
        objective = dataclasses.replace(objective, header_rate=1.0)
    return [(e.ids, e.loss) for e in document_examples(tok, record, objective, seed=config.seed,
                                                       epoch=epoch, key=key, budget=budget)]


def record_order(records: list[dict], pack_by: str, seed: int, *salt, chunk_kb: int = 16) -> list[int]:
    """The visiting order of a shard's records: seeded random, or (`repo`) chunks of consecutive files
    (path order, about `chunk_kb` KB each) of every package, the chunks in seeded random order.

    Chunks, not whole packages: visiting a package whole made the stream one package for long
    stretches (sympy's 774 files, scipy's 940: minutes of training on one package, the loss
    following whichever package the stream was in, and the schedule's decay on one package)."""
    if pack_by != "repo":
        return _order(len(records), seed, *salt)
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record.get("source", ""), []).append(i)
    limit = max(1, chunk_kb) * 1024
    chunks: list[list[int]] = []
    for name in sorted(groups):
        chunk, size = [], 0
        for i in sorted(groups[name], key=lambda i: records[i].get("path", "")):
            if chunk and size + len(records[i].get("text", "")) > limit:
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(i)
            size += len(records[i].get("text", ""))
        chunks.append(chunk)
    return [i for c in _order(len(chunks), seed, *salt) for i in chunks[c]]


class Loader:
    """Packed training rows from a corpus, starting at a stream position; see the module rules.

    Iterating yields `Row`s forever (epoch after epoch). `busy_s` and `tokens` count the time spent
    producing rows in this process and the tokens produced, for the loader's throughput.
    """

    def __init__(self, corpus: Corpus, tokenizer: CodeTokenizer, config: TrainConfig, *,
                 position: dict | None = None):
        if not corpus.shards:
            raise ValueError("the training corpus is empty")
        self.corpus, self.tok, self.config = corpus, tokenizer, config
        self.position = dict(position or START)
        self.busy_s = 0.0
        self.tokens = 0
        self._pool = None
        self._rows = None

    def _jobs(self, start: dict) -> Iterator[tuple[dict, int, tuple]]:
        """(record, epoch, (shard, record)) from `start` on, epoch after epoch."""
        seed, epoch = self.config.seed, start["epoch"]
        first_shard, first_record = start["shard"], start["record"]
        while True:
            shard_order = _order(len(self.corpus.shards), seed, epoch)
            for s in range(first_shard, len(shard_order)):
                records = self.corpus.records(shard_order[s])
                order = record_order(records, self.config.pack_by, seed, epoch, s,
                                     chunk_kb=self.config.pack_chunk_kb)
                for r in range(first_record, len(order)):
                    yield records[order[r]], epoch, (s, r)
                first_record = 0
            first_shard, epoch = 0, epoch + 1

    def _example_stream(self, start: dict) -> Iterator[tuple[dict, list[int], list[bool]]]:
        by_repo = self.config.pack_by == "repo"
        jobs = ((record, epoch, f"{s}:{r}", (epoch, s, r, record.get("source", "") if by_repo else None))
                for record, epoch, (s, r) in self._jobs(start))
        if self.config.num_workers > 0:
            outputs = self._parallel(jobs)
        else:
            outputs = ((where, _examples(self.tok, self.config, record, epoch, key))
                       for record, epoch, key, where in jobs)
        first = True
        for (epoch, s, r, group), examples in outputs:
            for c, (ids, loss) in enumerate(examples):
                key = {"epoch": epoch, "shard": s, "record": r, "chunk": c}
                if first:  # resuming inside a document: skip the chunks and tokens already used
                    if c < start["chunk"]:
                        continue
                    key["offset"] = start["offset"] if c == start["chunk"] else 0
                yield key, ids, loss, group
            first = False

    def _parallel(self, jobs):
        """Mask in worker processes, results in stream order, at most `4 * workers` documents ahead."""
        ctx = multiprocessing.get_context("spawn")
        self._pool = ctx.Pool(self.config.num_workers, initializer=_init_worker,
                              initargs=(self.tok.to_json(), self.config.to_dict()))
        pending: deque = deque()
        for record, epoch, key, where in jobs:
            pending.append((where, self._pool.apply_async(_work, ((record, epoch, key),))))
            if len(pending) >= 4 * self.config.num_workers:
                where, result = pending.popleft()
                yield where, result.get()

    def __iter__(self) -> Iterator[Row]:
        return self

    def __next__(self) -> Row:
        if self._rows is None:
            self._rows = pack(self._example_stream(self.position), self.config.seq_len)
        t0 = time.perf_counter()
        row = next(self._rows)
        self.busy_s += time.perf_counter() - t0
        self.tokens += len(row.tokens)
        self.position = row.after
        return row

    def take(self, n: int) -> list[Row]:
        """The next `n` rows."""
        return [next(self) for _ in range(n)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

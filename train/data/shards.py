"""Shards: the corpus on disk as gzip-compressed JSON Lines, and the way back.

Files are `{split}-{index:05d}.jsonl.gz` in the output directory, one record per line with the
fields of `records.OUTPUT_FIELDS`. A shard is written under a temporary name and renamed when
complete, so a crashed run never leaves a truncated shard behind a valid name.
"""
from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterator

from train.data.records import Record, to_output

SHARD_GLOB = "*-[0-9][0-9][0-9][0-9][0-9].jsonl.gz"


class ShardWriter:
    """Appends records to the current shard of their split; starts a new one every `shard_bytes`
    bytes of text. Use as a context manager, or call `close`."""

    def __init__(self, out_dir: str, shard_bytes: int) -> None:
        self.out_dir = out_dir
        self.shard_bytes = shard_bytes
        self._open: dict[str, tuple[gzip.GzipFile, str, int]] = {}
        self._index: dict[str, int] = {}
        self.shards: list[dict] = []  # {"file", "split", "records", "bytes"} of closed shards
        self._counts: dict[str, list[int]] = {}

    def write(self, record: Record) -> None:
        """Write one kept record (its `split` decides the shard)."""
        split = record["split"]
        if split not in self._open:
            index = self._index.get(split, 0)
            self._index[split] = index + 1
            name = f"{split}-{index:05d}.jsonl.gz"
            tmp = os.path.join(self.out_dir, name + ".tmp")
            self._open[split] = (gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6), name, 0)
            self._counts[split] = [0, 0]
        f, name, size = self._open[split]
        f.write(json.dumps(to_output(record), ensure_ascii=False) + "\n")
        size += len(record["text"].encode("utf-8"))
        self._counts[split][0] += 1
        self._counts[split][1] = size
        self._open[split] = (f, name, size)
        if size >= self.shard_bytes:
            self._close(split)

    def _close(self, split: str) -> None:
        f, name, _ = self._open.pop(split)
        f.close()
        os.replace(os.path.join(self.out_dir, name + ".tmp"), os.path.join(self.out_dir, name))
        records, size = self._counts.pop(split)
        self.shards.append({"file": name, "split": split, "records": records, "bytes": size})

    def close(self) -> None:
        """Close and publish every open shard."""
        for split in list(self._open):
            self._close(split)
        self.shards.sort(key=lambda s: s["file"])

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def shard_paths(data_dir: str, split: str | None = None) -> list[str]:
    """Sorted shard files of a built corpus, of one split or all."""
    pattern = f"{split}-[0-9]*.jsonl.gz" if split else SHARD_GLOB
    return sorted(glob.glob(os.path.join(data_dir, pattern)))


def read_shards(data_dir: str, split: str | None = None) -> Iterator[Record]:
    """Stream the records of a built corpus, shard by shard, in order."""
    for path in shard_paths(data_dir, split):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

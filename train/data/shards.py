"""Shards: writing the corpus to disk as gzip-compressed JSON Lines (reading it back is
`infill.corpus.read_shards`, re-exported here, since evaluation and the loader read shards too).

Files are `{split}-{part:05d}-{index:05d}.jsonl.gz` in the output directory (`part` is the rank of
the task that wrote it, so sorted names are the corpus in order), one record per line with the
fields of `records.OUTPUT_FIELDS`. A shard is written under a temporary name and renamed when
complete, so a crashed run never leaves a truncated shard behind a valid name.
"""
from __future__ import annotations

import gzip
import json
import os

from infill.corpus import SHARD_GLOB, read_shards, shard_paths
from train.data.records import Record, to_output

__all__ = ["SHARD_GLOB", "ShardWriter", "read_shards", "shard_paths"]
# Shards are written by the one process that also deduplicates: level 1 compresses about twice as
# fast as gzip's default 6, for files about a quarter larger (0.28 vs 0.22 of the text on code).
COMPRESS_LEVEL = 1


class ShardWriter:
    """Appends records to the current shard of their split; starts a new one every `shard_bytes`
    bytes of text. As a context manager it publishes the shards on success and deletes the
    unfinished ones on an exception."""

    def __init__(self, out_dir: str, shard_bytes: int, part: int | None = None) -> None:
        self.out_dir = out_dir
        self.shard_bytes = shard_bytes
        self.part = "" if part is None else f"{part:05d}-"  # one writer per task: its rank
        self.shards: list[dict] = []  # {"file", "split", "records", "bytes"} of published shards
        self._open: dict[str, dict] = {}  # split -> {"file", "name", "records", "bytes"}
        self._next_index: dict[str, int] = {}

    def write(self, record: Record) -> None:
        """Write one kept record (its `split` decides the shard)."""
        split = record["split"]
        shard = self._open.get(split)
        if shard is None:
            index = self._next_index.get(split, 0)
            self._next_index[split] = index + 1
            name = f"{split}-{self.part}{index:05d}.jsonl.gz"
            f = gzip.open(os.path.join(self.out_dir, name + ".tmp"), "wt", encoding="utf-8",
                          compresslevel=COMPRESS_LEVEL)
            shard = self._open[split] = {"file": f, "name": name, "records": 0, "bytes": 0}
        shard["file"].write(json.dumps(to_output(record), ensure_ascii=False) + "\n")
        shard["records"] += 1
        shard["bytes"] += len(record["text"].encode("utf-8"))
        if shard["bytes"] >= self.shard_bytes:
            self._publish(split)

    def _publish(self, split: str) -> None:
        shard = self._open.pop(split)
        shard["file"].close()
        final = os.path.join(self.out_dir, shard["name"])
        os.replace(final + ".tmp", final)
        self.shards.append({"file": shard["name"], "split": split, "records": shard["records"],
                            "bytes": shard["bytes"]})

    def close(self) -> None:
        """Close and publish every open shard."""
        for split in list(self._open):
            self._publish(split)
        self.shards.sort(key=lambda s: s["file"])

    def abort(self) -> None:
        """Close and delete every unfinished shard."""
        for shard in self._open.values():
            shard["file"].close()
            os.remove(os.path.join(self.out_dir, shard["name"] + ".tmp"))
        self._open.clear()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

"""Split: assign each kept file to train or validation by its group (stage 7).

A group is a repository or package (the standard library splits by top-level module, see
`harvest`), so no package has files on both sides and validation measures generalisation to unseen
code. The assignment is a salted hash of the group name: the same group always lands on the same
side, whatever else is in the corpus and in whatever order or machine it is processed.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from train.data.config import DataConfig
from train.data.records import Record

SPLITS = ("train", "validation")


def split_of(group: str, config: DataConfig) -> str:
    """"validation" for a `config.val_fraction` share of groups, chosen by hash, else "train"."""
    digest = hashlib.sha256(f"{config.seed}:{group}".encode("utf-8")).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < config.val_fraction else "train"


def assign_split(records: Iterable[Record], config: DataConfig) -> Iterator[Record]:
    """Set `split` on every kept record (stage 7); tombstones pass through."""
    for record in records:
        if "removed" in record:
            yield record
        else:
            yield {**record, "split": split_of(record.get("group") or record["source"], config)}

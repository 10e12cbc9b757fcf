"""Tokenizer training on a built corpus, and token counts for its manifest.

`infill data tokenizer` trains `infill.tokenizer.CodeTokenizer` on a sample of the *train* shards
(validation code is never seen by the tokenizer either). The sample is drawn uniformly rather than
from the head of the corpus, whose shards are in source order: each file is taken when a hash of
its source and path falls under `sample_bytes / train bytes`, so the sample is deterministic and
spread over every package. Then, unless disabled, the whole corpus is encoded once to count tokens
per package, language and split into `tokens.json` beside `tokenizer.json` (the corpus manifest's
token counts).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterator

from tqdm import tqdm

from train.data.shards import read_shards, shard_paths

ENCODE_BATCH = 256


def _corpus_bytes(data_dir: str, split: str) -> int:
    """Kept bytes of a split from report.json, or 0 when there is no report."""
    try:
        with open(os.path.join(data_dir, "report.json"), encoding="utf-8") as f:
            return sum(json.load(f)["kept_bytes"].get(split, {}).values())
    except (OSError, ValueError, KeyError):
        return 0


def sample_texts(data_dir: str, sample_bytes: int) -> Iterator[str]:
    """Texts of train files, a uniform deterministic sample of about `sample_bytes` bytes."""
    total = _corpus_bytes(data_dir, "train")
    rate = 1.0 if total <= sample_bytes or total == 0 else sample_bytes / total
    taken = 0
    for record in read_shards(data_dir, "train"):
        key = f"{record['source']}/{record['path']}".encode("utf-8")
        if rate < 1.0 and int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64 >= rate:
            continue
        size = len(record["text"].encode("utf-8"))
        if taken + size > sample_bytes and taken > 0:
            continue
        taken += size
        yield record["text"]


def count_tokens(tokenizer, data_dir: str, progress: bool = True) -> dict:
    """Tokens per package, language and split of every shard."""
    packages = defaultdict(lambda: defaultdict(int))
    languages = defaultdict(lambda: defaultdict(int))
    totals = defaultdict(int)
    batch: list[dict] = []

    def flush() -> None:
        for record, ids in zip(batch, tokenizer.encode_batch([r["text"] for r in batch])):
            packages[record["source"]][record["split"]] += len(ids)
            languages[record["language"]][record["split"]] += len(ids)
            totals[record["split"]] += len(ids)
        batch.clear()

    for record in tqdm(read_shards(data_dir), desc="counting tokens", unit=" files",
                       file=sys.stderr, disable=not progress):
        batch.append(record)
        if len(batch) >= ENCODE_BATCH:
            flush()
    flush()
    plain = lambda d: {k: dict(v) for k, v in sorted(d.items(), key=lambda kv: kv[0].lower())}  # noqa: E731
    return {"total": dict(totals), "packages": plain(packages), "languages": plain(languages)}


def train_tokenizer(data_dir: str, out_dir: str, *, vocab_size: int, sample_bytes: int = 50_000_000,
                    n_masks: int = 32, count: bool = True, progress: bool = True):
    """Train and save the tokenizer (and `tokens.json` when `count`); returns the tokenizer.

    Raises `ValueError` for a directory without train shards or a bad vocabulary size."""
    from infill.tokenizer import CodeTokenizer

    if not os.path.isdir(data_dir) or not shard_paths(data_dir, "train"):
        raise ValueError(f"{data_dir!r} holds no train shards; run `infill data build` first")
    if sample_bytes <= 0:
        raise ValueError(f"sample-bytes must be positive, got {sample_bytes}")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output directory {out_dir!r}: {e.strerror}") from e
    texts = sample_texts(data_dir, sample_bytes)
    tok = CodeTokenizer.train(texts, vocab_size, n_masks=n_masks, show_progress=progress)
    tok.save(out_dir)
    if count:
        counts = count_tokens(tok, data_dir, progress)
        counts = {"tokenizer": os.path.join(out_dir, "tokenizer.json"), "vocab_size": len(tok),
                  "data": os.path.abspath(data_dir), **counts}
        with open(os.path.join(out_dir, "tokens.json"), "w", encoding="utf-8") as f:
            json.dump(counts, f, indent=2)
            f.write("\n")
    return tok

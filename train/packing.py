"""Examples -> rows of exactly `seq_len` tokens -> batches.

Rules:
- Examples are laid end to end; an example that does not fit the rest of a row continues at the
  start of the next row as a new segment (never padded on a stream that does not end).
- Each segment (a document, or the part of one in this row) has its own document id: attention
  stays inside it (`doc_ids`, which the triton backend turns into `cu_seqlens`), and RoPE positions
  restart at 0 where it starts. Repository-level packing: consecutive examples with the same
  `group` (a package) continue one segment, so a file attends to the files of its package before it
  in the row; a new group, or `group=None`, starts a new segment.
- Targets: position i predicts token i+1 when both are in the same segment and token i+1 is a
  training target of its example (`Encoded.loss`); every other position is `IGNORE`. A segment's
  first token is therefore never predicted, and the row's last position predicts nothing.
- Each row carries the stream position after it (`Row.after`), which is what a checkpoint stores.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100


@dataclass
class Row:
    tokens: np.ndarray
    """(T,) int64 token ids."""
    loss: np.ndarray
    """(T,) bool: the token is a training target of its example."""
    segment: np.ndarray
    """(T,) int32: segment index within the row, non-decreasing from 0."""
    after: dict | None = None
    """Stream position after this row: the example being consumed and how many of its tokens are used."""


def pack(examples: Iterable[tuple], seq_len: int, *, pad_id: int = 0, pad_last: bool = False) -> Iterator[Row]:
    """Rows of `seq_len` tokens from (position key, ids, loss) or (position key, ids, loss, group) examples.

    `key` identifies an example for resuming; each row's `after` is `{**key, "offset": n}` of the
    example in progress when the row closed (n of its tokens consumed). With `pad_last`, a final
    partial row is padded (pad tokens are their own segment and never targets); else it is dropped.
    """
    tokens = np.empty(seq_len, dtype=np.int64)
    loss = np.empty(seq_len, dtype=bool)
    segment = np.empty(seq_len, dtype=np.int32)
    fill, seg, open_group = 0, 0, None  # open_group: the group of the segment being filled
    for key, ids, flags, *rest in examples:
        group = rest[0] if rest else None
        offset = key.get("offset", 0)
        n = len(ids)
        while offset < n:
            if fill and (group is None or group != open_group):
                seg += 1
            take = min(n - offset, seq_len - fill)
            tokens[fill:fill + take] = ids[offset:offset + take]
            loss[fill:fill + take] = flags[offset:offset + take]
            segment[fill:fill + take] = seg
            fill, offset, open_group = fill + take, offset + take, group
            if fill == seq_len:
                yield Row(tokens.copy(), loss.copy(), segment.copy(), {**key, "offset": offset})
                fill, seg, open_group = 0, 0, None
    if pad_last and fill:
        tokens[fill:] = pad_id
        loss[fill:] = False
        segment[fill:] = seg + 1
        yield Row(tokens.copy(), loss.copy(), segment.copy(), None)


@dataclass
class Batch:
    tokens: torch.Tensor
    """(B, T) int64 inputs."""
    targets: torch.Tensor
    """(B, T) int64 next tokens, IGNORE where there is nothing to learn."""
    positions: torch.Tensor
    """(B, T) int64 RoPE positions, restarting at every segment."""
    doc_ids: torch.Tensor
    """(B, T) int32 document ids, unique over the whole batch (rows can be concatenated)."""

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.tokens, self.targets, self.positions,
                                                                  self.doc_ids)))

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())

    def flatten(self) -> "Batch":
        """The batch as one packed row (1, B*T): what kernels that take `cu_seqlens` need."""
        return Batch(*(t.reshape(1, -1) for t in (self.tokens, self.targets, self.positions, self.doc_ids)))


def collate(rows: list[Row]) -> Batch:
    """Stack rows into a batch: targets, restarted positions and batch-unique document ids."""
    tokens = np.stack([r.tokens for r in rows])  # (B, T)
    loss = np.stack([r.loss for r in rows])
    segment = np.stack([r.segment for r in rows])
    B, T = tokens.shape
    same_next = segment[:, 1:] == segment[:, :-1]
    targets = np.full((B, T), IGNORE, dtype=np.int64)
    keep = same_next & loss[:, 1:]
    targets[:, :-1] = np.where(keep, tokens[:, 1:], IGNORE)
    # positions: index minus the index where the segment started
    idx = np.broadcast_to(np.arange(T), (B, T))
    starts = np.where(np.concatenate([np.ones((B, 1), bool), ~same_next], axis=1), idx, 0)
    positions = idx - np.maximum.accumulate(starts, axis=1)
    doc_ids = segment + (np.arange(B, dtype=np.int32) * T)[:, None]
    return Batch(torch.from_numpy(tokens), torch.from_numpy(targets), torch.from_numpy(positions.astype(np.int64)),
                 torch.from_numpy(doc_ids.astype(np.int32)))

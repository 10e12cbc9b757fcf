"""The cache model inside an engine with logits: where the request's texts become the cache's ids, and the hook.

`infill.cache` knows ids only; this is where text meets them, once per engine for every engine with
logits (local, transformers), so the mixture lives in one place: `CacheModel.next_dist` gives the
decode loop its hook on the next-token distribution (`generation.stream`'s `next_dist`).

Rules:
- Layers, nearest first: the current document (its text before the cursor, less the token the
  cursor is in, which the user is still typing and healing backs off, and its text after the cursor,
  kept apart so that no n-gram spans the hole), then the request's other sources (`InfillRequest.sources`:
  open documents, imported files, recent chunks, the folder's files, in the caller's order).
- The history the cache continues is the prompt's end (after its last special token: the prefix,
  healed as the prompt is) and the tokens generated so far; the generated tokens count as the
  document's, each only after it was predicted (scored before updated).
- Token ids of a text are kept per (key, version) (`NgramCache` keeps them, within `limit_mb`); a new
  version is tokenized block by block (blocks end at blank lines), and a block seen before is not
  tokenized again, so typing in a 100 KB file re-tokenizes one block, and a workspace file is
  tokenized once while its version holds. Ids are those of the blocks' encodings joined, which may
  differ from the whole text's encoding at a block's edge; the cache is a model of the text, and a
  few edges do not change what it has seen.
- Token healing's mask applies to both distributions: on a healed first token the cache's and the
  model's distributions are each renormalised over the tokens the mask allows, then mixed; the cache
  counts as confident there also when one token holds at least `CacheConfig.heal_top` of its
  allowed mass (the identifier the user is typing, seen in the document: `return t` -> `total`).
- A source the tokenizer fails on (a backtracking regex, a panic) is skipped, and not tried again at
  that version: it costs that source alone, never the completion.
- A request without `cache` gets no hook: the model's own distribution.
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
import torch

from infill.cache import CacheConfig, NgramCache, mix
from infill.engines.base import InfillRequest
from infill.generation import NextDist

log = logging.getLogger(__name__)
BLOCKS_KEPT = 65536
"""Tokenized blocks remembered by text (about a few MB of ids)."""
_BLOCK_END = re.compile(r"(?<=\n\n)")
_TAIL_CHARS = 512


def blocks(text: str) -> list[str]:
    """`text` cut after every blank line (the pieces join back to `text`)."""
    return [b for b in _BLOCK_END.split(text) if b]


class CacheModel:
    """An engine's cache model: its sources' ids per version, and the hook for a request."""

    def __init__(self, vocab_size: int, encode_batch: Callable[[list[str]], list[list[int]]],
                 special_ids: frozenset[int], *, limit_mb: float = 64.0):
        self.ngrams = NgramCache(vocab_size, limit_mb=limit_mb)
        self.encode_batch = encode_batch
        self.special_ids = special_ids
        self._blocks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._failed: set[tuple[Hashable, Hashable]] = set()
        """(key, version) of sources the tokenizer failed on: not tried again."""

    def tokenize(self, text: str) -> np.ndarray:
        """The ids of `text`, block by block (see the module rules)."""
        pieces = blocks(text)
        missing = list(dict.fromkeys(p for p in pieces if p not in self._blocks))
        if missing:
            texts = [p.encode("utf-8", "replace").decode("utf-8") for p in missing]  # lone surrogates: "?"
            for piece, ids in zip(missing, self.encode_batch(texts)):
                self._blocks[piece] = np.asarray(ids, dtype=np.int32)
        out = []
        for p in pieces:
            self._blocks.move_to_end(p)
            out.append(self._blocks[p])
        while len(self._blocks) > BLOCKS_KEPT:
            self._blocks.popitem(last=False)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int32)

    def ids(self, key: Hashable, version: Hashable, text: str, *, typing: bool = False) -> np.ndarray:
        """The ids of source `key` at `version` (held, or tokenized now); `typing`: less the last token
        (the one the cursor is in, still being typed)."""
        held = self.ngrams.held(key, version)
        if held is not None:
            return held
        ids = self.tokenize(text)
        return self.ngrams.update(key, version, ids[:-1] if typing and len(ids) else ids)

    def drop_document(self, key: str) -> None:
        """Forget a document's ids (a closed document: its versions may start again)."""
        for part in ("before", "after"):
            self.ngrams.drop((part, key))

    def next_dist(self, req: InfillRequest, prompt: list[int], first_allowed: torch.Tensor | None = None
                  ) -> NextDist | None:
        """The hook for `req` whose prompt is `prompt`, or None when the request has no cache;
        `first_allowed`: token healing's mask on the first token (bool (V,))."""
        config = req.cache
        if config is None:
            return None
        if config.limit_mb * 2**20 != self.ngrams.limit_bytes:
            self.ngrams.limit_bytes = int(config.limit_mb * 2**20)
        self.ngrams.config = config
        far = []
        for src in req.sources:
            key = ("source", src.key)
            if (key, src.version) in self._failed:
                continue
            try:
                self.ids(key, src.version, src.text)
            except Exception:  # a source the tokenizer cannot take costs this source alone (a bonus)
                log.warning("the cache model skips %s: the tokenizer failed on it", src.key, exc_info=True)
                if len(self._failed) >= 1024:
                    self._failed.clear()
                self._failed.add((key, src.version))
                continue
            far.append(key)
        if req.document is not None:
            text, cursor = req.document, req.cursor if req.cursor is not None else len(req.document)
        else:
            text, cursor = req.prefix + req.suffix, len(req.prefix)
        doc = req.session or req.path or "document"
        version = (req.version, cursor, len(text)) if req.version is not None else (hash(text), cursor)
        near = [("after", doc), ("before", doc)]
        self.ids(near[0], version, text[cursor:])
        self.ids(near[1], version, text[:cursor], typing=True)
        predictor = self.ngrams.predictor([self.ngrams.layer(near), self.ngrams.layer(far)], config)
        tail = self._history(prompt, req.prefix, config.order)

        allowed = first_allowed.cpu().numpy() if first_allowed is not None else None

        def next_dist(generated: list[int], logprobs: torch.Tensor) -> torch.Tensor:
            healing = allowed is not None and not generated
            p, matched = predictor.distribution(tail + generated, live_from=len(tail),
                                                skip_below=0 if healing else predictor.skip_below())
            if healing:
                return healed_mix(logprobs, p, allowed, predictor.weight(matched), config)
            return logprobs if p is None else mix(logprobs, p, predictor.weight(matched))
        return next_dist

    def _history(self, prompt: list[int], prefix: str, order: int) -> list[int]:
        """The ids the cache continues: the prompt after its last special token where the prompt ends
        in the prefix (healed as the prompt is), else the prefix's end tokenized."""
        tail: list[int] = []
        for t in reversed(prompt):
            if t in self.special_ids or len(tail) >= order:
                break
            tail.append(t)
        if tail:
            return tail[::-1]
        return list(self.tokenize(prefix[-_TAIL_CHARS:])[-order:])


def healed_mix(model_logprobs: torch.Tensor, cache_p: np.ndarray, allowed: np.ndarray, weight: float,
               config: CacheConfig) -> torch.Tensor:
    """The mixture on a healed first token: both distributions renormalised over `allowed` first
    (tokens outside it get -inf: the mask removes them anyway)."""
    restricted = np.where(allowed[:len(cache_p)], cache_p, 0.0)
    mass = restricted.sum()
    if mass <= 0:
        return model_logprobs
    restricted /= mass
    if config.mode == "mix" and restricted.max() >= config.heal_top:
        weight = config.weight
    mask = torch.from_numpy(allowed).to(model_logprobs.device)
    model = torch.log_softmax(model_logprobs.masked_fill(~mask, float("-inf")), -1)
    return mix(model, restricted, weight).masked_fill(~mask, float("-inf"))

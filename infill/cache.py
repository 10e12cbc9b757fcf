"""The cache model: a nested n-gram cache over token ids, and its mixture with a model's next-token distribution.

Ids in, a normalised distribution over the whole vocabulary out: no text, no model, no editor. The
sources (the current document, the project's other files) are handed to it as id arrays by the engine,
which is where text meets ids. It is the "naturalness of software" cache of Tu et al. (2014) in the
nested form of Hellendoorn & Devanbu (2017), layered as SLP-Core layers it: the document nearest,
then the project's other sources. The code is ours; no n-gram library keeps per-keystroke id arrays,
scores against a caller's vocabulary and mixes into a decode loop, so it is written here on numpy.

Rules:
- The distribution (`Predictor.distribution`) is interpolated Witten-Bell over orders 0 to
  `order - 1` tokens of context, built from the lowest order up: p_0 is uniform over the vocabulary,
  p_k(w) = (c_k(w) + T_k p_{k-1}(w)) / (N_k + T_k), where c_k are the counts of the tokens that
  followed the last k tokens of the history, N_k their sum and T_k how many distinct tokens they are;
  an order whose context never occurred (N_k = 0) and every longer one are skipped. It sums to 1 and
  gives every token a probability above 0 (the uniform floor), so a mixture with it is a proper
  distribution: no fixed-bit fallback, no hashed counts.
- A context's counts in a layer come from its `MOST_RECENT` latest occurrences (a bound on the cost).
- Layers: counts are summed over the layers, the nearest at weight 1 and every farther one at
  `CacheConfig.far_weight` (the document's own habits outweigh the project's).
- Scored before updated: the counts of a query come only from tokens before the one predicted. The
  live history (the prompt's end and the tokens generated so far) counts only where its next token
  is already in it, so a token is counted after it was predicted, never before.
- Sources are kept per (key, version); a new version keeps the ids of the common prefix and takes the
  rest (typing appends). Memory is bounded by `limit_mb` (ids at 4 bytes a token); the least recently
  used source goes first (the newest always stays).
- The mixture (`mix`): p = lambda p_cache + (1 - lambda) p_model, where lambda is `CacheConfig.weight`
  once the cache matched at least `min_match` tokens of context, else 0. `mode="cache"` is the cache
  alone (an ablation).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CacheConfig", "Layer", "NgramCache", "Predictor", "mix"]

MODES = ("mix", "cache")


@dataclass(frozen=True)
class CacheConfig:
    """How the cache model predicts and how much it weighs in the mixture. The defaults were chosen on
    the tuning package (attrs), never on the test package (docs/eval.md)."""

    order: int = 8
    """Longest n-gram: up to order - 1 tokens of context."""
    far_weight: float = 0.5
    """Weight of a count from a layer farther than the nearest (the document's weight is 1)."""
    weight: float = 0.5
    """The cache's share of the mixture once it is confident."""
    min_match: int = 2
    """Tokens of context the cache must have matched to be confident."""
    mode: str = "mix"
    """mix (the mixture), or cache (the cache alone: an ablation for evaluations)."""
    heal_top: float = 0.5
    """On a healed first token, the cache is confident also when one token holds this share of the
    probability it gives the tokens healing allows (`infill.engines.mixture`)."""
    limit_mb: float = 64.0
    """Memory for the sources' ids (4 bytes a token); the least recently used source goes first."""

    def __post_init__(self) -> None:
        if not 1 <= self.order <= 32:
            raise ValueError(f"order must be from 1 to 32, got {self.order}")
        if not 0 <= self.far_weight <= 1:
            raise ValueError(f"far_weight must be in [0, 1], got {self.far_weight}")
        if not 0 <= self.weight <= 1:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")
        if self.min_match < 0:
            raise ValueError(f"min_match must be >= 0, got {self.min_match}")
        if self.limit_mb < 0:
            raise ValueError(f"limit_mb must be >= 0, got {self.limit_mb}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")


_SEP = -1
"""Between the sources of a layer: no n-gram crosses it, and it is never a predicted token."""


class Layer:
    """Id arrays searched together: one array, the sources joined by `_SEP`, and its unigram counts."""

    def __init__(self, arrays: Sequence[np.ndarray], vocab_size: int):
        pieces: list[np.ndarray] = []
        for a in arrays:
            if len(a):
                pieces += [np.asarray(a, dtype=np.int32), np.array([_SEP], dtype=np.int32)]
        self.ids = np.concatenate(pieces) if pieces else np.array([_SEP], dtype=np.int32)
        real = self.ids[self.ids >= 0]
        self.unigram = np.bincount(real, minlength=vocab_size).astype(np.float64)[:vocab_size]
        self.vocab_size = vocab_size
        self._index: tuple[np.ndarray, np.ndarray] | None = None
        self.nbytes = self.ids.nbytes + self.unigram.nbytes

    def __len__(self) -> int:
        return int((self.ids >= 0).sum())

    def followers(self, context: np.ndarray) -> list[np.ndarray]:
        """For k = 1..len(context): the tokens that followed the last k tokens of `context` here
        (stops early once a context never occurred)."""
        a = self.ids
        out: list[np.ndarray] = []
        if not len(context):
            return out
        pos = self._positions(int(context[-1]))  # a[pos] ends a match; a[pos + 1] follows it
        pos = pos[a[pos + 1] >= 0]
        for k in range(1, len(context) + 1):
            if k > 1:
                pos = pos[pos >= k - 1]
                pos = pos[a[pos - (k - 1)] == context[-k]]
            if not len(pos):
                break
            out.append(a[pos[-MOST_RECENT:] + 1])
        return out

    def _positions(self, token: int) -> np.ndarray:
        """Positions of `token` (not the last one): a scan, or in a large layer (kept across requests) an
        index by token built on first use."""
        a = self.ids
        if len(a) < INDEX_FROM:
            return np.flatnonzero(a[:-1] == token)
        if self._index is None:
            order = np.argsort(a[:-1], kind="stable")
            bounds = np.searchsorted(a[:-1][order], np.arange(-1, self.vocab_size + 1))
            self._index = (order, bounds)
        order, bounds = self._index
        if not 0 <= token < self.vocab_size:
            return np.zeros(0, dtype=np.int64)
        return order[bounds[token + 1]:bounds[token + 2]]


MOST_RECENT = 4096
"""A context's counts come from its most recent occurrences in a layer, at most this many (a context
seen 200,000 times in a repetitive file costs what one seen 4,096 times does)."""
INDEX_FROM = 50_000
"""A layer of at least this many ids is searched through an index by token (built once per layer)."""


class _Source:
    __slots__ = ("version", "ids")

    def __init__(self, version: Hashable, ids: np.ndarray):
        self.version, self.ids = version, ids


class NgramCache:
    """The sources the cache model reads, by key, bounded in memory (see the module rules)."""

    def __init__(self, vocab_size: int, *, limit_mb: float = 64.0, config: CacheConfig | None = None):
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if limit_mb < 0:
            raise ValueError(f"limit_mb must be >= 0, got {limit_mb}")
        self.vocab_size = vocab_size
        self.limit_bytes = int(limit_mb * 2**20)
        self.config = config or CacheConfig()
        self._sources: OrderedDict[Hashable, _Source] = OrderedDict()
        self._layers: dict[tuple, Layer] = {}

    # sources ------------------------------------------------------------------------------------
    def held(self, key: Hashable, version: Hashable) -> np.ndarray | None:
        """The ids of source `key` if it is held at `version` (now most recent), else None."""
        src = self._sources.get(key)
        if src is None or src.version != version:
            return None
        self._sources.move_to_end(key)
        return src.ids

    def update(self, key: Hashable, version: Hashable, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Hold `ids` as source `key` at `version`: the common prefix with the held ids is kept, the
        rest replaced; the source becomes the most recent and the least recent go past the limit."""
        new = np.asarray(ids, dtype=np.int32)
        if new.size and (new.min() < 0 or new.max() >= self.vocab_size):
            raise ValueError(f"source {key!r}: ids must be in [0, {self.vocab_size})")
        src = self._sources.pop(key, None)
        if src is None:
            src = _Source(version, new.copy())
        else:
            n = min(len(src.ids), len(new))
            diff = np.flatnonzero(src.ids[:n] != new[:n])
            keep = int(diff[0]) if len(diff) else n
            src.ids = np.concatenate([src.ids[:keep], new[keep:]]) if keep < len(src.ids) or keep < len(new) \
                else src.ids
            src.version = version
        self._sources[key] = src
        self.trim()
        return src.ids

    def drop(self, key: Hashable) -> None:
        if self._sources.pop(key, None) is not None:
            self._prune_layers()

    def keys(self) -> list[Hashable]:
        """Held sources, least recent first."""
        return list(self._sources)

    def nbytes(self) -> int:
        return sum(s.ids.nbytes for s in self._sources.values())

    def trim(self) -> None:
        total = self.nbytes()
        while total > self.limit_bytes and len(self._sources) > 1:
            _, old = self._sources.popitem(last=False)
            total -= old.ids.nbytes
        self._prune_layers()

    def _prune_layers(self) -> None:
        held = {(k, s.version) for k, s in self._sources.items()}
        self._layers = {sig: layer for sig, layer in self._layers.items() if set(sig) <= held}

    def layer(self, keys: Sequence[Hashable]) -> Layer:
        """The held sources among `keys`, as one layer (kept while none of them changes)."""
        present = [k for k in keys if k in self._sources]
        sig = tuple((k, self._sources[k].version) for k in present)
        if sig not in self._layers:
            if len(self._layers) >= 8:
                self._layers.pop(next(iter(self._layers)))
            self._layers[sig] = Layer([self._sources[k].ids for k in present], self.vocab_size)
        return self._layers[sig]

    def predictor(self, layers: Sequence[Layer], config: CacheConfig | None = None) -> "Predictor":
        """A predictor over `layers`, nearest first."""
        return Predictor(layers, self.vocab_size, config or self.config)


class Predictor:
    """Next-token distributions from fixed layers, nearest first, plus the live history (module rules)."""

    def __init__(self, layers: Sequence[Layer], vocab_size: int, config: CacheConfig):
        self.layers = list(layers)
        self.vocab_size = vocab_size
        self.config = config
        self.weights = [1.0] + [config.far_weight] * (len(self.layers) - 1)
        self._unigram = sum((w * layer.unigram for w, layer in zip(self.weights, self.layers)),
                            np.zeros(vocab_size, dtype=np.float64))
        self._n0 = float(self._unigram.sum())
        self._t0 = int(np.count_nonzero(self._unigram))
        self._p0 = (self._unigram + self._t0 / vocab_size) / (self._n0 + self._t0) if self._n0 > 0 \
            else np.full(vocab_size, 1.0 / vocab_size)

    def distribution(self, history: Sequence[int], live_from: int | None = None, *, skip_below: int = 0
                     ) -> tuple[np.ndarray | None, int]:
        """(p over the vocabulary (float64, sums to 1), tokens of context matched) for the token after
        `history`. history[live_from:] (if given) is live: it also counts, nearest, where its next
        token is in it and at or after `live_from` (scored before updated). With fewer than
        `skip_below` tokens matched, p is None (not computed: the mixture would not use it)."""
        V, order = self.vocab_size, self.config.order
        hist = np.asarray(history[-max(order - 1, 0):] if order > 1 else [], dtype=np.int64)
        per_order: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(len(hist))]
        for w, layer in zip(self.weights, self.layers):
            for k, nxt in enumerate(layer.followers(hist)):
                per_order[k].append((w, nxt))
        live_tokens = np.zeros(0, dtype=np.int64)
        if live_from is not None and live_from < len(history):
            live = np.asarray(history, dtype=np.int64)
            live_tokens = live[live_from:]
            for k, nxt in enumerate(_live_followers(live, live_from, len(hist))):
                per_order[k].append((1.0, nxt))
        if sum(1 for parts in per_order if parts) < skip_below:
            return None, sum(1 for parts in per_order if parts)
        p = self._p0.copy()
        if len(live_tokens):  # order 0 again, with the live tokens' counts added (sparse)
            vals, cnt = np.unique(live_tokens, return_counts=True)
            n = self._n0 + len(live_tokens)
            t = self._t0 + int(np.count_nonzero(self._unigram[vals] == 0))
            p = self._unigram * (1.0 / (n + t)) + t / (V * (n + t))
            p[vals] += cnt / (n + t)
        matched = 0
        for k, parts in enumerate(per_order):
            if not parts:
                break
            toks = np.concatenate([nxt for _, nxt in parts])
            weights = np.concatenate([np.full(len(nxt), w) for w, nxt in parts])
            vals, inv = np.unique(toks, return_inverse=True)
            counts = np.bincount(inv, weights=weights)
            n, t = counts.sum(), len(vals)
            if n > 0:  # Witten-Bell, sparse: p_k = (c_k + T p_{k-1}) / (N + T)
                p *= t / (n + t)
                p[vals] += counts / (n + t)
            matched = k + 1
        return p, matched

    def skip_below(self) -> int:
        """Matched context below which the mixture gives the cache no weight."""
        return 0 if self.config.mode == "cache" else self.config.min_match

    def weight(self, matched: int) -> float:
        """The cache's share of the mixture after matching `matched` tokens of context."""
        if self.config.mode == "cache":
            return 1.0
        return self.config.weight if matched >= self.config.min_match else 0.0


def _live_followers(live: np.ndarray, start: int, longest: int) -> list[np.ndarray]:
    """Like `Layer.followers` over `live`, counting only positions whose next token is at index >= start."""
    out: list[np.ndarray] = []
    n = len(live)
    if longest < 1 or n < 2:
        return out
    pos = np.arange(max(start - 1, 0), n - 1)
    pos = pos[live[pos] == live[-1]]
    for k in range(1, longest + 1):
        if k > 1:
            pos = pos[pos >= k - 1]
            pos = pos[live[pos - (k - 1)] == live[n - k]]
        if not len(pos):
            break
        out.append(live[pos + 1])
    return out


def mix(model_logprobs: torch.Tensor, cache_p: np.ndarray, weight: float) -> torch.Tensor:
    """log(weight p_cache + (1 - weight) p_model) as float32 (V,), the cache sized as the model's
    output; weight 0 returns the model's own, weight 1 the cache's."""
    if weight <= 0:
        return model_logprobs
    if cache_p.shape[0] != model_logprobs.shape[-1]:
        raise ValueError(f"the cache has {cache_p.shape[0]} tokens, the model {model_logprobs.shape[-1]}")
    cache = torch.from_numpy(cache_p).to(device=model_logprobs.device)
    if weight >= 1:
        return cache.log().float()
    model = model_logprobs.double().exp()
    return (weight * cache + (1 - weight) * model).log().float()

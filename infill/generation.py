"""Generation over token ids: the one decode loop (`stream`), its seams, `generate` and `score`.

Generation never sees text. Every engine with logits runs `stream`, and differs only in what it plugs
in (the model of gpt-fast's `decode_n_tokens` over `model_forward`):
- `forward(ids, start_pos) -> logits` (`Forward`): the model and its cache. The caller owns the cache
  and says where the prompt starts in it (`start_pos`: tokens before it are already cached), so a
  session cache can skip a shared prefix. The position advances in one place, `stream`, and with
  n > 1 the prompt is prefilled once and copied into n rows (`Forward.expand`).
- `next_dist(ids so far, log-probabilities) -> log-probabilities` (`NextDist`): the hook on the
  next-token distribution (the place of transformers' `LogitsProcessor`). Greedy, sampling, the
  healing mask (applied after it), prompt-lookup drafts and `Candidate.logprob` all act on its output.
Text-level rules (stop strings, token healing) reach this module as id-level callbacks and masks
built by `infill.engines`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from infill.model import KVCache, Transformer


@dataclass
class GenerationConfig:
    """How to sample a continuation."""

    max_tokens: int = 64
    """Most tokens generated per candidate."""
    temperature: float = 0.0
    """0 is greedy."""
    top_k: int | None = None
    """Keep only the k most likely tokens before sampling."""
    top_p: float | None = None
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches p."""
    seed: int | None = None
    """Seed of the sampling generator, for reproducible samples."""
    n: int = 1
    """Number of candidates, decoded as one batch."""
    stop_ids: frozenset[int] = field(default_factory=frozenset)
    """Tokens that end a candidate (not included in its output)."""
    time_budget_s: float | None = None
    """Stop every candidate when this much wall time has passed since the call."""
    lookahead: int = 8
    """Greedy, n=1 only: draft up to this many tokens by prompt lookup and verify them in one forward
    pass (exact: the output is the greedy output). 0 turns it off."""

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


NextDist = Callable[[list[int], torch.Tensor], torch.Tensor]
"""The hook on the next-token distribution: (a row's generated ids so far, the model's (V,) float32
log-probabilities) -> the (V,) log-probabilities to pick from (a proper distribution). The loop may
call it more than once for one context, and for draft contexts it then rejects, so it must depend on
its arguments only (never on the order of calls)."""


@dataclass
class Candidate:
    tokens: list[int]
    logprob: float
    """Sum of the log-probabilities of `tokens` under the distribution each was picked from
    (untempered): the model's, or the `next_dist` hook's where one is given, renormalised over the
    healing mask for the first token. For ranking."""
    finish_reason: str
    """stop (a stop token), length (max_tokens), stop_rule (the caller's rule), time (time budget)."""


class Forward:
    """The seam between the decode loop and a model: `forward(ids, start_pos) -> logits`.

    `__call__(ids (B, T), start_pos)` runs ids at positions [start_pos, start_pos + T) after the
    `start_pos` positions the model's cache holds (forgetting any it holds beyond them) and returns
    logits (B, T, V). The loop owns the position: it is the only caller, and says where every call
    starts. An engine subclasses this for its model and cache (`ModelForward` here; the transformers
    engine's over a `DynamicCache`); a plain callable of the same shape works too, for one row.
    """

    device: torch.device | str = "cpu"
    max_len: int | None = None
    """Most positions the cache holds (None: no limit the loop must check)."""

    def __call__(self, ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        raise NotImplementedError

    def prefill(self, ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        """As `__call__`, logits (B, V) of the last position only (a model may skip the others)."""
        return self(ids, start_pos)[:, -1]

    def expand(self, n: int) -> None:
        """From now on run n rows, each a copy of the one row whose positions the cache holds."""
        raise ValueError(f"{type(self).__name__} runs one row; n={n} needs a forward with expand()")


class _Callable(Forward):
    def __init__(self, fn: Callable[[torch.Tensor, int], torch.Tensor]):
        self.fn = fn

    def __call__(self, ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        return self.fn(ids, start_pos)


class ModelForward(Forward):
    """`Forward` over an infill `Transformer` and a `KVCache` of one row that the caller owns (a
    session's cache stays valid for the prompt after `expand`, which copies it)."""

    def __init__(self, model: Transformer, cache: KVCache):
        self.model, self.cache = model, cache
        self.device, self.max_len = cache.k.device, cache.max_len

    def __call__(self, ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        return self.model(ids, start_pos=start_pos, cache=self.cache)

    def prefill(self, ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        return self.model(ids, start_pos=start_pos, cache=self.cache, last_only=True)[:, -1]

    def expand(self, n: int) -> None:
        self.cache = self.cache.expand(n)


def model_forward(model: Transformer, cache: KVCache | None = None, max_len: int | None = None) -> ModelForward:
    """The forward seam over `model` and `cache` (a fresh one-row cache of `max_len` when none is given)."""
    if cache is None:
        param = next(model.parameters())
        cache = KVCache(model.config, 1, max_len or model.config.max_seq_len, device=param.device, dtype=param.dtype)
    if cache.batch_size != 1:
        raise ValueError(f"the decode loop starts from a one-row cache, got {cache.batch_size} rows")
    return ModelForward(model, cache)


def next_logprobs(logits: torch.Tensor, rows: list[list[int]], live: list[bool],
                  next_dist: NextDist | None = None, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """The (B, V) log-probabilities to pick each row's next token from: the model's (log_softmax of
    `logits`), through `next_dist` for each live row, then restricted to `allowed` (bool (V,), token
    healing) and renormalised. A row whose hook leaves no allowed token falls back to the model's."""
    model_lp = torch.log_softmax(logits.float(), dim=-1)
    lp = model_lp
    if next_dist is not None:
        lp = torch.stack([next_dist(row, model_lp[r]) if ok else model_lp[r]
                          for r, (row, ok) in enumerate(zip(rows, live))])
    if allowed is not None:
        masked = lp.masked_fill(~allowed, float("-inf"))
        empty = ~torch.isfinite(masked).any(dim=-1, keepdim=True)
        if bool(empty.any()):
            masked = torch.where(empty, model_lp.masked_fill(~allowed, float("-inf")), masked)
        lp = torch.log_softmax(masked, dim=-1)
    return lp


def pick(logprobs: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token (B,) from log-probabilities (B, V): argmax when greedy, else sampled with the
    config's temperature, top-k and top-p."""
    if config.temperature == 0:
        return logprobs.argmax(dim=-1)
    scores = logprobs / config.temperature
    if config.top_k is not None and config.top_k < scores.shape[-1]:
        kth = torch.topk(scores, config.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if config.top_p is not None and config.top_p < 1:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        cum = sorted_scores.softmax(-1).cumsum(-1)
        drop = cum - sorted_scores.softmax(-1) >= config.top_p  # keep the token that crosses p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    return torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(-1)


def sample(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None = None,
           allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token (B,) and its log-probability under the untempered model (B,), with no hook.

    allowed: optional bool (V,) mask; tokens outside it are never chosen.
    """
    lp = next_logprobs(logits, [[]] * logits.shape[0], [True] * logits.shape[0], None, allowed)
    nxt = pick(lp, config, generator)
    return nxt, lp.gather(-1, nxt[:, None]).squeeze(-1)


@dataclass
class Step:
    """What `stream` yields after each generated token: every row's tokens so far."""

    tokens: list[list[int]]
    done: list[bool]


@torch.inference_mode()
def stream(forward: Forward | Callable[[torch.Tensor, int], torch.Tensor], prompt: list[int],
           config: GenerationConfig, *, start_pos: int = 0, first_allowed: torch.Tensor | None = None,
           stop_rule: Callable[[list[int]], bool] | None = None, next_dist: NextDist | None = None,
           result: list[Candidate] | None = None) -> Iterator[Step]:
    """Generate `config.n` continuations of `prompt`, yielding after every token.

    `forward` is the model (the `Forward` seam; `model_forward(model, cache)` for an infill model).
    `prompt[:start_pos]` must already be in its cache; the rest is prefilled here, in one row, and
    with n > 1 the forward then copies that row into n (`Forward.expand`), so the cache position moves
    here only. Each step the model's log-probabilities go through `next_dist` (each live row's
    generated ids so far, the (V,) log-probabilities) when given; `first_allowed` (bool (V,), token
    healing) then restricts the first token, renormalised, so it constrains the hook's distribution
    too. Greedy picks the argmax of that, sampling samples it, and `Candidate.logprob` sums it.
    Prompt-lookup drafts (greedy, n = 1) are verified against the same distribution, so the output
    equals the output without drafts. `stop_rule(tokens)` ends a row when it returns True. When the
    generator finishes, `result` (if given) is filled with one Candidate per row.
    """
    if not isinstance(forward, Forward):
        forward = _Callable(forward)
    if not prompt or start_pos >= len(prompt):
        raise ValueError("stream needs at least one uncached prompt token")
    if forward.max_len is not None and len(prompt) + config.max_tokens > forward.max_len:
        raise ValueError(f"prompt ({len(prompt)}) + max_tokens ({config.max_tokens}) exceed the cache "
                         f"({forward.max_len} tokens)")
    device = forward.device
    started = time.monotonic()
    generator = None
    if config.temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(config.seed if config.seed is not None else int(time.time_ns() % 2**63))
    logits = forward.prefill(torch.tensor([prompt[start_pos:]], device=device), start_pos)
    if config.n > 1:
        forward.expand(config.n)
        logits = logits.expand(config.n, -1)
    pos = len(prompt)
    rows: list[list[int]] = [[] for _ in range(config.n)]
    logprob = [0.0] * config.n
    reason = [""] * config.n

    def accept(r: int, t: int, lp: float) -> None:
        """Append token t to row r, or end the row by the stop rules."""
        if t in config.stop_ids:
            reason[r] = "stop"
            return
        rows[r].append(t)
        logprob[r] += lp
        if stop_rule is not None and stop_rule(rows[r]):
            reason[r] = "stop_rule"
        elif len(rows[r]) >= config.max_tokens:
            reason[r] = "length"

    speculate = config.n == 1 and config.temperature == 0 and config.lookahead > 0
    allowed = first_allowed
    dist: torch.Tensor | None = None  # the next step's distribution, when verifying drafts computed it
    while not all(reason) and config.max_tokens > 0:
        if dist is None:
            dist = next_logprobs(logits, rows, [not x for x in reason], next_dist, allowed)
        allowed = None
        nxt = pick(dist, config, generator)
        lp = dist.gather(-1, nxt[:, None]).squeeze(-1)
        dist = None
        for r, (t, l) in enumerate(zip(nxt.tolist(), lp.tolist())):
            if not reason[r]:
                accept(r, t, l)
        if not all(reason) and config.time_budget_s is not None and time.monotonic() - started > config.time_budget_s:
            reason = [x or "time" for x in reason]
        yield Step(rows, [bool(x) for x in reason])
        if all(reason):
            break
        room = config.max_tokens - len(rows[0])
        if forward.max_len is not None:
            room = min(room, forward.max_len - pos - 1)
        draft = lookup_draft(prompt + rows[0], min(config.lookahead, room)) if speculate else []
        if not draft:
            logits = forward(nxt[:, None], pos)[:, -1]
            pos += 1
            continue
        block = torch.tensor([[int(nxt)] + draft], device=device)
        block_logits = forward(block, pos)[0]  # (1 + len(draft), V): position i predicts draft[i]
        used = 0  # draft tokens that equal the greedy choice of the distribution picked from, in order
        while used < len(draft) and not reason[0]:
            dist = next_logprobs(block_logits[used:used + 1], rows, [True], next_dist)
            if int(dist[0].argmax()) != draft[used]:
                break
            accept(0, draft[used], float(dist[0, draft[used]]))
            dist = None
            used += 1
        pos += 1 + used
        logits = block_logits[used:used + 1]
        if used:
            yield Step(rows, [bool(x) for x in reason])
    if config.max_tokens == 0:
        reason = ["length"] * config.n
    if result is not None:
        result[:] = [Candidate(t, l, r) for t, l, r in zip(rows, logprob, reason)]


def cached_after(prompt: list[int], candidate: Candidate) -> list[int]:
    """The tokens a one-row cache surely holds after `stream` made `candidate` from `prompt`: the
    prompt and every generated token that was fed back, which is all but the last one unless a stop
    token (fed after it) ended the row. A session keeps these for the next request's prefix reuse."""
    fed = len(prompt) + len(candidate.tokens) - (0 if candidate.finish_reason == "stop" else 1)
    return (prompt + candidate.tokens)[:fed]


def shared_prefix(cached: list[int], prompt: list[int]) -> int:
    """How many leading tokens of `prompt` a cache holding `cached` already has: their common prefix,
    at most all but the prompt's last token (the loop needs one token to compute)."""
    limit = min(len(cached), len(prompt) - 1)
    n = 0
    while n < limit and cached[n] == prompt[n]:
        n += 1
    return n


def generate(model: Transformer, prompt: list[int], config: GenerationConfig, *, cache: KVCache | None = None,
             start_pos: int = 0, first_allowed: torch.Tensor | None = None,
             stop_rule: Callable[[list[int]], bool] | None = None,
             next_dist: NextDist | None = None) -> list[Candidate]:
    """Run `stream` to the end over `model`; a fresh one-row cache of the right size is made when none
    is given (`start_pos` then counts for nothing)."""
    if cache is None:
        start_pos = 0
    forward = model_forward(model, cache, len(prompt) + config.max_tokens)
    result: list[Candidate] = []
    for _ in stream(forward, prompt, config, start_pos=start_pos, first_allowed=first_allowed,
                    stop_rule=stop_rule, next_dist=next_dist, result=result):
        pass
    return result


def lookup_draft(history: list[int], k: int, ngram: int = 3) -> list[int]:
    """Prompt-lookup drafting: the tokens that followed an earlier occurrence of the last `ngram`
    (else ngram - 1, down to 2) tokens of `history`; at most k of them.

    The latest occurrence with k tokens after it wins; failing that, the one with the most.
    """
    if k <= 0:
        return []
    for n in range(ngram, 1, -1):
        if len(history) <= n:
            continue
        tail = history[-n:]
        first = tail[0]
        best: list[int] = []
        for i in range(len(history) - n - 1, -1, -1):
            if history[i] == first and history[i:i + n] == tail:
                follow = history[i + n:i + n + k]
                if len(follow) == k:
                    return follow
                if len(follow) > len(best):
                    best = follow
        if best:
            return best
    return []


@torch.inference_mode()
def token_logprobs(logits_of: Callable[[torch.Tensor], torch.Tensor], prompt: list[int],
                   continuations: list[list[int]], device: torch.device | str = "cpu") -> list[list[float]]:
    """The log-probability of each token of each continuation after `prompt`: one batched, cacheless
    forward (`logits_of(ids (B, T)) -> (B, T, V)`), padded on the right, which a causal model never
    sees from the positions before the pad."""
    longest = max(len(c) for c in continuations)
    rows = torch.tensor([prompt + c + [0] * (longest - len(c)) for c in continuations], device=device)
    logprobs = torch.log_softmax(logits_of(rows)[:, len(prompt) - 1:-1].float(), dim=-1)  # predicts continuations
    return [logprobs[r, torch.arange(len(c), device=device), torch.tensor(c, device=device, dtype=torch.long)].tolist()
            for r, c in enumerate(continuations)]


def score(model: Transformer, prompt: list[int], continuations: list[list[int]]) -> list[float]:
    """Log-likelihood of each continuation after `prompt` under an infill model (`token_logprobs`)."""
    device = next(model.parameters()).device
    return [math.fsum(lps) for lps in token_logprobs(model, prompt, continuations, device)]

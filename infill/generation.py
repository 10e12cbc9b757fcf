"""Generation over token ids: `prefill`, `decode_one_token`, `sample`, `stream`, `generate`.

Generation never sees text. The caller owns the KV cache and says where the prompt starts in it
(`start_pos`: tokens before it are already cached), so a session cache can skip a shared prefix.
The cache position advances in one place, `stream`. Text-level rules (stop strings, token healing)
reach this module as id-level callbacks and masks built by `infill.engines`.
"""
from __future__ import annotations

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


@dataclass
class Candidate:
    tokens: list[int]
    logprob: float
    """Sum of the model's log-probabilities of `tokens` (untempered), for ranking."""
    finish_reason: str
    """stop (a stop token), length (max_tokens), stop_rule (the caller's rule), time (time budget)."""


def prefill(model: Transformer, tokens: torch.Tensor, cache: KVCache, start_pos: int) -> torch.Tensor:
    """Run prompt tokens (B, T) at positions [start_pos, start_pos + T); logits (B, V) of the last one."""
    return model(tokens, start_pos=start_pos, cache=cache, last_only=True)[:, -1]


def decode_one_token(model: Transformer, token: torch.Tensor, cache: KVCache, pos: int) -> torch.Tensor:
    """One step: token (B, 1) at position `pos`; logits (B, V)."""
    return model(token, start_pos=pos, cache=cache)[:, -1]


NextDist = Callable[[list[int], torch.Tensor], torch.Tensor]
"""The hook on the next-token distribution: (a row's generated ids, the model's (V,) log-probabilities)
-> the (V,) log-probabilities to pick from."""


def hooked(logits: torch.Tensor, rows: list[list[int]], next_dist: NextDist | None) -> torch.Tensor:
    """(B, V) logits to pick from: the model's, or its log-probabilities through `next_dist` per row."""
    if next_dist is None:
        return logits
    lp = torch.log_softmax(logits.float(), dim=-1)
    return torch.stack([next_dist(row, lp[r]) for r, row in enumerate(rows)])


def sample(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None = None,
           allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token (B,) and its log-probability under the untempered model (B,).

    allowed: optional bool (V,) mask; tokens outside it are never chosen.
    """
    logits = logits.float()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    logprobs = torch.log_softmax(logits, dim=-1)
    if config.temperature == 0:
        nxt = logits.argmax(dim=-1)
    else:
        scores = logits / config.temperature
        if config.top_k is not None and config.top_k < scores.shape[-1]:
            kth = torch.topk(scores, config.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if config.top_p is not None and config.top_p < 1:
            sorted_scores, order = scores.sort(dim=-1, descending=True)
            cum = sorted_scores.softmax(-1).cumsum(-1)
            drop = cum - sorted_scores.softmax(-1) >= config.top_p  # keep the token that crosses p
            sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
            scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
        nxt = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(-1)
    return nxt, logprobs.gather(-1, nxt[:, None]).squeeze(-1)


@dataclass
class Step:
    """What `stream` yields after each generated token: every row's tokens so far."""

    tokens: list[list[int]]
    done: list[bool]


@torch.inference_mode()
def stream(model: Transformer, prompt: list[int], cache: KVCache, config: GenerationConfig, *,
           start_pos: int = 0, first_allowed: torch.Tensor | None = None,
           stop_rule: Callable[[list[int]], bool] | None = None, next_dist: NextDist | None = None,
           result: list[Candidate] | None = None) -> Iterator[Step]:
    """Generate `config.n` continuations of `prompt`, yielding after every token.

    `prompt[:start_pos]` must already be in every row of `cache`; the rest is prefilled here. With
    n > 1 the cache has n rows (see `KVCache.expand`), one per candidate. `first_allowed` constrains the first
    token (token healing, applied after `next_dist`, the hook on each row's next-token distribution;
    drafts are verified against what the hook gives); `stop_rule(tokens)` ends a row when it returns True. When the generator
    finishes, `result` (if given) is filled with one Candidate per row.
    """
    if not prompt or start_pos >= len(prompt):
        raise ValueError("stream needs at least one uncached prompt token")
    if cache.batch_size != config.n:
        raise ValueError(f"cache has {cache.batch_size} rows for n={config.n}")
    if len(prompt) + config.max_tokens > cache.max_len:
        raise ValueError(f"prompt ({len(prompt)}) + max_tokens ({config.max_tokens}) exceed the cache "
                         f"({cache.max_len} tokens)")
    device = cache.k.device
    started = time.monotonic()
    generator = None
    if config.temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(config.seed if config.seed is not None else int(time.time_ns() % 2**63))
    new = torch.tensor([prompt[start_pos:]], device=device)
    logits = prefill(model, new.expand(config.n, -1), cache, start_pos)
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
    while not all(reason) and config.max_tokens > 0:
        nxt, lp = sample(hooked(logits, rows, next_dist), config, generator, allowed)
        allowed = None
        for r, (t, l) in enumerate(zip(nxt.tolist(), lp.tolist())):
            if not reason[r]:
                accept(r, t, l)
        if not all(reason) and config.time_budget_s is not None and time.monotonic() - started > config.time_budget_s:
            reason = [x or "time" for x in reason]
        yield Step(rows, [bool(x) for x in reason])
        if all(reason):
            break
        room = min(config.max_tokens - len(rows[0]), cache.max_len - pos - 1)
        draft = lookup_draft(prompt + rows[0], min(config.lookahead, room)) if speculate else []
        if not draft:
            logits = decode_one_token(model, nxt[:, None], cache, pos)
            pos += 1
            continue
        block = torch.tensor([[int(nxt)] + draft], device=device)
        block_logits = model(block, start_pos=pos, cache=cache)[0].float()  # (1 + len(draft), V)
        used = 0  # draft tokens that equal the greedy choice of the distribution picked from, in order
        while used < len(draft) and not reason[0]:
            step_lp = torch.log_softmax(hooked(block_logits[used:used + 1], rows, next_dist), -1)[0]
            if int(step_lp.argmax()) != draft[used]:
                break
            accept(0, draft[used], float(step_lp[draft[used]]))
            used += 1
        pos += 1 + used
        logits = block_logits[used:used + 1]
        if used:
            yield Step(rows, [bool(x) for x in reason])
    if config.max_tokens == 0:
        reason = ["length"] * config.n
    if result is not None:
        result[:] = [Candidate(t, l, r) for t, l, r in zip(rows, logprob, reason)]


def generate(model: Transformer, prompt: list[int], config: GenerationConfig, *, cache: KVCache | None = None,
             start_pos: int = 0, first_allowed: torch.Tensor | None = None,
             stop_rule: Callable[[list[int]], bool] | None = None) -> list[Candidate]:
    """Run `stream` to the end; a fresh cache of the right size is made when none is given."""
    if cache is None:
        param = next(model.parameters())
        cache = KVCache(model.config, config.n, len(prompt) + config.max_tokens, device=param.device, dtype=param.dtype)
        start_pos = 0
    result: list[Candidate] = []
    for _ in stream(model, prompt, cache, config, start_pos=start_pos, first_allowed=first_allowed,
                    stop_rule=stop_rule, result=result):
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
def score(model: Transformer, prompt: list[int], continuations: list[list[int]]) -> list[float]:
    """Log-likelihood of each continuation after `prompt` (one batched forward, padded on the right)."""
    device = next(model.parameters()).device
    longest = max(len(c) for c in continuations)
    rows = [prompt + c + [0] * (longest - len(c)) for c in continuations]
    logits = model(torch.tensor(rows, device=device))
    logprobs = torch.log_softmax(logits[:, len(prompt) - 1:-1].float(), dim=-1)  # predicts continuation tokens
    out = []
    for r, cont in enumerate(continuations):
        idx = torch.tensor(cont, device=device)
        out.append(float(logprobs[r, torch.arange(len(cont), device=device), idx].sum()))
    return out

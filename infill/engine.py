"""The local engine: text in, middle text out, on top of a checkpoint directory.

This is where text meets ids. It builds the prompt (`infill.formats`), fits it to a token budget,
heals the token at the cursor, turns stop strings into an id-level rule, and keeps one session KV
cache per document so that a request which extends the previous prompt computes only the new tokens.

Rules:
- The prompt budget is trimmed at line boundaries (prefix from its start, suffix from its end), so
  the prompt stays stable while the user types within a line and the session cache keeps hitting.
- Token healing: when the prompt ends in prefix text (SPM, left-to-right), its last token is backed
  off and the first generated token must start with that token's bytes; the returned middle never
  repeats them.
- Session caches are bounded: `cache_mb` caps the sum of their KV memory; the least recently used
  goes first.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from infill import formats
from infill.checkpoint import load_checkpoint
from infill.generation import Candidate, GenerationConfig, stream
from infill.model import KVCache, Transformer
from infill.tokenizer import CodeTokenizer


@dataclass
class InfillRequest:
    """One fill-in-the-middle request."""

    prefix: str
    suffix: str = ""
    max_tokens: int = 64
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int = 1
    stop: tuple[str, ...] = ()
    """Stop strings: the middle ends before the first one."""
    stop_at: Callable[[str], int | None] | None = None
    """Where the middle ends, given the text generated so far: an index into it, or None to go on.
    Called after every token; a caller's syntax rule (e.g. the end of a block) that stop strings cannot say."""
    time_budget_s: float | None = None
    session: str | None = None
    """Key of the session cache to use (a document URI); None uses no cache."""
    ext: str | None = None
    """File extension for the metadata header, e.g. ".py"."""
    heal: bool = True
    """Token healing at the cursor (formats whose prompt ends in the prefix)."""


@dataclass
class Completion:
    text: str
    tokens: int
    logprob: float
    finish_reason: str


@dataclass
class CompletionResult:
    candidates: list[Completion]
    latency_ms: float
    prompt_tokens: int
    cached_tokens: int = 0
    """Prompt tokens served by the session cache (not recomputed)."""
    extra: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.candidates[0].text if self.candidates else ""


class SessionCache:
    """One document's KV cache and the tokens it holds."""

    def __init__(self, model: Transformer, max_len: int):
        param = next(model.parameters())
        self.cache = KVCache(model.config, 1, max_len, device=param.device, dtype=param.dtype)
        self.tokens: list[int] = []

    def reuse(self, prompt: list[int]) -> int:
        """Keep the longest common prefix with `prompt` (at most all but its last token); its length."""
        limit = min(len(self.tokens), len(prompt) - 1)
        n = 0
        while n < limit and self.tokens[n] == prompt[n]:
            n += 1
        del self.tokens[n:]
        return n


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return device


class LocalEngine:
    """Infilling with an infill checkpoint."""

    def __init__(self, model: Transformer, tokenizer: CodeTokenizer, *, cache_mb: float = 256.0,
                 prompt_format: str | None = None, name: str = "infill"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.format = prompt_format or model.config.prompt_format
        self.name = name
        self.cache_bytes = int(cache_mb * 2**20)
        self.sessions: OrderedDict[str, SessionCache] = OrderedDict()
        self.device = str(next(model.parameters()).device)

    @classmethod
    def from_dir(cls, path: str | Path, *, device: str = "auto", cache_mb: float = 256.0) -> "LocalEngine":
        device = resolve_device(device)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model, tokenizer = load_checkpoint(path, device=device, dtype=dtype)
        return cls(model, tokenizer, cache_mb=cache_mb, name=Path(path).name)

    # prompt ---------------------------------------------------------------------------------------
    def _fit(self, prefix: str, suffix: str, budget: int) -> tuple[str, str]:
        """Trim prefix (from its start) and suffix (from its end) at line boundaries to `budget` tokens."""
        tok = self.tokenizer
        pre_lines = prefix.splitlines(keepends=True)
        suf_lines = suffix.splitlines(keepends=True)
        pre_counts = [len(x) for x in tok.encode_batch(pre_lines)] if pre_lines else []
        suf_counts = [len(x) for x in tok.encode_batch(suf_lines)] if suf_lines else []
        if sum(pre_counts) + sum(suf_counts) <= budget:
            return prefix, suffix
        suf_budget = min(sum(suf_counts), budget // 4)
        keep_suf, used = 0, 0
        while keep_suf < len(suf_lines) and used + suf_counts[keep_suf] <= suf_budget:
            used += suf_counts[keep_suf]
            keep_suf += 1
        pre_budget = budget - used
        start, used = len(pre_lines), 0
        while start > 0 and used + pre_counts[start - 1] <= pre_budget:
            used += pre_counts[start - 1]
            start -= 1
        if start == len(pre_lines) and pre_lines:  # the cursor line alone is too long: keep its end
            ids = tok.encode(pre_lines[-1])[-pre_budget:] if pre_budget > 0 else []
            return tok.decode(ids), "".join(suf_lines[:keep_suf])
        return "".join(pre_lines[start:]), "".join(suf_lines[:keep_suf])

    def build_prompt(self, req: InfillRequest) -> tuple[list[int], bytes]:
        """(prompt ids, healed bytes): the bytes the middle must start with, already cut from the prompt."""
        overhead = 8 + (len(req.ext or "") + 4)
        budget = self.model.config.max_seq_len - req.max_tokens - overhead
        if budget <= 0:
            raise ValueError(f"max_tokens {req.max_tokens} leaves no room for a prompt "
                             f"(context {self.model.config.max_seq_len})")
        prefix, suffix = self._fit(req.prefix, req.suffix, budget)
        prompt = formats.infill_prompt(self.tokenizer, self.format, prefix, suffix, ext=req.ext)
        heal = b""
        if req.heal and self.format in ("spm", "l2r") and prefix and prompt[-1] not in self.tokenizer.special_ids:
            heal = self.tokenizer.token_bytes[prompt[-1]]
            prompt = prompt[:-1]
        return prompt, heal

    @lru_cache(maxsize=256)
    def _heal_mask(self, heal: bytes) -> torch.Tensor:
        table = self.tokenizer.token_bytes
        allowed = torch.zeros(self.model.config.vocab_size, dtype=torch.bool)
        special = self.tokenizer.special_ids
        for i, b in enumerate(table):
            if i not in special and b.startswith(heal):
                allowed[i] = True
        return allowed.to(self.device)

    # sessions -------------------------------------------------------------------------------------
    def _session(self, key: str, need: int) -> SessionCache:
        session = self.sessions.pop(key, None)
        if session is None or session.cache.max_len < need:
            size = max(need, min(self.model.config.max_seq_len, 2 * need))
            session = SessionCache(self.model, size)
        self.sessions[key] = session
        total = sum(s.cache.nbytes() for s in self.sessions.values())
        while total > self.cache_bytes and len(self.sessions) > 1:
            _, old = self.sessions.popitem(last=False)
            total -= old.cache.nbytes()
        return session

    def drop_session(self, key: str) -> None:
        self.sessions.pop(key, None)

    # generation -----------------------------------------------------------------------------------
    def stream_infill(self, req: InfillRequest) -> Iterator[None]:
        """Yield after every generated token (a place to cancel); return the CompletionResult."""
        started = time.perf_counter()
        prompt, heal = self.build_prompt(req)
        tok = self.tokenizer
        config = GenerationConfig(max_tokens=req.max_tokens, temperature=req.temperature, top_k=req.top_k,
                                  top_p=req.top_p, seed=req.seed, n=req.n,
                                  stop_ids=formats.stop_ids(tok, self.format), time_budget_s=req.time_budget_s)
        need = len(prompt) + req.max_tokens
        session = self._session(req.session, need) if req.session is not None else None
        if session is not None:
            start, cache = session.reuse(prompt), session.cache
        else:
            start, cache = 0, KVCache(self.model.config, 1, need, device=self.device,
                                      dtype=next(self.model.parameters()).dtype)
        cached = start
        if req.n > 1:  # prefill once, then copy the cache into n rows
            if start < len(prompt) - 1:
                with torch.inference_mode():
                    self.model(torch.tensor([prompt[start:-1]], device=self.device), start_pos=start,
                               cache=cache, last_only=True)
            if session is not None:
                session.tokens = prompt[:-1]
            cache, start = cache.expand(req.n), len(prompt) - 1

        def text_of(ids: list[int]) -> str:
            raw = tok.token_bytes_concat(ids)
            return raw[len(heal):].decode("utf-8", errors="replace") if raw.startswith(heal) else raw.decode("utf-8", errors="replace")

        def end_of(text: str) -> int | None:
            ends = [text.index(s) for s in req.stop if s in text]
            if req.stop_at is not None and (at := req.stop_at(text)) is not None:
                ends.append(at)
            return min(ends) if ends else None

        stop_rule = (lambda ids: end_of(text_of(ids)) is not None) if req.stop or req.stop_at else None
        first_allowed = self._heal_mask(heal) if heal else None
        result: list[Candidate] = []
        for _ in stream(self.model, prompt, cache, config, start_pos=start, first_allowed=first_allowed,
                        stop_rule=stop_rule, result=result):
            yield
        if session is not None and req.n == 1:
            row = result[0]
            fed = len(prompt) + len(row.tokens) - (0 if row.finish_reason == "stop" else 1)
            session.tokens = (prompt + row.tokens)[:fed]
        completions = {}
        for c in result:
            text = text_of(c.tokens)
            if (end := end_of(text)) is not None:
                text = text[:end]
            if text not in completions or completions[text].logprob < c.logprob:
                completions[text] = Completion(text, len(c.tokens), c.logprob, c.finish_reason)
        ranked = sorted(completions.values(), key=lambda c: -c.logprob)
        return CompletionResult(ranked, (time.perf_counter() - started) * 1000, len(prompt), cached)

    def infill(self, req: InfillRequest) -> CompletionResult:
        gen = self.stream_infill(req)
        while True:
            try:
                next(gen)
            except StopIteration as done:
                return done.value

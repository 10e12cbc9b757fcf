"""The local engine: text in, middle text out, on top of a checkpoint directory.

This is where text meets ids for an infill checkpoint. It builds the prompt (`infill.formats`), fits it to a token budget,
heals the token at the cursor, turns stop strings into an id-level rule, and keeps one session KV
cache per document so that a request which extends the previous prompt computes only the new tokens.

Rules:
- The prompt budget is trimmed at line boundaries (prefix from its start, suffix from its end), so
  the prompt stays stable while the user types within a line and the session cache keeps hitting.
- Token healing: when the prompt ends in prefix text (SPM, left-to-right), its last token is backed
  off and the first generated token must start with that token's bytes; the returned middle never
  repeats them. A token that ends in a space and is longer than it (the indentation of a blank line,
  `" = "` after `x = `) is healed as its text less that space in the prompt and one space to start
  with: the pre-split gives the space before a word or a bracket to that word (`"        x"` is 7
  spaces + `" x"`, `"x = y"` is `" ="` + `" y"`), so no token starting with the whole token ever
  preceded code in training, and healing on it made the model indent further or skip the word.
- Session caches are bounded: `cache_mb` caps the sum of their KV memory; the least recently used
  goes first (`infill.engines.base.SessionPool`).
- Repository context (`InfillRequest.context`) comes first, each file behind its header and ended by
  EOS (`formats.context_prompt`, the layout of repository-level packing), within `fit_context`'s
  budget; the prefix and suffix fit in what is left.
- Several holes (`stream_infill_holes`, with the tokenizer's InCoder mask tokens): one pass in the
  multi-mask format, `K0 <M0> K1 ... Kn <Mn> <M0> F0 <EOM> <M1> F1 <EOM> ...`, the sequence causal
  masking trained on (`formats.encode_incoder`). Each fill is generated after its mask sentinel until
  `<EOM>` under the stop rule, on one KV cache, so a fill sees the text after every hole and the fills
  before it. The prompt ends in a sentinel, never in prefix text, so nothing is healed. A fill cut by
  the stop rule enters the sequence as its cut text. The first and last pieces are fitted to what the
  holes' budgets leave (`fit_lines`); the pieces between the holes are kept whole.
- Scoring uses the prompt generation would use (fitted the same way, never healed), so a score is
  the probability of exactly what generation could have produced.
"""
from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path

import torch

from infill import formats
from infill.checkpoint import load_checkpoint
from infill.engines.base import (SCORE_RESERVE, CannotFill, CannotScore, Completion, CompletionResult, HolesResult,
                                 InfillRequest, SessionPool, check_holes, end_of, fit_context, fit_lines,
                                 prompt_budget, rank, run_to_end, sequential_holes, windowed_logprob)
from infill.generation import Candidate, GenerationConfig, stream
from infill.generation import score as score_ids
from infill.model import KVCache, Transformer
from infill.tokenizer import CodeTokenizer


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
    """Infilling and scoring with an infill checkpoint."""

    def __init__(self, model: Transformer, tokenizer: CodeTokenizer, *, cache_mb: float = 256.0,
                 prompt_format: str | None = None, name: str = "infill"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.format = prompt_format or model.config.prompt_format
        self.name = name
        self.sessions: SessionPool[SessionCache] = SessionPool(cache_mb, lambda s: s.cache.nbytes())
        self.device = str(next(model.parameters()).device)
        self.max_holes = max(tokenizer.n_masks - 1, 0)
        caps = {"infill", "score", "sampled_logprobs", "text_score"}
        self.unavailable: dict[str, str] = {}
        if self.max_holes >= 1:
            caps |= {"multi_hole_score", "multi_hole"}
        else:
            self.unavailable["multi_hole_score"] = "the tokenizer has no InCoder mask tokens"
            self.unavailable["multi_hole"] = "holes are filled one at a time (the tokenizer has no InCoder mask tokens)"
        self.capabilities = frozenset(caps)
        self._heal_masks: dict[bytes, torch.Tensor] = {}
        """Per engine (an lru_cache on the method would keep every engine, model included, alive)."""

    @classmethod
    def from_dir(cls, path: str | Path, *, device: str = "auto", cache_mb: float = 256.0) -> "LocalEngine":
        device = resolve_device(device)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model, tokenizer = load_checkpoint(path, device=device, dtype=dtype)
        return cls(model, tokenizer, cache_mb=cache_mb, name=Path(path).name)

    # prompt ---------------------------------------------------------------------------------------
    def _fit(self, prefix: str, suffix: str, budget: int) -> tuple[str, str]:
        tok = self.tokenizer
        count = lambda lines: [len(x) for x in tok.encode_batch(lines)]  # noqa: E731
        tail = lambda line, room: tok.decode(tok.encode(line)[-room:]) if room > 0 else ""  # noqa: E731
        return fit_lines(prefix, suffix, budget, count, tail)

    def build_prompt(self, req: InfillRequest) -> tuple[list[int], bytes]:
        """(prompt ids, healed bytes): the bytes the middle must start with, already cut from the prompt."""
        prompt, heal, _ = self._prompt(req)
        return prompt, heal

    def _prompt(self, req: InfillRequest) -> tuple[list[int], bytes, tuple[list[str], int]]:
        """`build_prompt`, and (paths, tokens) of the repository context it holds."""
        budget = prompt_budget(self.model.config.max_seq_len, req)
        count = lambda texts: [len(x) for x in self.tokenizer.encode_batch(texts)]  # noqa: E731
        context, _ = fit_context(req, budget, count)
        context_ids = formats.context_prompt(self.tokenizer, context[::-1])  # the best nearest the file
        prefix, suffix = self._fit(req.prefix, req.suffix, budget - len(context_ids))
        prompt = context_ids + formats.infill_prompt(self.tokenizer, self.format, prefix, suffix, ext=req.ext)
        heal = b""
        if req.heal and formats.ends_in_prefix(self.format) and prefix and prompt[-1] not in self.tokenizer.special_ids:
            heal = self.tokenizer.token_bytes[prompt[-1]]
            prompt = prompt[:-1]
            if len(heal) > 1 and heal.endswith(b" "):  # a space that belongs to the next word (module rules)
                prompt = prompt + self.tokenizer.encode(heal[:-1].decode())
                heal = b" "
        return prompt, heal, (list(dict.fromkeys(path for path, _ in context)), len(context_ids))

    def _heal_mask(self, heal: bytes) -> torch.Tensor:
        if heal not in self._heal_masks:
            if len(self._heal_masks) >= 256:
                self._heal_masks.pop(next(iter(self._heal_masks)))
            special = self.tokenizer.special_ids
            allowed = torch.zeros(self.model.config.vocab_size, dtype=torch.bool)
            for i, b in enumerate(self.tokenizer.token_bytes):
                if i not in special and b.startswith(heal):
                    allowed[i] = True
            self._heal_masks[heal] = allowed.to(self.device)
        return self._heal_masks[heal]

    # sessions -------------------------------------------------------------------------------------
    def _session(self, key: str, need: int) -> SessionCache:
        def make(old: SessionCache | None) -> SessionCache:
            if old is None or old.cache.max_len < need:
                return SessionCache(self.model, max(need, min(self.model.config.max_seq_len, 2 * need)))
            return old
        return self.sessions.get(key, make)

    def drop_session(self, key: str) -> None:
        self.sessions.drop(key)

    # generation -----------------------------------------------------------------------------------
    def stream_infill(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """Yield after every generated token (a place to cancel); return the CompletionResult."""
        started = time.perf_counter()
        prompt, heal, context = self._prompt(req)
        tok = self.tokenizer
        config = replace(req.config, stop_ids=formats.stop_ids(tok, self.format))
        need = len(prompt) + config.max_tokens
        session = self._session(req.session, need) if req.session is not None else None
        if session is not None:
            start, cache = session.reuse(prompt), session.cache
        else:
            start, cache = 0, KVCache(self.model.config, 1, need, device=self.device,
                                      dtype=next(self.model.parameters()).dtype)
        cached = start
        if config.n > 1:  # prefill once, then copy the cache into n rows
            if start < len(prompt) - 1:
                with torch.inference_mode():
                    self.model(torch.tensor([prompt[start:-1]], device=self.device), start_pos=start,
                               cache=cache, last_only=True)
            if session is not None:
                session.tokens = prompt[:-1]
            cache, start = cache.expand(config.n), len(prompt) - 1

        def text_of(ids: list[int]) -> str:
            raw = tok.token_bytes_concat(ids)
            return (raw[len(heal):] if raw.startswith(heal) else raw).decode("utf-8", errors="replace")

        stop_rule = None
        if req.stop or req.stop_at:
            stop_rule = lambda ids: end_of(text_of(ids), req) is not None  # noqa: E731
        first_allowed = self._heal_mask(heal) if heal else None
        result: list[Candidate] = []
        for _ in stream(self.model, prompt, cache, config, start_pos=start, first_allowed=first_allowed,
                        stop_rule=stop_rule, result=result):
            yield
        if session is not None and config.n == 1:
            row = result[0]
            fed = len(prompt) + len(row.tokens) - (0 if row.finish_reason == "stop" else 1)
            session.tokens = (prompt + row.tokens)[:fed]
        ranked = rank(((text_of(c.tokens), len(c.tokens), c.logprob, c.finish_reason) for c in result), req)
        files, context_tokens = context
        return CompletionResult(ranked, (time.perf_counter() - started) * 1000, len(prompt), cached,
                                extra={"context_tokens": context_tokens, "context_files": files})

    def infill(self, req: InfillRequest) -> CompletionResult:
        return run_to_end(self.stream_infill(req))

    @property
    def context(self) -> int:
        return self.model.config.max_seq_len

    def stream_infill_holes(self, pieces: list[str], config: GenerationConfig, *, written: list[str] | None = None,
                            ext: str | None = None, stop_at=None) -> Generator[None, None, HolesResult]:
        """Every hole in one pass in InCoder's multi-mask format (module rules); one at a time without
        mask tokens. Yields after every generated token."""
        if "multi_hole" not in self.capabilities:
            return (yield from sequential_holes(self, pieces, config, written=written, ext=ext, stop_at=stop_at))
        started = time.perf_counter()
        tok = self.tokenizer
        holes = check_holes(pieces, config, self.context, self.max_holes)
        pieces = self._fit_pieces(pieces, holes, config, ext)
        ids = formats.encode_incoder(tok, pieces, [None] * holes, ext=ext).ids  # ... <Mn> <M0>
        prompt_tokens = len(ids)
        config = replace(config, n=1, stop_ids=formats.stop_ids(tok, "incoder"))
        param = next(self.model.parameters())
        cache = KVCache(self.model.config, 1, len(ids) + holes * (config.max_tokens + 2), device=self.device,
                        dtype=param.dtype)
        fed, fills = 0, []
        for j in range(holes):
            if j:
                ids = ids + [tok.eom_id, tok.mask_id(j)]
            rule = None
            if stop_at is not None:
                rule = lambda t: stop_at(tok.decode(t)) is not None  # noqa: E731
            budget = config.time_budget_s
            if budget is not None:
                budget = max(budget - (time.perf_counter() - started), 0.001)
            result: list[Candidate] = []
            for _ in stream(self.model, ids, cache, replace(config, time_budget_s=budget), start_pos=fed,
                            stop_rule=rule, result=result):
                yield
            row = result[0]
            in_cache = ids + row.tokens[:len(row.tokens) - (0 if row.finish_reason == "stop" else 1)]
            text, fill = tok.decode(row.tokens), row.tokens
            if stop_at is not None and (end := stop_at(text)) is not None:
                text = text[:end]
                cut = tok.encode(text)
                fill = cut if len(cut) <= len(row.tokens) else fill  # within the hole's room in the cache
            ids = ids + fill
            fed = 0
            while fed < min(len(in_cache), len(ids) - 1) and in_cache[fed] == ids[fed]:
                fed += 1
            fills.append(Completion(text, len(row.tokens), row.logprob, row.finish_reason))
        return HolesResult(fills, (time.perf_counter() - started) * 1000, "joint", prompt_tokens,
                           extra={"ids": ids + [tok.eom_id]})

    def _fit_pieces(self, pieces: list[str], holes: int, config: GenerationConfig, ext: str | None) -> list[str]:
        """The pieces with the first cut from its start and the last from its end to fit what the holes'
        budgets leave of the context; `CannotFill` when the pieces between the holes alone do not fit."""
        tok = self.tokenizer
        budget = self.context - holes * (config.max_tokens + 2) - (12 + len(ext or "")) - (holes + 1)
        inner = sum(len(x) for x in tok.encode_batch(pieces[1:-1])) if holes > 1 else 0
        if inner >= budget:
            raise CannotFill(f"the code between the first and the last hole ({inner} tokens) leaves no room in the "
                             f"{self.context}-token context; fill fewer holes or lower maxTokens")
        first, last = self._fit(pieces[0], pieces[-1], budget - inner)
        return [first, *pieces[1:-1], last]

    def infill_holes(self, pieces: list[str], config: GenerationConfig, **kw) -> HolesResult:
        return run_to_end(self.stream_infill_holes(pieces, config, **kw))

    # scoring --------------------------------------------------------------------------------------
    def _end_id(self) -> int:
        return formats.end_id(self.tokenizer, self.format)

    def score(self, prefix: str, suffix: str, middle: str, *, ext: str | None = None, end: bool = True) -> float:
        """Log-probability of `middle` (and, with `end`, the end-of-middle token) after the prompt of
        (prefix, suffix) in this model's format, fitted to the context as for generation, unhealed."""
        ids = self.tokenizer.encode(middle) + ([self._end_id()] if end else [])
        if not ids:
            return 0.0
        try:
            prompt, _ = self.build_prompt(InfillRequest(prefix, suffix,
                                                        GenerationConfig(max_tokens=max(len(ids), SCORE_RESERVE)),
                                                        ext=ext, heal=False))
        except ValueError as exc:
            raise CannotScore(str(exc)) from None
        return score_ids(self.model, prompt, [ids])[0]

    def score_holes(self, pieces: list[str], fills: list[list[str]], *, ext: str | None = None) -> list[float]:
        """InCoder multi-hole log-probabilities: `K0 <M0> K1 ... <Mn> <M0> F0 <EOM> <M1> F1 <EOM> ...`."""
        tok = self.tokenizer
        holes = len(pieces) - 1
        if holes < 1 or holes > self.max_holes:
            raise CannotScore(f"{holes} holes: this model scores 1 to {self.max_holes}")
        if any(len(f) != holes for f in fills):
            raise ValueError(f"each fill needs {holes} texts")
        if not fills:
            return []
        prompt = formats.encode_incoder(tok, pieces, [None] * holes, ext=ext).ids
        continuations = []
        for fill in fills:
            cont: list[int] = []
            for j, text in enumerate(fill):
                cont += ([tok.mask_id(j)] if j else []) + tok.encode(text) + [tok.eom_id]
            continuations.append(cont)
        if len(prompt) + max(len(c) for c in continuations) > self.model.config.max_seq_len:
            raise CannotScore("the holes and their text are longer than the context")
        return score_ids(self.model, prompt, continuations)

    def score_text(self, text: str, *, window: int | None = None) -> tuple[float, int]:
        """Left-to-right log-likelihood of `text` after EOS (the document separator of training)."""
        ids = [self.tokenizer.eos_id] + self.tokenizer.encode(text)
        context = self.model.config.max_seq_len
        return windowed_logprob(ids, min(window or context, context), self._chunk_logprobs)

    @torch.inference_mode()
    def _chunk_logprobs(self, chunk: list[int]) -> list[float]:
        x = torch.tensor([chunk], device=self.device)
        logprobs = torch.log_softmax(self.model(x)[0, :-1].float(), dim=-1)
        return logprobs.gather(-1, x[0, 1:, None]).squeeze(-1).tolist()

"""What the engines with logits share (local, transformers): one request path over `generation.stream`.

An engine with logits plugs in its model (a `generation.Forward` over its cache), its tokenizer and
its prompt format; the rules below are written here once and hold for both alike.

Rules:
- One decode loop: `stream_infill` runs `infill.generation.stream`, with the engine's `Forward`, the
  healing mask and the hook on the next-token distribution that `next_dist_for` gives for the request.
- Token healing: when the prompt ends in prefix text (SPM, left-to-right), its last token is backed
  off and the first generated token must start with that token's text (bytes on the local engine,
  text on the transformers one); the returned middle never repeats it. A token that ends in a space
  and is longer than it (the indentation of a blank line, `" = "` after `x = `) is healed as its
  text less that space in the prompt and one space to start with: the pre-split gives the space
  before a word or a bracket to that word (`"        x"` is 7 spaces + `" x"`, `"x = y"` is `" ="` +
  `" y"`), so no token starting with the whole token ever preceded code in training, and healing on
  it made the model indent further or skip the word.
- Session caches: one per key (a document) in a `SessionPool`, holding `tokens`, the ids its cache
  surely has. A request reuses their common prefix with its prompt (`generation.shared_prefix`) and
  computes only the rest; after it the session keeps `generation.cached_after` (n = 1) or the prompt
  (n > 1: the loop prefilled one row and decoded in copies). A cancelled request leaves the prefix
  it reused, which is still right.
- Scoring uses the prompt generation would use (fitted the same way, never healed), so a score is
  the probability of exactly what generation could have produced; continuations are scored in one
  padded batch (`generation.token_logprobs`), a document in overlapping windows (`windowed_logprob`).
- InCoder multi-hole scoring: `K0 <M0> K1 ... <Mn> <M0> F0 <EOM> <M1> F1 <EOM> ...`.
- Several holes (`stream_infill_holes`, with InCoder mask tokens: "multi_hole"): one pass in that
  multi-mask format, the sequence causal masking trains on (`formats.encode_incoder`). Each fill is
  generated after its mask sentinel until `<EOM>` (or a mask sentinel) by the one decode loop, under the stop rule and the
  request's `next_dist_for` hook (asked per hole, with the document as filled so far around the
  hole), on one cache, so a fill sees the text after every hole and the fills before it. The prompt
  ends in a sentinel, never in prefix text, so nothing is healed. A fill cut by the stop rule enters
  the sequence as its cut text. The first and last pieces are fitted to what the holes' budgets
  leave (`fit_lines`); the pieces between the holes are kept whole. Without mask tokens the holes are
  filled one at a time (`base.sequential_holes`).
"""
from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import replace
from typing import Any

import torch

from infill.engines.mixture import CacheModel
from infill.engines.base import (SCORE_RESERVE, CannotFill, CannotScore, Completion, CompletionResult, HolesResult,
                                 InfillRequest, check_holes, end_of, fit_lines, rank, run_to_end, sequential_holes,
                                 windowed_logprob)
from infill.generation import (Candidate, Forward, GenerationConfig, NextDist, cached_after, shared_prefix, stream,
                               token_logprobs)

MAX_HEAL_MASKS = 256
"""Heal masks kept per engine (one per healed token text seen)."""


class LogitEngine:
    """The shared half of an engine that has the model's logits. The engine provides:

    `model`, `device`, `context` (tokens the model reads), `vocab_size` (logits per position),
    `sessions` (a `SessionPool` of objects with `tokens` and `cache`), `stop_ids`, `end_id`,
    `start_id` (what a document starts after), `mask_ids`/`eom_id` (InCoder tokens, if any),
    `capabilities`/`unavailable`/`max_holes`, and the methods marked "engine" below.
    """

    model: Any
    device: str
    context: int
    vocab_size: int
    stop_ids: frozenset[int]
    end_id: int | None
    start_id: int
    mask_ids: list[int]
    eom_id: int | None
    max_holes: int
    capabilities: frozenset[str]
    unavailable: dict[str, str]

    # engine ---------------------------------------------------------------------------------------
    def _prompt(self, req: InfillRequest) -> tuple[list[int], Any, tuple[list[str], int]]:
        """(prompt ids, healed piece, (context paths, context tokens)); heals with `_healed`."""
        raise NotImplementedError

    def _pieces(self) -> Sequence[Any]:
        """Every token's own piece (bytes or text), indexed by id; healing compares these."""
        raise NotImplementedError

    def _special(self) -> frozenset[int]:
        """Ids never healed on nor allowed as a healed first token."""
        raise NotImplementedError

    def _respell(self, piece: Any) -> list[int] | None:
        """Ids that spell `piece` exactly, or None where no encoding does."""
        raise NotImplementedError

    def _encode(self, text: str) -> list[int]:
        """Ids of `text`, literally (no special tokens added)."""
        raise NotImplementedError

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each user text (cleaned as for a prompt), for the cache model; an engine may batch it."""
        return [self._encode(self._clean(t)) for t in texts]

    def _clean(self, text: str) -> str:
        """User text as it may enter a prompt (the transformers engine strips special-token strings)."""
        return text

    def _text(self, ids: list[int], heal: Any) -> str:
        """The text of generated ids, less the healed piece they start with."""
        raise NotImplementedError

    def _session(self, key: str, need: int):
        """The session of `key`, with room for `need` tokens."""
        raise NotImplementedError

    def _forward(self, cache, need: int) -> Forward:
        """The forward seam over a session's one-row cache, or over a fresh one of `need` tokens (None)."""
        raise NotImplementedError

    def _logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of ids (B, T) by one cacheless forward."""
        raise NotImplementedError

    def _holes_prompt(self, pieces: list[str], ext: str | None) -> list[int]:
        """InCoder's `K0 <M0> K1 ... <Mn> <M0>` for `pieces`."""
        raise NotImplementedError

    def _extra(self) -> dict:
        """What this engine adds to `CompletionResult.extra`."""
        return {}

    # the hook -------------------------------------------------------------------------------------
    def next_dist_for(self, req: InfillRequest, prompt: list[int], first_allowed: torch.Tensor | None = None
                      ) -> NextDist | None:
        """The hook on the next-token distribution for this request (`generation.NextDist`), or None
        for the model's own. Both engines with logits ask here and nowhere else: with `req.cache`, the
        cache model (`infill.engines.mixture`) over the request's document and sources, mixed with
        the model's distribution; `first_allowed` is token healing's mask, which applies to both."""
        if req.cache is None:
            return None
        if "_cache_model" not in self.__dict__:
            self._cache_model = CacheModel(self.vocab_size, self._encode_batch, self._special())
        return self._cache_model.next_dist(req, prompt, first_allowed)

    # healing --------------------------------------------------------------------------------------
    def _healed(self, ids: list[int], req: InfillRequest, ends_in_prefix: bool, prefix: str) -> tuple[list[int], Any]:
        """(prompt ids, healed piece) by the healing rule (module docstring); an empty piece: no healing."""
        pieces = self._pieces()
        if not (req.heal and ends_in_prefix and prefix and ids and ids[-1] not in self._special()):
            return ids, pieces[0][:0]
        heal, ids = pieces[ids[-1]], ids[:-1]
        space = heal[-1:]
        if len(heal) > 1 and space in (" ", b" "):  # a space that belongs to the next word
            shorter = self._respell(heal[:-1])
            if shorter is not None:
                return ids + shorter, space
        return ids, heal

    def _heal_mask(self, heal: Any) -> torch.Tensor:
        """Bool (V,): the tokens that may come first after healing `heal` (those starting with it)."""
        masks = self.__dict__.setdefault("_heal_masks", {})  # per engine: an lru_cache would keep the model alive
        if heal not in masks:
            if len(masks) >= MAX_HEAL_MASKS:
                masks.pop(next(iter(masks)))
            special = self._special()
            allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
            for i, piece in enumerate(self._pieces()[:self.vocab_size]):
                if i not in special and piece.startswith(heal):
                    allowed[i] = True
            masks[heal] = allowed.to(self.device)
        return masks[heal]

    # generation -----------------------------------------------------------------------------------
    def drop_session(self, key: str) -> None:
        self.sessions.drop(key)
        if "_cache_model" in self.__dict__:
            self._cache_model.drop_document(key)

    def stream_infill(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """Yield after every generated token (a place to cancel); return the CompletionResult."""
        started = time.perf_counter()
        prompt, heal, (files, context_tokens) = self._prompt(req)
        config = replace(req.config, stop_ids=self.stop_ids)
        need = len(prompt) + config.max_tokens
        session = self._session(req.session, need) if req.session is not None else None
        start = 0
        if session is not None:
            start = shared_prefix(session.tokens, prompt)
            del session.tokens[start:]
        forward = self._forward(session.cache if session is not None else None, need)
        stop_rule = None
        if req.stop or req.stop_at:
            stop_rule = lambda ids: end_of(self._text(ids, heal), req) is not None  # noqa: E731
        result: list[Candidate] = []
        first_allowed = self._heal_mask(heal) if heal else None
        next_dist = self.next_dist_for(req, prompt, first_allowed)
        for _ in stream(forward, prompt, config, start_pos=start, first_allowed=first_allowed,
                        stop_rule=stop_rule, next_dist=next_dist, result=result):
            yield
        if session is not None:
            session.tokens = cached_after(prompt, result[0]) if config.n == 1 else list(prompt)
        ranked = rank(((self._text(c.tokens, heal), len(c.tokens), c.logprob, c.finish_reason) for c in result), req)
        return CompletionResult(ranked, (time.perf_counter() - started) * 1000, len(prompt), start,
                                extra={**self._extra(), "context_tokens": context_tokens, "context_files": files,
                                       "cache": next_dist is not None})

    def infill(self, req: InfillRequest) -> CompletionResult:
        return run_to_end(self.stream_infill(req))

    # several holes ----------------------------------------------------------------------------------
    def stream_infill_holes(self, pieces: list[str], config: GenerationConfig, *, written: list[str] | None = None,
                            ext: str | None = None, stop_at=None) -> Generator[None, None, HolesResult]:
        """Every hole in one pass in InCoder's multi-mask format (module rules); one at a time without
        mask tokens. Yields after every generated token."""
        if "multi_hole" not in self.capabilities:
            return (yield from sequential_holes(self, pieces, config, written=written, ext=ext, stop_at=stop_at))
        started = time.perf_counter()
        holes = check_holes(pieces, config, self.context, self.max_holes)
        pieces = self._fit_pieces(pieces, holes, config, ext)
        ids = self._holes_prompt(pieces, ext)  # ... <Mn> <M0>
        prompt_tokens = len(ids)
        # a fill ends at <EOM>; a mask sentinel inside a fill can only mean the same (never text)
        config = replace(config, n=1, stop_ids=frozenset({self.eom_id, *self.mask_ids, *self.stop_ids}))
        forward = self._forward(None, len(ids) + holes * (config.max_tokens + 2))
        fed, fills, unhealed = 0, [], self._pieces()[0][:0]  # an empty piece: nothing healed
        for j in range(holes):
            if j:
                ids = ids + [self.eom_id, self.mask_ids[j]]
            rule = None
            if stop_at is not None:
                rule = lambda t: stop_at(self._text(t, unhealed)) is not None  # noqa: E731
            budget = config.time_budget_s
            if budget is not None:
                budget = max(budget - (time.perf_counter() - started), 0.001)
            done = "".join(p + f.text for p, f in zip(pieces, fills))
            hook = self.next_dist_for(InfillRequest(done + pieces[j], "".join(pieces[j + 1:]), config, ext=ext), ids)
            result: list[Candidate] = []
            for _ in stream(forward, ids, replace(config, time_budget_s=budget), start_pos=fed, stop_rule=rule,
                            next_dist=hook, result=result):
                yield
            row = result[0]
            in_cache = cached_after(ids, row)
            text, fill = self._text(row.tokens, unhealed), row.tokens
            if stop_at is not None and (end := stop_at(text)) is not None:
                text = text[:end]
                cut = self._encode(self._clean(text))
                fill = cut if len(cut) <= len(row.tokens) else fill  # within the hole's room in the cache
            ids = ids + fill
            fed = shared_prefix(in_cache, ids)
            fills.append(Completion(text, len(row.tokens), row.logprob, row.finish_reason))
        return HolesResult(fills, (time.perf_counter() - started) * 1000, "joint", prompt_tokens,
                           extra={"ids": ids + [self.eom_id]})

    def infill_holes(self, pieces: list[str], config: GenerationConfig, **kw) -> HolesResult:
        return run_to_end(self.stream_infill_holes(pieces, config, **kw))

    def _fit_pieces(self, pieces: list[str], holes: int, config: GenerationConfig, ext: str | None) -> list[str]:
        """The pieces with the first cut from its start and the last from its end to fit what the holes'
        budgets leave of the context; `CannotFill` when the pieces between the holes alone do not fit."""
        pieces = [self._clean(p) for p in pieces]
        count = lambda texts: [len(self._encode(t)) for t in texts]  # noqa: E731
        budget = self.context - holes * (config.max_tokens + 2) - (12 + len(ext or "")) - (holes + 1)
        inner = sum(count(pieces[1:-1]))
        if inner >= budget:
            raise CannotFill(f"the code between the first and the last hole ({inner} tokens) leaves no room in the "
                             f"{self.context}-token context; fill fewer holes or lower maxTokens")
        first, last = fit_lines(pieces[0], pieces[-1], budget - inner, count)
        return [first, *pieces[1:-1], last]

    # scoring --------------------------------------------------------------------------------------
    def _continuation_logprobs(self, prompt: list[int], continuations: list[list[int]]) -> list[float]:
        """Log-probability of each continuation after `prompt`, one padded batch (no cache)."""
        return [math.fsum(lps) for lps in token_logprobs(self._logits, prompt, continuations, self.device)]

    def _chunk_logprobs(self, chunk: list[int]) -> list[float]:
        """The log-probability of chunk[i] after chunk[:i], for i >= 1."""
        return token_logprobs(self._logits, chunk[:1], [chunk[1:]], self.device)[0]

    def score(self, prefix: str, suffix: str, middle: str, *, ext: str | None = None, end: bool = True) -> float:
        """Log-probability of `middle` (and, with `end`, the token that ends a middle) after the prompt
        of (prefix, suffix), fitted to the context as for generation, unhealed."""
        if "score" not in self.capabilities:
            raise CannotScore(self.unavailable["score"])
        ids = self._encode(self._clean(middle)) + ([self.end_id] if end else [])
        if not ids:
            return 0.0
        try:
            config = GenerationConfig(max_tokens=max(len(ids), SCORE_RESERVE))
            prompt = self._prompt(InfillRequest(prefix, suffix, config, ext=ext, heal=False))[0]
        except ValueError as exc:
            raise CannotScore(str(exc)) from None
        return self._continuation_logprobs(prompt, [ids])[0]

    def score_holes(self, pieces: list[str], fills: list[list[str]], *, ext: str | None = None) -> list[float]:
        """InCoder multi-hole log-probabilities of each fill, one batch."""
        holes = len(pieces) - 1
        if holes < 1 or holes > self.max_holes:
            raise CannotScore(self.unavailable.get("multi_hole_score")
                              or f"{holes} holes: this model scores 1 to {self.max_holes}")
        if any(len(f) != holes for f in fills):
            raise ValueError(f"each fill needs {holes} texts")
        if not fills:
            return []
        prompt = self._holes_prompt(pieces, ext)
        continuations = []
        for fill in fills:
            cont: list[int] = []
            for j, text in enumerate(fill):
                cont += ([self.mask_ids[j]] if j else []) + self._encode(self._clean(text)) + [self.eom_id]
            continuations.append(cont)
        if len(prompt) + max(len(c) for c in continuations) > self.context:
            raise CannotScore("the holes and their text are longer than the context")
        return self._continuation_logprobs(prompt, continuations)

    def score_text(self, text: str, *, window: int | None = None) -> tuple[float, int]:
        """Left-to-right log-likelihood of `text` after the start token, in windows of the context."""
        ids = [self.start_id] + self._encode(text)
        return windowed_logprob(ids, min(window or self.context, self.context), self._chunk_logprobs)

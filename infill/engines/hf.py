"""A Hugging Face model through transformers, prompted with a FIM template.

Rules:
- Loading never touches the network: a directory, or a hub name already in the local cache
  (`local_files_only`); anything else is one `ValueError` line.
- The template comes from `--template` or is detected from the tokenizer's special tokens.
- User text is encoded literally: every special-token string is removed from the prefix and suffix
  first, and the template's sentinels enter the prompt as ids.
- The decode loop is ours (not `generate`), so `stream_infill` yields after every token and a caller
  can cancel between tokens. Sampling is `infill.generation.sample`, n candidates as one batch, so
  seeds mean the same here as on the local engine (the same weights draw the same samples).
- Token healing, as the local engine does it: when the template's prompt ends in prefix text (SPM),
  its last token is backed off and the first generated token must start with that token's text.
- One transformers `DynamicCache` per session: a request whose prompt shares a prefix with the
  session's previous one crops the cache to that prefix and computes only the rest. The least
  recently used sessions go first once their caches pass `cache_mb` (`base.SessionPool`).
- Repository context (`InfillRequest.context`) comes first in the template's repository format
  (`Template.context_pieces`), within `fit_context`'s budget; a vocabulary without the format's
  tokens gets none (`repo_ok`).
- Scoring: `score` is the template's prompt, then the middle, then the template's first end token
  the vocabulary has (else EOS). `score_holes` needs InCoder mask tokens (`<|mask:N|>`,
  `<|endofmask|>`: InCoder and this project's exports) and uses InCoder's format.
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Generator
from dataclasses import replace

import torch

from infill import tokenizer as infill_tokens
from infill.engines import templates as fim
from infill.engines.base import (SCORE_RESERVE, CannotScore, CompletionResult, GenerationConfig, HolesResult,
                                 InfillRequest, SessionPool, end_of, fit_context, fit_lines, prompt_budget, rank,
                                 run_to_end, sequential_holes, windowed_logprob)
from infill.engines.local import resolve_device
from infill.generation import sample


def _cache_bytes(cache) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def _crop(cache, length: int) -> None:
    """Keep the first `length` positions of a DynamicCache (its `crop` argument changed meaning in
    transformers 5: a negative count to remove, where 4.x took the length to keep)."""
    remove = cache.get_seq_length() - length
    if remove <= 0:
        return
    if "tokens_to_remove" in inspect.signature(cache.crop).parameters:
        cache.crop(-remove)
    else:
        cache.crop(length)
    assert cache.get_seq_length() == length


class _Session:
    def __init__(self, cache):
        self.cache = cache
        self.tokens: list[int] = []


class HFEngine:
    """Infilling and scoring with a transformers causal LM and a FIM template."""

    def __init__(self, model, tokenizer, template: fim.Template | str | None = None, *, name: str = "hf",
                 cache_mb: float = 256.0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.template = fim.get(template) if isinstance(template, str) else template or fim.detect(vocab)
        if self.template.native:
            raise ValueError(f"the {self.template.name} template is built by a server; use it with --model openai:URL")
        self.name = name
        self.device = str(next(model.parameters()).device)
        self.sessions: SessionPool[_Session] = SessionPool(cache_mb, lambda s: _cache_bytes(s.cache))
        self.context = int(getattr(model.config, "max_position_embeddings", None) or 2048)
        self.sentinel_ids = {s: self._sentinel_id(s, vocab) for s in (self.template.pre, self.template.suf,
                                                                      self.template.mid, self.template.meta) if s}
        self.repo_ok = all(s in vocab for s in self.template.repo_sentinels)
        """The vocabulary has the repository format's tokens; without them, context is left out."""
        self.sentinel_ids.update({s: vocab[s] for s in self.template.repo_sentinels if s in vocab})
        self.stop_ids = frozenset({vocab[s] for s in self.template.stops if s in vocab}
                                  | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))
        self.end_id = next((vocab[s] for s in self.template.stops if s in vocab), tokenizer.eos_token_id)
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self.specials = list(tokenizer.all_special_tokens) + [t.content for t in decoder.values() if t.special] \
            + list(self.template.sentinels)
        self.mask_ids: list[int] = []
        while infill_tokens.mask_token(len(self.mask_ids)) in vocab:
            self.mask_ids.append(vocab[infill_tokens.mask_token(len(self.mask_ids))])
        self.eom_id = vocab.get(infill_tokens.EOM)
        self.max_holes = max(len(self.mask_ids) - 1, 0) if self.eom_id is not None else 0
        self.unavailable: dict[str, str] = {"multi_hole": "holes are filled one at a time, left to right (no InCoder mask sentinels)"}
        caps = {"infill", "score", "sampled_logprobs", "text_score"}
        if self.max_holes >= 1:
            caps.add("multi_hole_score")
        else:
            self.unavailable["multi_hole_score"] = "the tokenizer has no InCoder mask tokens"
        if self.end_id is None:
            caps.discard("score")
            self.unavailable["score"] = "the tokenizer has no token that ends a middle"
        self.capabilities = frozenset(caps)

    def _sentinel_id(self, s: str, vocab: dict) -> int:
        for form in (s, "▁" + s):  # sentencepiece vocabularies (Code Llama) spell it with a word marker
            if form in vocab:
                return vocab[form]
        raise ValueError(f"template {self.template.name} needs the token {s!r}, which this tokenizer lacks; "
                         "pass another --template")

    @classmethod
    def from_pretrained(cls, name: str, *, device: str = "auto", template: str | None = None,
                        cache_mb: float = 256.0) -> "HFEngine":
        """Load a model directory or a locally cached hub name (never downloads)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = resolve_device(device)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(name, local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{name}: cannot load it as a Hugging Face model from disk or the local cache "
                             f"(no downloads here: no network): {first}") from None
        return cls(model.to(device), tokenizer, template, name=str(name).rstrip("/").split("/")[-1],
                   cache_mb=cache_mb)

    # prompt ---------------------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _count(self, lines: list[str]) -> list[int]:
        return [len(x) for x in self.tokenizer(lines, add_special_tokens=False)["input_ids"]]

    def _bos(self) -> list[int]:
        return [self.tokenizer.bos_token_id] if self.template.bos and self.tokenizer.bos_token_id is not None else []

    def _pieces_ids(self, pieces: list[tuple[str, bool]]) -> list[int]:
        ids: list[int] = []
        for text, sentinel in pieces:
            ids += [self.sentinel_ids[text]] if sentinel else self._encode(text)
        return ids

    def healed_prompt(self, req: InfillRequest) -> tuple[list[int], str]:
        """(prompt ids, healed text): the text the middle must start with, already cut from the prompt."""
        ids, heal, _ = self._prompt(req)
        return ids, heal

    def _prompt(self, req: InfillRequest) -> tuple[list[int], str, tuple[list[str], int]]:
        """`healed_prompt`, and (paths, tokens) of the repository context it holds."""
        prefix = fim.clean(req.prefix, self.specials)
        suffix = fim.clean(req.suffix, self.specials)
        budget = prompt_budget(self.context, req)
        context: list[tuple[str, str]] = []
        if req.context and self.repo_ok:
            cleaned = tuple((fim.clean(p, self.specials), fim.clean(t, self.specials)) for p, t in req.context)
            context, _ = fit_context(replace(req, context=cleaned), budget, self._count)
        head = self._pieces_ids(self.template.context_pieces(context[::-1], req.path, req.repo))
        prefix, suffix = fit_lines(prefix, suffix, budget - len(head), self._count)
        ids = self._bos() + head + self._pieces_ids(self.template.pieces(prefix, suffix, req.ext))
        heal = ""
        if req.heal and self.template.ends_in_prefix and prefix and ids[-1] not in self._special_ids:
            heal = self._token_texts()[ids[-1]]
            ids = ids[:-1]
            if len(heal) > 1 and heal.endswith(" "):  # the space belongs to the next word, as in the local engine
                shorter = self._encode(heal[:-1])
                if self.tokenizer.decode(shorter, clean_up_tokenization_spaces=False) == heal[:-1]:
                    ids, heal = ids + shorter, " "
        return ids, heal, (list(dict.fromkeys(p for p, _ in context)), len(head))

    def build_prompt(self, req: InfillRequest) -> list[int]:
        """Prompt ids: cleaned, trimmed to the context at line boundaries, rendered by the template."""
        return self.healed_prompt(req)[0]

    @property
    def _special_ids(self) -> frozenset[int]:
        if not hasattr(self, "_special_id_set"):
            vocab = self.tokenizer.get_vocab()
            self._special_id_set = frozenset(vocab[s] for s in self.specials if s in vocab)
        return self._special_id_set

    def _token_texts(self) -> list[str]:
        """The text of every token on its own (computed once per engine)."""
        if not hasattr(self, "_texts"):
            self._texts = [self.tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                           for i in range(len(self.tokenizer))]
        return self._texts

    def _heal_mask(self, heal: str, vocab_size: int) -> torch.Tensor:
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        special = self._special_ids
        for i, text in enumerate(self._token_texts()[:vocab_size]):
            if i not in special and text.startswith(heal):
                allowed[i] = True
        return allowed.to(self.device)

    # sessions -------------------------------------------------------------------------------------
    def _session(self, key: str | None) -> _Session:
        from transformers import DynamicCache

        if key is None:
            return _Session(DynamicCache())
        return self.sessions.get(key, lambda old: old or _Session(DynamicCache()))

    def drop_session(self, key: str) -> None:
        self.sessions.drop(key)

    @torch.inference_mode()
    def _forward(self, ids: list[int], cache) -> torch.Tensor:
        """Feed `ids` after what `cache` holds; logits (1, V) of the last one."""
        out = self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True)
        return out.logits[:, -1].float()

    # generation -----------------------------------------------------------------------------------
    def stream_infill(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """Yield after every generated token (a place to cancel); return the CompletionResult."""
        started = time.perf_counter()
        config = replace(req.config, stop_ids=self.stop_ids)
        prompt, heal, (context_files, context_tokens) = self._prompt(req)
        session = self._session(req.session)
        keep = 0
        limit = min(len(session.tokens), len(prompt) - 1)
        while keep < limit and session.tokens[keep] == prompt[keep]:
            keep += 1
        _crop(session.cache, keep)
        session.tokens = session.tokens[:keep]
        cached = keep
        if keep < len(prompt) - 1:
            self._forward(prompt[keep:-1], session.cache)
        session.tokens = prompt[:-1]
        n = config.n
        cache = session.cache
        if n > 1:  # the prefilled prompt copied into n rows; the session keeps the prompt only
            import copy

            cache = copy.deepcopy(session.cache)
            cache.batch_repeat_interleave(n)
        generator = None
        if config.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(config.seed if config.seed is not None else time.time_ns() % 2**63)
        rows: list[list[int]] = [[] for _ in range(n)]
        logprob, reason, texts = [0.0] * n, [""] * n, [""] * n
        allowed = None
        nxt = torch.tensor([[prompt[-1]]] * n, device=self.device)
        while not all(reason) and config.max_tokens > 0:
            with torch.inference_mode():
                logits = self.model(input_ids=nxt, past_key_values=cache, use_cache=True).logits[:, -1].float()
            if heal and allowed is None and not any(rows):
                allowed = self._heal_mask(heal, logits.shape[-1])
            token, lp = sample(logits, config, generator, allowed if not any(rows) else None)
            for r, (t, lpr) in enumerate(zip(token.tolist(), lp.tolist())):
                if reason[r]:
                    continue
                if t in config.stop_ids:
                    reason[r] = "stop"
                    continue
                rows[r].append(t)
                logprob[r] += lpr
                texts[r] = self._text(rows[r], heal)
                if end_of(texts[r], req) is not None:
                    reason[r] = "stop_rule"
                elif len(rows[r]) >= config.max_tokens:
                    reason[r] = "length"
            if not all(reason) and config.time_budget_s is not None \
                    and time.perf_counter() - started > config.time_budget_s:
                reason = [x or "time" for x in reason]
            yield
            nxt = token[:, None]
        if config.max_tokens == 0:
            reason = ["length"] * n
        if n == 1:
            fed = len(prompt) + len(rows[0]) - (0 if reason[0] == "stop" else 1)
            session.tokens = (prompt + rows[0])[:fed]
            _crop(cache, len(session.tokens))
        ranked = rank(zip(texts, map(len, rows), logprob, reason), req)
        return CompletionResult(ranked, (time.perf_counter() - started) * 1000, len(prompt), cached,
                                extra={"template": self.template.name, "context_tokens": context_tokens,
                                       "context_files": context_files})

    def _text(self, ids: list[int], heal: str) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return text[len(heal):] if heal and text.startswith(heal) else text

    def infill(self, req: InfillRequest) -> CompletionResult:
        return run_to_end(self.stream_infill(req))

    def stream_infill_holes(self, pieces: list[str], config: GenerationConfig, **kw
                            ) -> Generator[None, None, HolesResult]:
        """One hole at a time, left to right (`base.sequential_holes`): no mask sentinels here."""
        return sequential_holes(self, pieces, config, **kw)

    def infill_holes(self, pieces: list[str], config: GenerationConfig, **kw) -> HolesResult:
        return run_to_end(self.stream_infill_holes(pieces, config, **kw))

    # scoring --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _continuation_logprobs(self, prompt: list[int], continuations: list[list[int]]) -> list[float]:
        """Log-probability of each continuation after `prompt`, one padded batch (no cache)."""
        longest = max(len(c) for c in continuations)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        rows = torch.tensor([prompt + c + [pad] * (longest - len(c)) for c in continuations], device=self.device)
        mask = torch.tensor([[1] * (len(prompt) + len(c)) + [0] * (longest - len(c)) for c in continuations],
                            device=self.device)
        logits = self.model(input_ids=rows, attention_mask=mask).logits[:, len(prompt) - 1:-1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        return [float(logprobs[r, torch.arange(len(c)), torch.tensor(c)].sum()) if c else 0.0
                for r, c in enumerate(continuations)]

    def score(self, prefix: str, suffix: str, middle: str, *, ext: str | None = None, end: bool = True) -> float:
        """Log-probability of `middle` (and, with `end`, the template's end token) after the prompt."""
        if "score" not in self.capabilities:
            raise CannotScore(self.unavailable["score"])
        ids = self._encode(fim.clean(middle, self.specials)) + ([self.end_id] if end else [])
        if not ids:
            return 0.0
        try:
            config = GenerationConfig(max_tokens=max(len(ids), SCORE_RESERVE))
            prompt = self.build_prompt(InfillRequest(prefix, suffix, config, ext=ext, heal=False))
        except ValueError as exc:
            raise CannotScore(str(exc)) from None
        return self._continuation_logprobs(prompt, [ids])[0]

    def score_holes(self, pieces: list[str], fills: list[list[str]], *, ext: str | None = None) -> list[float]:
        """InCoder multi-hole log-probabilities: `K0 <M0> K1 ... <Mn> <M0> F0 <EOM> <M1> F1 <EOM> ...`."""
        holes = len(pieces) - 1
        if holes < 1 or holes > self.max_holes:
            raise CannotScore(self.unavailable.get("multi_hole_score")
                              or f"{holes} holes: this model scores 1 to {self.max_holes}")
        if any(len(f) != holes for f in fills):
            raise ValueError(f"each fill needs {holes} texts")
        if not fills:
            return []
        prompt = self._bos() + self._pieces_ids(self.template.header(ext))
        for j, piece in enumerate(pieces):
            prompt += self._encode(fim.clean(piece, self.specials)) + [self.mask_ids[j]]
        prompt.append(self.mask_ids[0])
        continuations = []
        for fill in fills:
            cont: list[int] = []
            for j, text in enumerate(fill):
                cont += ([self.mask_ids[j]] if j else []) + self._encode(fim.clean(text, self.specials)) \
                    + [self.eom_id]
            continuations.append(cont)
        if len(prompt) + max(len(c) for c in continuations) > self.context:
            raise CannotScore("the holes and their text are longer than the context")
        return self._continuation_logprobs(prompt, continuations)

    def score_text(self, text: str, *, window: int | None = None) -> tuple[float, int]:
        """Left-to-right log-likelihood of `text` after BOS (else EOS)."""
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ids = [start] + self._encode(text)
        return windowed_logprob(ids, min(window or self.context, self.context), self._chunk_logprobs)

    @torch.inference_mode()
    def _chunk_logprobs(self, chunk: list[int]) -> list[float]:
        x = torch.tensor([chunk], device=self.device)
        logprobs = torch.log_softmax(self.model(input_ids=x).logits[0, :-1].float(), dim=-1)
        return logprobs.gather(-1, x[0, 1:, None]).squeeze(-1).tolist()


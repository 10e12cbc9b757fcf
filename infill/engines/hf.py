"""A Hugging Face model through transformers, prompted with a FIM template.

Rules:
- Loading never touches the network: a directory, or a hub name already in the local cache
  (`local_files_only`); anything else is one `ValueError` line.
- The template comes from `--template` or is detected from the tokenizer's special tokens.
- User text is encoded literally: every special-token string is removed from the prefix and suffix
  first, and the template's sentinels enter the prompt as ids.
- The decode loop is ours (not `generate`), so `stream_infill` yields after every token and a caller
  can cancel between tokens. Sampling is `infill.generation.sample`, so seeds mean the same here.
- One transformers `DynamicCache` per session: a request whose prompt shares a prefix with the
  session's previous one crops the cache to that prefix and computes only the rest. The least
  recently used sessions go first once their caches pass `cache_mb`.
"""
from __future__ import annotations

import inspect
import time
from collections import OrderedDict
from collections.abc import Generator

import torch

from infill.engine import Completion, CompletionResult, InfillRequest, resolve_device
from infill.engines import end_of, fit_lines, run_to_end
from infill.engines import templates as fim
from infill.generation import GenerationConfig, sample


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
    """Infilling with a transformers causal LM and a FIM template."""

    def __init__(self, model, tokenizer, template: fim.Template | str | None = None, *, name: str = "hf",
                 cache_mb: float = 256.0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.template = fim.get(template) if isinstance(template, str) else template or fim.detect(vocab)
        self.name = name
        self.device = str(next(model.parameters()).device)
        self.cache_bytes = int(cache_mb * 2**20)
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.context = int(getattr(model.config, "max_position_embeddings", None) or 2048)
        self.sentinel_ids = {s: self._sentinel_id(s, vocab) for s in (self.template.pre, self.template.suf,
                                                                      self.template.mid) if s}
        self.stop_ids = frozenset({vocab[s] for s in self.template.stops if s in vocab}
                                  | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self.specials = list(tokenizer.all_special_tokens) + [t.content for t in decoder.values() if t.special] \
            + list(self.template.sentinels)

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

    def build_prompt(self, req: InfillRequest) -> list[int]:
        """Prompt ids: cleaned, trimmed to the context at line boundaries, rendered by the template."""
        prefix = fim.clean(req.prefix, self.specials)
        suffix = fim.clean(req.suffix, self.specials)
        budget = self.context - req.max_tokens - 16
        if budget <= 0:
            raise ValueError(f"max_tokens {req.max_tokens} leaves no room for a prompt (context {self.context})")
        count = lambda lines: [len(x) for x in self.tokenizer(lines, add_special_tokens=False)["input_ids"]]  # noqa: E731
        prefix, suffix = fit_lines(prefix, suffix, budget, count)
        ids = [self.tokenizer.bos_token_id] if self.template.bos and self.tokenizer.bos_token_id is not None else []
        for text, sentinel in self.template.pieces(prefix, suffix):
            ids += [self.sentinel_ids[text]] if sentinel else self._encode(text)
        return ids

    # sessions -------------------------------------------------------------------------------------
    def _session(self, key: str | None) -> _Session:
        from transformers import DynamicCache

        if key is None:
            return _Session(DynamicCache())
        session = self.sessions.pop(key, None) or _Session(DynamicCache())
        self.sessions[key] = session
        total = sum(_cache_bytes(s.cache) for s in self.sessions.values())
        while total > self.cache_bytes and len(self.sessions) > 1:
            _, old = self.sessions.popitem(last=False)
            total -= _cache_bytes(old.cache)
        return session

    def drop_session(self, key: str) -> None:
        self.sessions.pop(key, None)

    @torch.inference_mode()
    def _forward(self, ids: list[int], cache) -> torch.Tensor:
        """Feed `ids` after what `cache` holds; logits (1, V) of the last one."""
        out = self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True)
        return out.logits[:, -1].float()

    # generation -----------------------------------------------------------------------------------
    def stream_infill(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """Yield after every generated token (a place to cancel); return the CompletionResult."""
        started = time.perf_counter()
        config = GenerationConfig(max_tokens=req.max_tokens, temperature=req.temperature, top_k=req.top_k,
                                  top_p=req.top_p, seed=req.seed, n=req.n, time_budget_s=req.time_budget_s)
        prompt = self.build_prompt(req)
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
        base = len(prompt) - 1
        session.tokens = prompt[:-1]
        generator = None
        if config.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(config.seed if config.seed is not None else time.time_ns() % 2**63)
        completions: dict[str, Completion] = {}
        for _ in range(config.n):
            _crop(session.cache, base)
            fed, out, logprob, reason = [prompt[-1]], [], 0.0, "length"
            text, in_cache = "", 0
            while len(out) < config.max_tokens:
                logits = self._forward(fed[-1:], session.cache)
                in_cache = len(fed)
                nxt, lp = sample(logits, config, generator)
                token = int(nxt[0])
                if token in self.stop_ids:
                    reason = "stop"
                    break
                out.append(token)
                logprob += float(lp[0])
                text = self.tokenizer.decode(out, skip_special_tokens=False, clean_up_tokenization_spaces=False)
                yield
                if end_of(text, req) is not None:
                    reason = "stop_rule"
                    break
                if config.time_budget_s is not None and time.perf_counter() - started > config.time_budget_s:
                    reason = "time"
                    break
                fed.append(token)
            session.tokens = prompt[:-1] + fed[:in_cache]
            if (end := end_of(text, req)) is not None:
                text = text[:end]
            if text not in completions or completions[text].logprob < logprob:
                completions[text] = Completion(text, len(out), logprob, reason)
        ranked = sorted(completions.values(), key=lambda c: -c.logprob)
        return CompletionResult(ranked, (time.perf_counter() - started) * 1000, len(prompt), cached,
                                extra={"template": self.template.name})

    def infill(self, req: InfillRequest) -> CompletionResult:
        return run_to_end(self.stream_infill(req))

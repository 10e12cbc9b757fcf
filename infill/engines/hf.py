"""A Hugging Face model through transformers, prompted with a FIM template.

Rules:
- Loading never touches the network: a directory, or a hub name already in the local cache
  (`local_files_only`); anything else is one `ValueError` line. It never runs a directory's code
  (`trust_remote_code=False`; a directory with `auto_map` is refused) and never unpickles
  (`use_safetensors=True`; pickle-only weights are refused). Its tokenizer runs on text under a
  time budget (`infill.engines.budget`): a backtracking regex costs one request, one line.
- The template comes from `--template` or is detected from the tokenizer's special tokens.
- User text is encoded literally: every special-token string is removed from the prefix and suffix
  first, and the template's sentinels enter the prompt as ids.
- The decode loop is the local engine's (`infill.generation.stream`, not `generate`), through the
  forward seam `_HFForward` over a transformers `DynamicCache`, and with the request path, healing,
  sessions and scoring of `infill.engines.logits`: `stream_infill` yields after every token, n
  candidates are one batch, seeds and prompt-lookup drafts mean the same here as on the local
  engine, and the same weights give the same tokens. Healing compares token texts.
- One `DynamicCache` per session: a request whose prompt shares a prefix with the session's previous
  one crops the cache to that prefix and computes only the rest. The least recently used sessions go
  first once their caches pass `cache_mb` (`base.SessionPool`).
- Repository context (`InfillRequest.context`) comes first in the template's repository format
  (`Template.context_pieces`), within `fit_context`'s budget; a vocabulary without the format's
  tokens gets none (`repo_ok`).
- Scoring: `score` is the template's prompt, then the middle, then the template's first end token
  the vocabulary has (else EOS). `score_holes` needs InCoder mask tokens (`<|mask:N|>`,
  `<|endofmask|>`: InCoder and this project's exports) and uses InCoder's format.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import replace
from pathlib import Path

import torch

from infill import tokenizer as infill_tokens
from infill.checkpoint import check_hf_files
from infill.engines import templates as fim
from infill.engines.base import InfillRequest, SessionPool, fit_context, fit_lines, prompt_budget
from infill.engines.budget import TimedTokenizer
from infill.engines.local import resolve_device
from infill.engines.logits import LogitEngine
from infill.generation import Forward


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


class _HFForward(Forward):
    """The decode loop's forward seam over a transformers model and a `DynamicCache`: each call first
    crops the cache to `start_pos` (it may hold rejected draft tokens or an older request's)."""

    def __init__(self, model, cache, device: str, max_len: int):
        self.model, self.cache, self.device, self.max_len = model, cache, device, max_len
        keep = "logits_to_keep" in inspect.signature(model.forward).parameters  # transformers >= 4.50
        self._last = {"logits_to_keep": 1} if keep else {}

    def __call__(self, ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        return self._run(ids, start_pos)

    def prefill(self, ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        return self._run(ids, start_pos, **self._last)[:, -1]

    def _run(self, ids: torch.Tensor, start_pos: int, **kw) -> torch.Tensor:
        _crop(self.cache, start_pos)
        if self.cache.get_seq_length() != start_pos:
            raise ValueError(f"the cache holds {self.cache.get_seq_length()} tokens; asked to start at {start_pos}")
        return self.model(input_ids=ids, past_key_values=self.cache, use_cache=True, **kw).logits

    def expand(self, n: int) -> None:
        self.cache = copy.deepcopy(self.cache)  # the session's cache keeps the prompt, in one row
        self.cache.batch_repeat_interleave(n)


class HFEngine(LogitEngine):
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
        self.vocab_size = int(model.config.vocab_size)
        self.start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
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
        self.unavailable: dict[str, str] = {}
        caps = {"infill", "score", "sampled_logprobs", "text_score", "heal", "cache"}
        if self.max_holes >= 1:
            caps |= {"multi_hole_score", "multi_hole"}
        else:
            self.unavailable["multi_hole_score"] = "the tokenizer has no InCoder mask tokens"
            self.unavailable["multi_hole"] = "holes are filled one at a time, left to right (the tokenizer has no InCoder mask tokens)"
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
        """Load a model directory or a locally cached hub name (never downloads, never runs the
        directory's code, never unpickles: `infill.checkpoint.check_hf_files`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if Path(name).expanduser().is_dir():
            check_hf_files(Path(name).expanduser())
        device = resolve_device(device)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        try:  # never a directory's own code, never pickle: said explicitly, whatever the defaults become
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(name, local_files_only=True, dtype=dtype,
                                                         trust_remote_code=False, use_safetensors=True)
        except Exception as exc:  # transformers' errors are many kinds; each becomes one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{name}: cannot load it as a Hugging Face model from disk or the local cache "
                             f"(no downloads here: no network): {first}") from None
        return cls(model.to(device), TimedTokenizer(tokenizer), template, name=str(name).rstrip("/").split("/")[-1],
                   cache_mb=cache_mb)

    @classmethod
    def load(cls, name: str, *, device: str = "auto", cache_mb: float = 256.0,
             template: str | None = None) -> "HFEngine":
        """The engine for a model directory or cached hub name (`infill.engines.load`): a directory's
        sizes and the memory they need are checked before transformers allocates."""
        from infill.checkpoint import check_hf_dir

        if Path(name).expanduser().is_dir():
            device = resolve_device(device)
            check_hf_dir(Path(name).expanduser(), device, 2 if device.startswith("cuda") else 4)
        return cls.from_pretrained(name, device=device, template=template, cache_mb=cache_mb)

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
        ids, heal = self._healed(ids, req, self.template.ends_in_prefix, prefix)
        return ids, heal, (list(dict.fromkeys(p for p, _ in context)), len(head))

    def build_prompt(self, req: InfillRequest) -> list[int]:
        """Prompt ids: cleaned, trimmed to the context at line boundaries, rendered by the template."""
        return self.healed_prompt(req)[0]

    def _special(self) -> frozenset[int]:
        if not hasattr(self, "_special_ids"):
            vocab = self.tokenizer.get_vocab()
            self._special_ids = frozenset(vocab[s] for s in self.specials if s in vocab)
        return self._special_ids

    def _pieces(self) -> list[str]:
        """The text of every token on its own (computed once per engine)."""
        if not hasattr(self, "_texts"):
            self._texts = [self.tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                           for i in range(len(self.tokenizer))]
        return self._texts

    def _respell(self, piece: str) -> list[int] | None:
        ids = self._encode(piece)
        return ids if self.tokenizer.decode(ids, clean_up_tokenization_spaces=False) == piece else None

    def _clean(self, text: str) -> str:
        return fim.clean(text, self.specials)

    def _text(self, ids: list[int], heal: str) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return text[len(heal):] if heal and text.startswith(heal) else text

    def _holes_prompt(self, pieces: list[str], ext: str | None) -> list[int]:
        prompt = self._bos() + self._pieces_ids(self.template.header(ext))
        for j, piece in enumerate(pieces):
            prompt += self._encode(self._clean(piece)) + [self.mask_ids[j]]
        return prompt + [self.mask_ids[0]]

    def _extra(self) -> dict:
        return {"template": self.template.name}

    # model ----------------------------------------------------------------------------------------
    def _session(self, key: str, need: int) -> _Session:
        from transformers import DynamicCache

        return self.sessions.get(key, lambda old: old or _Session(DynamicCache()))

    def _forward(self, cache, need: int) -> Forward:
        from transformers import DynamicCache

        return _HFForward(self.model, cache if cache is not None else DynamicCache(), self.device, self.context)

    def _logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).logits

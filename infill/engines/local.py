"""The local engine: text in, middle text out, on top of a checkpoint directory.

This is where text meets ids for an infill checkpoint. It builds the prompt (`infill.formats`), fits
it to a token budget, and plugs its model into the shared request path (`infill.engines.logits`:
the one decode loop, token healing on token bytes, session KV caches, scoring).

Rules:
- The prompt budget is trimmed at line boundaries (prefix from its start, suffix from its end), so
  the prompt stays stable while the user types within a line and the session cache keeps hitting.
- Session caches are one-row `KVCache`s bounded by `cache_mb` (the sum of their KV memory); the least
  recently used goes first (`infill.engines.base.SessionPool`).
- Repository context (`InfillRequest.context`) comes first, each file behind its header and ended by
  EOS (`formats.context_prompt`, the layout of repository-level packing), within `fit_context`'s
  budget; the prefix and suffix fit in what is left.
"""
from __future__ import annotations

from pathlib import Path

import torch

from infill import formats
from infill.checkpoint import load_checkpoint
from infill.engines.base import InfillRequest, SessionPool, fit_context, fit_lines, prompt_budget
from infill.engines.logits import LogitEngine
from infill.generation import Forward, model_forward
from infill.model import KVCache, Transformer
from infill.tokenizer import CodeTokenizer


class SessionCache:
    """One document's one-row KV cache and the tokens it holds."""

    def __init__(self, model: Transformer, max_len: int):
        param = next(model.parameters())
        self.cache = KVCache(model.config, 1, max_len, device=param.device, dtype=param.dtype)
        self.tokens: list[int] = []


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return device


class LocalEngine(LogitEngine):
    """Infilling and scoring with an infill checkpoint."""

    def __init__(self, model: Transformer, tokenizer: CodeTokenizer, *, cache_mb: float = 256.0,
                 prompt_format: str | None = None, name: str = "infill"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.format = prompt_format or model.config.prompt_format
        self.name = name
        self.sessions: SessionPool[SessionCache] = SessionPool(cache_mb, lambda s: s.cache.nbytes())
        self.device = str(next(model.parameters()).device)
        self.context = model.config.max_seq_len
        self.vocab_size = model.config.vocab_size
        self.stop_ids = formats.stop_ids(tokenizer, self.format)
        self.end_id = formats.end_id(tokenizer, self.format)
        self.start_id = tokenizer.eos_id  # the document separator of training
        self.max_holes = max(tokenizer.n_masks - 1, 0)
        self.mask_ids = [tokenizer.mask_id(j) for j in range(tokenizer.n_masks)]
        self.eom_id = tokenizer.eom_id
        caps = {"infill", "score", "sampled_logprobs", "text_score", "heal", "cache"}
        self.unavailable: dict[str, str] = {}
        if self.max_holes >= 1:
            caps |= {"multi_hole_score", "multi_hole"}
        else:
            self.unavailable["multi_hole_score"] = "the tokenizer has no InCoder mask tokens"
            self.unavailable["multi_hole"] = "holes are filled one at a time, left to right (the tokenizer has no InCoder mask tokens)"
        self.capabilities = frozenset(caps)

    @classmethod
    def from_dir(cls, path: str | Path, *, device: str = "auto", cache_mb: float = 256.0) -> "LocalEngine":
        device = resolve_device(device)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model, tokenizer = load_checkpoint(path, device=device, dtype=dtype)
        return cls(model, tokenizer, cache_mb=cache_mb, name=Path(path).name)

    @classmethod
    def load(cls, name: str, *, device: str = "auto", cache_mb: float = 256.0,
             template: str | None = None) -> "LocalEngine":
        """The engine for a checkpoint directory (`infill.engines.load`; its format is its own: no template)."""
        return cls.from_dir(name, device=device, cache_mb=cache_mb)

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
        budget = prompt_budget(self.context, req)
        count = lambda texts: [len(x) for x in self.tokenizer.encode_batch(texts)]  # noqa: E731
        context, _ = fit_context(req, budget, count)
        context_ids = formats.context_prompt(self.tokenizer, context[::-1])  # the best nearest the file
        prefix, suffix = self._fit(req.prefix, req.suffix, budget - len(context_ids))
        prompt = context_ids + formats.infill_prompt(self.tokenizer, self.format, prefix, suffix, ext=req.ext)
        prompt, heal = self._healed(prompt, req, formats.ends_in_prefix(self.format), prefix)
        return prompt, heal, (list(dict.fromkeys(path for path, _ in context)), len(context_ids))

    def _pieces(self) -> list[bytes]:
        return self.tokenizer.token_bytes

    def _special(self) -> frozenset[int]:
        return frozenset(self.tokenizer.special_ids)

    def _respell(self, piece: bytes) -> list[int] | None:
        try:
            ids = self.tokenizer.encode(piece.decode())
        except UnicodeDecodeError:
            return None
        return ids if self.tokenizer.token_bytes_concat(ids) == piece else None

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.encode_batch(texts)

    def _text(self, ids: list[int], heal: bytes) -> str:
        raw = self.tokenizer.token_bytes_concat(ids)
        return (raw[len(heal):] if raw.startswith(heal) else raw).decode("utf-8", errors="replace")

    def _holes_prompt(self, pieces: list[str], ext: str | None) -> list[int]:
        return formats.encode_incoder(self.tokenizer, pieces, [None] * (len(pieces) - 1), ext=ext).ids

    # model ----------------------------------------------------------------------------------------
    def _session(self, key: str, need: int) -> SessionCache:
        def make(old: SessionCache | None) -> SessionCache:
            if old is None or old.cache.max_len < need:
                return SessionCache(self.model, max(need, min(self.context, 2 * need)))
            return old
        return self.sessions.get(key, make)

    def _forward(self, cache: KVCache | None, need: int) -> Forward:
        return model_forward(self.model, cache, need)

    def _logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)

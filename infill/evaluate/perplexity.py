"""Bits per byte and token perplexity per language on held-out files (PolyCoder's measure).

Rules:
- Each document is scored left to right as the model saw documents in training: after one start
  token (BOS, else EOS), every token of the text is predicted, and nothing else.
- Documents longer than the context are cut into consecutive windows; each window after the first
  starts with the last `context // 2` tokens of the one before as unscored context, so every token is
  predicted with at least half a context of history.
- Bits per byte = total negative log-likelihood in bits / total UTF-8 bytes; it does not depend on the
  tokenizer, so it compares models with different vocabularies. Token perplexity = exp(mean NLL per
  token) and only compares models that share a tokenizer.
- Needs the model's logits: an infill checkpoint or a Hugging Face model, not a server.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from infill.evaluate.documents import iter_documents


class _Scorer:
    """encode(text) -> ids, start id, context and logits(ids) for the engines that have a model."""

    def __init__(self, engine):
        from infill.engines.local import LocalEngine
        from infill.engines.hf import HFEngine

        if isinstance(engine, LocalEngine):
            tok = engine.tokenizer
            self.encode = tok.encode
            self.start = tok.eos_id
            self.context = engine.model.config.max_seq_len
            self.logits = lambda x: engine.model(x)
        elif isinstance(engine, HFEngine):
            tok = engine.tokenizer
            self.encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]
            self.start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            self.context = engine.context
            self.logits = lambda x: engine.model(input_ids=x).logits
        else:
            raise ValueError(f"perplexity needs the model's logits: an infill checkpoint or a Hugging Face model, "
                             f"not {type(engine).__name__}")
        self.device = engine.device

    @torch.inference_mode()
    def nll(self, text: str, max_tokens: int | None = None) -> tuple[float, int]:
        """(sum of negative log-likelihoods in nats, number of tokens scored) of `text`."""
        ids = [self.start] + self.encode(text)
        window = min(max_tokens or self.context, self.context)
        if window < 2:
            raise ValueError(f"context {window} is too short to score anything")
        keep = window // 2
        total, scored, pos = 0.0, 0, 1  # pos: index of the next token to score
        while pos < len(ids):
            begin = max(0, pos - (1 if pos == 1 else keep))
            end = min(len(ids), begin + window)
            x = torch.tensor([ids[begin:end]], device=self.device)
            logprobs = torch.log_softmax(self.logits(x)[0].float(), dim=-1)  # (T, V)
            targets = torch.tensor(ids[pos:end], device=self.device)
            rows = torch.arange(pos - begin - 1, end - begin - 1, device=self.device)
            total -= float(logprobs[rows, targets].sum())
            scored += end - pos
            pos = end
        return total, scored


def evaluate(engine, data: Path, out_dir: Path, *, limit: int | None = None, max_tokens: int | None = None,
             progress: bool = True) -> dict:
    """Score every held-out document under `data`; write `documents.jsonl` and `summary.json`."""
    from tqdm import tqdm

    started = time.monotonic()
    scorer = _Scorer(engine)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_lang: dict[str, dict] = defaultdict(lambda: {"nll": 0.0, "tokens": 0, "bytes": 0, "documents": 0})
    docs = iter_documents(data)
    with open(out_dir / "documents.jsonl", "w", encoding="utf-8") as f:
        for i, doc in enumerate(tqdm(docs, desc="documents", unit="doc", file=sys.stderr, disable=not progress)):
            if limit is not None and i >= limit:
                break
            nll, tokens = scorer.nll(doc.text, max_tokens)
            n_bytes = len(doc.text.encode("utf-8"))
            agg = per_lang[doc.language]
            agg["nll"] += nll
            agg["tokens"] += tokens
            agg["bytes"] += n_bytes
            agg["documents"] += 1
            f.write(json.dumps({"path": doc.path, "language": doc.language, "bytes": n_bytes, "tokens": tokens,
                                "bits_per_byte": round(nll / math.log(2) / n_bytes, 6)}) + "\n")
    if not per_lang:
        raise ValueError(f"{data}: no documents to score")
    languages = {lang: _figures(agg) for lang, agg in sorted(per_lang.items())}
    total = {k: sum(a[k] for a in per_lang.values()) for k in ("nll", "tokens", "bytes", "documents")}
    summary = {"eval": "perplexity", "model": engine.name, "engine": type(engine).__name__, "data": str(data),
               **_figures(total), "languages": languages, "seconds": round(time.monotonic() - started, 1)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _figures(agg: dict) -> dict:
    return {"bits_per_byte": round(agg["nll"] / math.log(2) / agg["bytes"], 6),
            "token_perplexity": round(math.exp(agg["nll"] / agg["tokens"]), 4),
            "tokens": agg["tokens"], "bytes": agg["bytes"], "documents": agg["documents"]}

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
- Needs an engine that scores whole documents ("text_score" in `engine.capabilities`: an infill
  checkpoint or a Hugging Face model, not a server); the windows are the engine's `score_text`.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

from infill.evaluate.documents import iter_documents


def evaluate(engine, data: Path, out_dir: Path, *, limit: int | None = None, max_tokens: int | None = None,
             progress: bool = True) -> dict:
    """Score every held-out document under `data`; write `documents.jsonl` and `summary.json`."""
    from tqdm import tqdm

    from infill.engines import CannotScore

    started = time.monotonic()
    if "text_score" not in engine.capabilities:
        raise CannotScore(f"perplexity needs an engine that scores documents: {engine.unavailable.get('text_score')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    per_lang: dict[str, dict] = defaultdict(lambda: {"nll": 0.0, "tokens": 0, "bytes": 0, "documents": 0})
    docs = iter_documents(data)
    with open(out_dir / "documents.jsonl", "w", encoding="utf-8") as f:
        for i, doc in enumerate(tqdm(docs, desc="documents", unit="doc", file=sys.stderr, disable=not progress)):
            if limit is not None and i >= limit:
                break
            logprob, tokens = engine.score_text(doc.text, window=max_tokens)
            nll = -logprob
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

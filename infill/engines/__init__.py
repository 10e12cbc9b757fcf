"""Engines: the one door to a model, used by `infill eval`, `infill complete` and `infill-lsp`.

- `infill.engines.local.LocalEngine`: an infill checkpoint directory.
- `infill.engines.hf.HFEngine`: a Hugging Face model (directory or locally cached hub name) through
  transformers, prompted with a FIM template (`infill.engines.templates`).
- `infill.engines.openai.OpenAIEngine`: an OpenAI-compatible completions server (`openai:URL`).
- `infill.engines.llama_infill.LlamaInfillEngine`: llama.cpp's native `/infill` (`openai:URL#llama-infill`).

`logits.py` is the request path the engines with logits share (one decode loop, `infill.generation`);
`remote.py` the HTTP transport the server engines share.

Every engine takes an `InfillRequest` and returns a `CompletionResult`; `stream_infill` is a generator
that yields between tokens (a place for the caller to cancel, by closing it) and returns the result.
Several holes at once: `stream_infill_holes` / `infill_holes`. Engines also score text (`score`, `score_holes`, `score_text`) as far as their `capabilities` go
(`infill.engines.base` documents them). `load_engine` picks the engine for a `--model` value.
Adding an engine is one new module here and one line in `load.ENGINES`.
"""
from __future__ import annotations

from infill.engines.base import (CAPABILITIES, CacheConfig, CacheSource, CannotFill, CannotScore, Completion, CompletionResult, Engine,
                                 GenerationConfig, HolesResult, InfillRequest, SessionPool, end_of, fit_context,
                                 fit_lines, rank, run_to_end, sequential_holes)
from infill.engines.load import ModelNotFound, load_engine, resolve_model

__all__ = ["CAPABILITIES", "CacheConfig", "CacheSource", "CannotFill", "CannotScore", "HolesResult", "sequential_holes", "Completion", "CompletionResult", "Engine", "GenerationConfig",
           "InfillRequest", "ModelNotFound", "SessionPool", "end_of", "fit_context", "fit_lines", "load_engine", "rank",
           "resolve_model", "run_to_end"]

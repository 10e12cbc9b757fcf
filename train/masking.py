"""Documents -> training examples: the causal-masking objective, applied on the fly.

Rules (docs/train.md):
- A document longer than the context is cut at line breaks into chunks of at most `budget` tokens
  (a single longer line stays whole; the packer splits it); each chunk is an independent example.
- Per chunk, one objective is drawn by the `ObjectiveConfig` rates: InCoder causal masking, SPM or
  PSM single-span FIM, or left-to-right. Spans are syntax-aware (Python, `syntax_rate`) or random.
- Causal masking: the number of spans ~ Poisson(1) truncated to [1, K]; spans are non-overlapping,
  replaced by `<Mj>` and moved to the end behind their sentinels (`infill.formats.encode_incoder`);
  every token is a target except the mask sentinels.
- The file-metadata header is added with probability `header_rate`.
- Every decision comes from a `random.Random` seeded by (seed, epoch, document index, chunk), so an
  example is a pure function of its key: each epoch sees new spans, workers need no shared state,
  and a resumed run regenerates exactly the examples it would have seen.
"""
from __future__ import annotations

import os
import random

from infill.formats import Encoded, encode_fim, encode_incoder, encode_l2r
from infill.tokenizer import CodeTokenizer
from train.config import ObjectiveConfig
from train.spans import Span, choose_random_spans, choose_syntax_spans, piece_boundaries, truncated_poisson

OBJECTIVES = ("causal", "spm", "psm", "l2r")


def chunk_document(tok: CodeTokenizer, text: str, budget: int) -> list[str]:
    """`text` cut at line ends into chunks of at most `budget` tokens (a longer single line is kept
    whole). Tokens never cross a line break, so the chunks' token counts add up to the document's."""
    lines = text.splitlines(keepends=True)
    if not lines:
        return []
    counts = [len(ids) for ids in tok.encode_batch(lines)]
    if sum(counts) <= budget:
        return [text]
    chunks, start, used = [], 0, 0
    for i, n in enumerate(counts):
        if used and used + n > budget:
            chunks.append("".join(lines[start:i]))
            start, used = i, 0
        used += n
    chunks.append("".join(lines[start:]))
    return chunks


def cut(text: str, spans: list[Span]) -> tuple[list[str], list[str]]:
    """(kept pieces, masked spans) of `text` for sorted, non-overlapping `spans`."""
    kept, masked, pos = [], [], 0
    for start, end in spans:
        assert pos <= start < end <= len(text), (pos, start, end)
        kept.append(text[pos:start])
        masked.append(text[start:end])
        pos = end
    kept.append(text[pos:])
    return kept, masked


def choose_spans(rng: random.Random, text: str, n: int, config: ObjectiveConfig, *, language: str,
                 max_spans: int) -> list[Span]:
    """`n` spans (syntax-aware for Python with probability `syntax_rate`, else random)."""
    if language == "python" and rng.random() < config.syntax_rate:
        kinds = {"node": config.node_weight, "identifier": config.identifier_weight,
                 "annotation": config.annotation_weight}
        spans = choose_syntax_spans(rng, text, n, max_spans, kinds)
        if spans:
            return spans
    return choose_random_spans(rng, piece_boundaries(text), n)


def draw_objective(rng: random.Random, config: ObjectiveConfig) -> str:
    r = rng.random()
    for name, rate in zip(OBJECTIVES, (config.causal_rate, config.spm_rate, config.psm_rate, config.l2r_rate)):
        if r < rate:
            return name
        r -= rate
    return "l2r"


def make_example(tok: CodeTokenizer, text: str, rng: random.Random, config: ObjectiveConfig, *,
                 ext: str | None = None, language: str = "") -> Encoded:
    """One training example of a chunk of text (see the module rules)."""
    header_ext = ext if rng.random() < config.header_rate else None
    objective = draw_objective(rng, config)
    k = min(config.max_spans, tok.n_masks - 1)
    if objective == "causal":
        spans = choose_spans(rng, text, truncated_poisson(rng, k), config, language=language, max_spans=k)
        if spans:
            kept, masked = cut(text, spans)
            return encode_incoder(tok, kept, masked, ext=header_ext)
    elif objective in ("spm", "psm"):
        spans = choose_spans(rng, text, 1, config, language=language, max_spans=1)
        if spans:
            (prefix, suffix), (middle,) = cut(text, spans[:1])
            return encode_fim(tok, objective, prefix, suffix, middle, ext=header_ext)
    return encode_l2r(tok, text, ext=header_ext)


def extension(path: str) -> str | None:
    return os.path.splitext(path)[1] or None


def document_examples(tok: CodeTokenizer, record: dict, config: ObjectiveConfig, *, seed: int, epoch: int,
                      key: str, budget: int) -> list[Encoded]:
    """The examples of one corpus record in one epoch, one per chunk; a pure function of its arguments."""
    chunks = chunk_document(tok, record["text"], budget)
    ext, language = extension(record.get("path", "")), record.get("language", "")
    return [make_example(tok, chunk, random.Random(f"{seed}:{epoch}:{key}:{i}"), config, ext=ext, language=language)
            for i, chunk in enumerate(chunks)]


def chunk_budget(seq_len: int, max_spans: int) -> int:
    """Tokens of document text per chunk: the row minus room for sentinels and the header."""
    reserve = 2 * (max_spans + 1) + 16
    return max(16, seq_len - reserve)

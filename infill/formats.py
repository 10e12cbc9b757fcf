"""Prompt formats that make a decoder fill in the middle: pure functions on text and token ids.

Formats (sentinel strings live in `infill.tokenizer`, here they are only ids):
- InCoder causal masking, any number of holes (Fried et al. 2022):
  `A <M0> C <M1> E <M2> <M0> B <EOM> <M1> D <EOM>`; the last mask after the final kept piece marks the
  end of the document. Inference for one hole: `left <M0> right <M1> <M0>`, generate until `<EOM>`.
- PSM (Bavarian et al. 2022): `<PRE> prefix <SUF> suffix <MID> middle <EOM>`.
- SPM, "variant 2": `<PRE> <SUF> suffix <MID> prefix middle <EOM>`. Typing at the cursor only appends
  tokens to an SPM prompt, which is what lets a KV cache serve the next keystroke.
- Left to right: `text <EOS>`.
Every encoder optionally starts with a file-metadata header (`<|file|> ext=.py` and a line break).

Each encoder returns ids and, per position, whether that token is a training target. Targets are every
token except the mask sentinels (InCoder) and the header's sentinel. A missing middle/answer makes the
same function produce the inference prompt, which ends where generation begins: one code path per format.
Every piece of text is encoded on its own, so `decode_*` recovers the pieces exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

from infill.tokenizer import CodeTokenizer

FIM_FORMATS = ("psm", "spm")


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    loss: list[bool]
    """loss[i]: token i is a target (predicted from the tokens before it)."""

    def __add__(self, other: "Encoded") -> "Encoded":
        return Encoded(self.ids + other.ids, self.loss + other.loss)


def _text(tok: CodeTokenizer, text: str) -> Encoded:
    ids = tok.encode(text)
    return Encoded(ids, [True] * len(ids))


def _sentinel(token_id: int, loss: bool) -> Encoded:
    return Encoded([token_id], [loss])


EMPTY = Encoded([], [])


def header(tok: CodeTokenizer, ext: str | None) -> Encoded:
    """The file-metadata header for a file extension such as `.py`; empty when unknown."""
    if not ext:
        return EMPTY
    return _sentinel(tok.file_meta_id, False) + _text(tok, f" ext={ext}\n")


def encode_incoder(tok: CodeTokenizer, kept: list[str], masked: list[str | None], *,
                   ext: str | None = None) -> Encoded:
    """InCoder causal masking: kept pieces K0..Kn around n masked spans S0..S(n-1).

    `masked[j]` is the text of span j, or None for the span to generate: the sequence then ends at
    that span's opening sentinel (and later spans must be None too). Returns
    `K0 <M0> K1 ... Kn <Mn> <M0> S0 <EOM> ...`.
    """
    n = len(masked)
    if len(kept) != n + 1:
        raise ValueError(f"{n} masked spans need {n + 1} kept pieces, got {len(kept)}")
    if n + 1 > tok.n_masks:
        raise ValueError(f"{n} spans need {n + 1} mask tokens; the tokenizer has {tok.n_masks}")
    out = header(tok, ext)
    for j, piece in enumerate(kept):
        out = out + _text(tok, piece) + _sentinel(tok.mask_id(j), False)
    for j, span in enumerate(masked):
        out = out + _sentinel(tok.mask_id(j), False)
        if span is None:
            if any(s is not None for s in masked[j + 1:]):
                raise ValueError("spans after the one to generate must be None")
            return out
        out = out + _text(tok, span) + _sentinel(tok.eom_id, True)
    return out


def encode_fim(tok: CodeTokenizer, fmt: str, prefix: str, suffix: str, middle: str | None = None, *,
               ext: str | None = None) -> Encoded:
    """PSM or SPM single-hole infilling; with `middle=None` the prompt that precedes generation."""
    if fmt not in FIM_FORMATS:
        raise ValueError(f"format must be one of {FIM_FORMATS}, got {fmt!r}")
    pre, suf, mid = (_sentinel(i, True) for i in (tok.fim_prefix_id, tok.fim_suffix_id, tok.fim_middle_id))
    if fmt == "psm":
        out = header(tok, ext) + pre + _text(tok, prefix) + suf + _text(tok, suffix) + mid
    else:
        out = header(tok, ext) + pre + suf + _text(tok, suffix) + mid + _text(tok, prefix)
    if middle is None:
        return out
    return out + _text(tok, middle) + _sentinel(tok.eom_id, True)


def encode_l2r(tok: CodeTokenizer, text: str, *, ext: str | None = None, eos: bool = True) -> Encoded:
    """Plain left-to-right: the document, then EOS (omitted for a prompt)."""
    out = header(tok, ext) + _text(tok, text)
    return out + _sentinel(tok.eos_id, True) if eos else out


def infill_prompt(tok: CodeTokenizer, fmt: str, prefix: str, suffix: str, *, ext: str | None = None) -> list[int]:
    """Token ids of the single-hole prompt in format `fmt` (spm, psm, incoder or l2r)."""
    if fmt == "incoder":
        return encode_incoder(tok, [prefix, suffix], [None], ext=ext).ids
    if fmt == "l2r":
        return encode_l2r(tok, prefix, ext=ext, eos=False).ids
    return encode_fim(tok, fmt, prefix, suffix, ext=ext).ids


def context_prompt(tok: CodeTokenizer, files: list[tuple[str, str]]) -> list[int]:
    """Token ids of other files of the repository that precede a prompt, as repository-level packing
    lays them out: each file behind the header of its extension and ended by EOS."""
    ids: list[int] = []
    for path, text in files:
        name = path.rsplit("/", 1)[-1]
        ext = name[name.rfind("."):].lower() if "." in name[1:] else None
        ids += header(tok, ext).ids + tok.encode(text) + [tok.eos_id]
    return ids


def end_id(tok: CodeTokenizer, fmt: str) -> int:
    """The token that ends a middle in format `fmt` (EOS for left to right, else end-of-mask)."""
    return tok.eos_id if fmt == "l2r" else tok.eom_id


def stop_ids(tok: CodeTokenizer, fmt: str) -> frozenset[int]:
    """Tokens that end a generated middle in format `fmt`."""
    return frozenset({end_id(tok, fmt), tok.eos_id})


def ends_in_prefix(fmt: str) -> bool:
    """Whether the prompt of `fmt` ends in prefix text (SPM, left to right): the formats that heal."""
    return fmt in ("spm", "l2r")


# decoding: the inverse of the encoders, used by tests and by the trainer's infill evaluation ------------

def _strip_header(tok: CodeTokenizer, ids: list[int]) -> list[int]:
    if ids and ids[0] == tok.file_meta_id:
        newline = tok.encode("\n")[0]
        return ids[ids.index(newline, 1) + 1:]
    return ids


def _split(ids: list[int], sep: int) -> list[list[int]]:
    parts, cur = [], []
    for i in ids:
        if i == sep:
            parts.append(cur)
            cur = []
        else:
            cur.append(i)
    return parts + [cur]


def decode_fim(tok: CodeTokenizer, fmt: str, ids: list[int]) -> tuple[str, str, str]:
    """(prefix, middle, suffix) from a full PSM/SPM example."""
    ids = _strip_header(tok, ids)
    if ids[0] != tok.fim_prefix_id or ids[-1] != tok.eom_id:
        raise ValueError("not a complete FIM example")
    body = ids[1:-1]
    if fmt == "psm":
        prefix, rest = _split(body, tok.fim_suffix_id)
        suffix, middle = _split(rest, tok.fim_middle_id)
    else:
        if body[0] != tok.fim_suffix_id:
            raise ValueError("SPM example must start with <PRE><SUF>")
        suffix, prefix_middle = _split(body[1:], tok.fim_middle_id)
        # prefix and middle are adjacent texts; the caller knows where the middle starts by length
        return tok.decode(prefix_middle), "", tok.decode(suffix)
    return tok.decode(prefix), tok.decode(middle), tok.decode(suffix)


def decode_incoder(tok: CodeTokenizer, ids: list[int]) -> str:
    """The original document from a full InCoder example: every span put back in its hole."""
    ids = _strip_header(tok, ids)
    mask_ids = {tok.mask_id(j): j for j in range(tok.n_masks)}
    kept: list[list[int]] = [[]]
    spans: dict[int, list[int]] = {}
    pos = 0
    while pos < len(ids):  # kept pieces, each closed by the next mask sentinel
        i = ids[pos]
        if i in mask_ids and mask_ids[i] != len(kept) - 1:
            break  # <M0> again: the answers section starts here
        pos += 1
        if i in mask_ids:
            kept.append([])
        else:
            kept[-1].append(i)
    kept.pop()  # the empty piece opened by the final <Mn>
    while pos < len(ids):  # <Mj> span <EOM>
        j = mask_ids[ids[pos]]
        end = ids.index(tok.eom_id, pos)
        spans[j] = ids[pos + 1:end]
        pos = end + 1
    pieces = []
    for j, piece in enumerate(kept):
        pieces.append(tok.decode(piece))
        if j in spans:
            pieces.append(tok.decode(spans[j]))
    return "".join(pieces)

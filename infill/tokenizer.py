"""The code tokenizer: byte-level BPE (Hugging Face `tokenizers`) with code-aware pre-splitting.

Rules:
- Exact round trip: `decode(encode(text)) == text` for any string (byte-level, no normalisation).
- No token crosses a newline: text is pre-split so that every line break is its own piece (InCoder).
- Whitespace runs (indentation) are pieces of their own, so BPE learns them as tokens; one space
  still attaches to the word or punctuation that follows, as in GPT-2.
- The pre-split has a version (`TOKENIZER_VERSION`, `CodeTokenizer.version`), read from the
  tokenizer's own pre-tokenizer, so every saved tokenizer keeps the rule it was trained with:
  - 1: one regex of this project's (identifiers with `_` and digits whole, `\r\n` one piece, the
    whole indentation run one piece). llama.cpp has no pre-tokenizer that splits this way.
  - 2 (current): DeepSeek-Coder's pre-split, which llama.cpp implements by name (`LLAMA_PRE`), so a
    GGUF export tokenizes in llama.cpp exactly as here: each `\r` and `\n` alone, an optional
    whitespace character and a letter run, an optional whitespace character and a punctuation run,
    CJK runs, every digit alone; what is left between (whitespace, symbols) is a piece too.
- A saved tokenizer is loaded only if it runs this module's rules alone (`CodeTokenizer.load`): one
  of `PRE_SPLITS`, no normalizer or post-processor. A tokenizer.json from elsewhere can carry a
  regex that backtracks for seconds on user text; Hugging Face directories, which bring their own
  tokenizers, are `infill.engines.hf`'s, under a time budget.
- User text is always encoded literally: a sentinel string typed in a file is not a sentinel.
  Sentinels enter a prompt only as ids, through `infill.formats`.
- Every special token string is defined here, once.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"
PAD = "<|pad|>"
EOM = "<|endofmask|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"
FILE_META = "<|file|>"
DEFAULT_N_MASKS = 32

# Version 1 pieces: a line break; a word (optionally after one space); a number; a punctuation run;
# a run of spaces/tabs; any other single whitespace character.
PRE_SPLIT_V1 = (r"\r\n|\n|\r| ?[\p{L}_][\p{L}\p{N}_]*| ?\p{N}+| ?[^\s\p{L}\p{N}_]+|[ \t]+|\s")
# Version 2: regexes applied in turn, each splitting the pieces of the one before, matches isolated.
PRE_SPLITS: dict[int, tuple[str, ...]] = {
    1: (PRE_SPLIT_V1,),
    2: (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", r"\p{N}"),
}
TOKENIZER_VERSION = 2
"""The pre-split new tokenizers are trained with."""
LLAMA_PRE: dict[int, str] = {2: "deepseek-coder"}
"""llama.cpp's name (GGUF `tokenizer.ggml.pre`) for the pre-split of each version it implements."""


def mask_token(i: int) -> str:
    """The i-th InCoder mask sentinel."""
    return f"<|mask:{i}|>"


def special_tokens(n_masks: int = DEFAULT_N_MASKS) -> list[str]:
    """All special tokens, in id order (they take the first ids of the vocabulary)."""
    return [EOS, PAD, EOM, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, FILE_META] + [mask_token(i) for i in range(n_masks)]


def splitter(version: int = TOKENIZER_VERSION):
    """The pre-split of `version` alone (text -> pieces, no byte mapping)."""
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r), behavior="isolated")
                                    for r in PRE_SPLITS[version]])


def _pre_tokenizer(version: int = TOKENIZER_VERSION):
    return pre_tokenizers.Sequence([
        *(pre_tokenizers.Split(Regex(r), behavior="isolated") for r in PRE_SPLITS[version]),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def _pre_json(version: int) -> dict:
    """The saved form (tokenizer.json's "pre_tokenizer") of version `version`'s pre-tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer(version)
    return json.loads(tok.to_str())["pre_tokenizer"]


class TokenizerError(ValueError):
    """A tokenizer file that is missing or not an infill tokenizer."""


def _check_own_rules(tok: Tokenizer, path: Path) -> None:
    """`TokenizerError` unless `tok` runs only infill's own rules on text: one of `PRE_SPLITS`'
    pre-tokenizers, no normalizer, no post-processor, a byte-level decoder. A tokenizer.json can hold
    any regex, and a backtracking one (`(a+)+b`) runs on the user's text for seconds, then panics;
    compared in the running library's own serialisation, so files saved by older versions pass."""
    saved = json.loads(tok.to_str())
    if next((v for v in PRE_SPLITS if _pre_json(v) == saved.get("pre_tokenizer")), None) is None:
        raise TokenizerError(f"{path}: its pre-tokenizer is not one of infill's own (versions "
                             f"{', '.join(map(str, PRE_SPLITS))}): an infill checkpoint runs no other regex on text")
    for part, allowed in (("normalizer", ()), ("post_processor", ()), ("decoder", ("ByteLevel",))):
        kind = (saved.get(part) or {}).get("type")
        if kind is not None and kind not in allowed:
            raise TokenizerError(f"{path}: has a {part.replace('_', '-')} ({kind}), which infill's tokenizers "
                                 "never have: an infill checkpoint runs no other rule on text")


class CodeTokenizer:
    """Wraps a `tokenizers.Tokenizer` with the project's special tokens and literal encoding."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        self._tok.encode_special_tokens = True  # user text is literal; sentinels come in as ids
        self.n_masks = sum(1 for t in tokenizer.get_added_tokens_decoder().values()
                           if t.content.startswith("<|mask:"))
        for s in (EOS, PAD, EOM, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, FILE_META):
            if tokenizer.token_to_id(s) is None:
                raise TokenizerError(f"tokenizer lacks the special token {s}")
        self.eos_id = self.token_id(EOS)
        self.pad_id = self.token_id(PAD)
        self.eom_id = self.token_id(EOM)
        self.fim_prefix_id = self.token_id(FIM_PREFIX)
        self.fim_suffix_id = self.token_id(FIM_SUFFIX)
        self.fim_middle_id = self.token_id(FIM_MIDDLE)
        self.file_meta_id = self.token_id(FILE_META)

    # construction -------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, n_masks: int = DEFAULT_N_MASKS,
              min_frequency: int = 2, show_progress: bool = False,
              version: int = TOKENIZER_VERSION) -> "CodeTokenizer":
        """Train byte-level BPE on `texts`; `vocab_size` counts the 256 bytes and the special tokens.
        `version` picks the pre-split (`PRE_SPLITS`); only tests of old checkpoints want another."""
        specials = special_tokens(n_masks)
        if vocab_size < 256 + len(specials):
            raise ValueError(f"vocab_size must be at least {256 + len(specials)} (bytes + special tokens)")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = _pre_tokenizer(version)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> "CodeTokenizer":
        """From `tokenizer.json` or a directory holding it."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"{path}: tokenizer file not found")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise TokenizerError(f"{path}: not a valid tokenizer.json ({str(exc).splitlines()[0]})") from None
        _check_own_rules(tok, path)
        return cls(tok)

    def save(self, directory: str | Path) -> Path:
        """Write `directory/tokenizer.json`; returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "tokenizer.json"
        self._tok.save(str(path))
        return path

    def to_json(self) -> str:
        return self._tok.to_str()

    @cached_property
    def version(self) -> int | None:
        """Which `PRE_SPLITS` this tokenizer pre-splits with (None: none of them, a foreign file)."""
        saved = json.loads(self._tok.to_str()).get("pre_tokenizer")
        return next((v for v in PRE_SPLITS if _pre_json(v) == saved), None)

    def split(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        """The pre-split pieces of `text` with their character offsets (this tokenizer's own rule)."""
        return splitter(self.version or TOKENIZER_VERSION).pre_tokenize_str(text)

    # use ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, literally (special-token strings in it are ordinary text)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens are rendered as their strings."""
        return self.token_bytes_concat(ids).decode("utf-8", errors="replace")

    def token_bytes_concat(self, ids: Iterable[int]) -> bytes:
        table = self.token_bytes
        return b"".join(table[i] for i in ids)

    def token_id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise KeyError(token)
        return i

    def mask_id(self, i: int) -> int:
        if not 0 <= i < self.n_masks:
            raise ValueError(f"mask index {i} out of range: this tokenizer has {self.n_masks} mask tokens")
        return self.token_id(mask_token(i))

    @cached_property
    def special_ids(self) -> frozenset[int]:
        return frozenset(self._tok.get_added_tokens_decoder())

    @cached_property
    def token_bytes(self) -> list[bytes]:
        """The bytes each id stands for (special tokens: their UTF-8 string). Decoding is a join."""
        byte_of = {ch: b for b, ch in _bytes_to_unicode().items()}
        table = [b""] * len(self)
        for token, i in self._tok.get_vocab(with_added_tokens=True).items():
            table[i] = bytes(byte_of[c] for c in token) if all(c in byte_of for c in token) else token.encode()
        for i, added in self._tok.get_added_tokens_decoder().items():
            table[i] = added.content.encode()
        return table

    def bpe_tables(self) -> tuple[list[str], list[str]]:
        """(tokens by id, in the byte-level alphabet; merges as "a b", by rank): the BPE model as
        GGUF's `gpt2` tokenizer stores it."""
        saved = json.loads(self._tok.to_str())["model"]
        tokens = [""] * len(self)
        for token, i in self._tok.get_vocab(with_added_tokens=True).items():
            tokens[i] = token
        merges = [m if isinstance(m, str) else " ".join(m) for m in saved["merges"]]
        return tokens, merges

    def hf_files(self) -> dict[str, str]:
        """tokenizer_config.json and special_tokens_map.json for a Hugging Face export."""
        extra = [FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, EOM, FILE_META] + [mask_token(i) for i in range(self.n_masks)]
        special_map = {"bos_token": EOS, "eos_token": EOS, "unk_token": EOS, "pad_token": PAD,
                       "additional_special_tokens": extra}
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1 << 30,
                  "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False,
                  **special_map}
        return {"tokenizer_config.json": json.dumps(config, indent=2),
                "special_tokens_map.json": json.dumps(special_map, indent=2)}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which ByteLevel uses for its vocabulary."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))

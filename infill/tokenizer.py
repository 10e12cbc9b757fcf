"""The code tokenizer: byte-level BPE (Hugging Face `tokenizers`) with code-aware pre-splitting.

Rules:
- Exact round trip: `decode(encode(text)) == text` for any string (byte-level, no normalisation).
- No token crosses a newline: text is pre-split so that every line break is its own piece (InCoder).
- Runs of spaces and tabs (indentation) are pieces of their own, so BPE learns them as tokens;
  a single space still attaches to the following word, as in GPT-2.
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

# Pieces: a line break; a word (optionally after one space); a number; a punctuation run;
# a run of spaces/tabs; any other single whitespace character.
PRE_SPLIT = (r"\r\n|\n|\r| ?[\p{L}_][\p{L}\p{N}_]*| ?\p{N}+| ?[^\s\p{L}\p{N}_]+|[ \t]+|\s")


def mask_token(i: int) -> str:
    """The i-th InCoder mask sentinel."""
    return f"<|mask:{i}|>"


def special_tokens(n_masks: int = DEFAULT_N_MASKS) -> list[str]:
    """All special tokens, in id order (they take the first ids of the vocabulary)."""
    return [EOS, PAD, EOM, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, FILE_META] + [mask_token(i) for i in range(n_masks)]


def _pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


class TokenizerError(ValueError):
    """A tokenizer file that is missing or not an infill tokenizer."""


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
              min_frequency: int = 2, show_progress: bool = False) -> "CodeTokenizer":
        """Train byte-level BPE on `texts`; `vocab_size` counts the 256 bytes and the special tokens."""
        specials = special_tokens(n_masks)
        if vocab_size < 256 + len(specials):
            raise ValueError(f"vocab_size must be at least {256 + len(specials)} (bytes + special tokens)")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = _pre_tokenizer()
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

"""FIM prompt templates of pretrained models, as text: every sentinel string of every family, once.

A template renders (prefix, suffix) into the prompt text that precedes the middle, and names the
tokens that end the middle. User text never carries sentinels: `clean` removes every special-token
string before rendering, so the only sentinels in a prompt are the template's own.

Families (PSM unless the name ends in `-spm`, which puts the suffix first, as in Code Llama's SPM):
- starcoder: `<fim_prefix>`, `<fim_suffix>`, `<fim_middle>` (StarCoder, StarCoder2)
- santacoder: `<fim-prefix>`, `<fim-suffix>`, `<fim-middle>`
- deepseek: `<｜fim▁begin｜>`, `<｜fim▁hole｜>`, `<｜fim▁end｜>` (DeepSeek-Coder; BOS first)
- qwen: `<|fim_prefix|>`, `<|fim_suffix|>`, `<|fim_middle|>` (Qwen2.5-Coder)
- codellama: `<PRE> prefix <SUF>suffix <MID>` (Code Llama; BOS first, ends at `<EOT>`)
- incoder: `prefix<|mask:0|>suffix<|mask:1|><|mask:0|>`, ends at `<|endofmask|>` (InCoder)
- infill: this project's exported models (the qwen-style sentinels, ends at `<|endofmask|>`, and the
  `<|file|> ext=.py` header when the file extension is known)
- llama-infill: llama.cpp's native `/infill` endpoint (llama.vim's and llama.vscode's protocol): the
  request carries `input_prefix`, `input_suffix` and `input_extra` and the server builds the prompt
  from the FIM tokens its GGUF file marks (prefix first, or suffix first under `--spm-infill`), so
  this template has no text of its own (`native`) and only a server can use it.

Repository formats (`Template.repo`): how other files of the project (`InfillRequest.context`) come
before the current file's prompt, as each family was trained on them. They come first, so typing at
the cursor still only appends tokens.
- qwen: `<|repo_name|>name\n`, then `<|file_sep|>path\ntext\n` per file, then `<|file_sep|>path\n`
  for the current file (Qwen2.5-Coder's repository-level format).
- starcoder: `<repo_name>name`, then `<file_sep>path\ntext` per file, then `<file_sep>path\n`
  (StarCoder2's).
- infill: every file behind its `<|file|> ext=.py` header and ended by `<|endoftext|>`, as the
  default model's repository-level packing trains it.
- comment (DeepSeek-Coder and the rest): each file's path as a comment line above its text
  (`# utils.py`), the form of DeepSeek-Coder's repository-level pretraining.
"""
from __future__ import annotations

from dataclasses import dataclass

from infill import tokenizer as infill_tokens


@dataclass(frozen=True)
class Template:
    name: str
    pre: str
    suf: str
    mid: str
    stops: tuple[str, ...]
    """Tokens that end the middle, besides the tokenizer's EOS."""
    spm: bool = False
    bos: bool = False
    """Start with the tokenizer's BOS token."""
    pad: str = ""
    """Text around the prefix for families that expect it (Code Llama's spaces)."""
    incoder: bool = False
    meta: str = ""
    """The file-metadata sentinel, for families trained with a header (`<|file|> ext=.py` and a line
    break before the prompt; this project's models)."""
    repo: str = "comment"
    """The repository format: qwen, starcoder, infill or comment (see the module docstring)."""
    native: str = ""
    """The server endpoint that builds the prompt itself from the request's parts (`/infill`); such a
    template renders no text."""

    def header(self, ext: str | None) -> list[tuple[str, bool]]:
        """The file-metadata header for extension `ext`, as pieces ([] without one)."""
        return [(self.meta, True), (f" ext={ext}\n", False)] if self.meta and ext else []

    @property
    def ends_in_prefix(self) -> bool:
        """The prompt ends in the prefix's text (SPM): the cursor token can be healed."""
        return self.spm and not self.incoder

    @property
    def repo_sentinels(self) -> tuple[str, ...]:
        """The special tokens the repository format needs (a model without them gets no context)."""
        return {"qwen": ("<|repo_name|>", "<|file_sep|>"), "starcoder": ("<file_sep>",),
                "infill": (infill_tokens.FILE_META, infill_tokens.EOS)}.get(self.repo, ())

    def context_pieces(self, context, path: str | None = None, repo: str | None = None
                       ) -> list[tuple[str, bool]]:
        """The repository context (`(path, text)` chunks, in prompt order) and the current file's
        name, as pieces that precede the hole's prompt ([] without context)."""
        if not context:
            return []
        S = lambda s: (s, True)  # noqa: E731
        T = lambda s: (s, False)  # noqa: E731
        out: list[tuple[str, bool]] = []
        if self.repo == "qwen":
            out += [S("<|repo_name|>"), T(f"{repo}\n")] if repo else []
            for p, text in context:
                out += [S("<|file_sep|>"), T(f"{p}\n{text}" + ("" if text.endswith("\n") else "\n"))]
            out += [S("<|file_sep|>"), T(f"{path}\n")] if path else [S("<|file_sep|>")]
        elif self.repo == "starcoder":
            for p, text in context:
                out += [S("<file_sep>"), T(f"{p}\n{text}")]
            out += [S("<file_sep>"), T(f"{path}\n")] if path else [S("<file_sep>")]
        elif self.repo == "infill":
            for p, text in context:
                ext = _ext(p)
                out += ([S(self.meta), T(f" ext={ext}\n")] if ext else []) + [T(text), S(infill_tokens.EOS)]
        else:
            for p, text in context:
                out.append(T(f"{_comment(p)} {p}\n{text}" + ("" if text.endswith("\n") else "\n")))
            if path:
                out.append(T(f"{_comment(path)} {path}\n"))
        return [x for x in out if x[0]]

    def pieces(self, prefix: str, suffix: str, ext: str | None = None, context=(), path: str | None = None,
               repo: str | None = None) -> list[tuple[str, bool]]:
        """The prompt for one hole as (text, is_sentinel) pieces; generation continues it. `context`:
        (path, text) chunks of other files, in prompt order (see the repository formats)."""
        if self.native:
            raise ValueError(f"the {self.name} template is built by the server ({self.native}); "
                             "use it with --model openai:URL")
        S = lambda s: (s, True)  # noqa: E731
        T = lambda s: (s, False)  # noqa: E731
        if self.incoder:
            out = [T(prefix), S(self.pre), T(suffix), S(self.suf), S(self.pre)]
        elif self.spm:
            p = self.pad
            out = [S(self.pre), T(p), S(self.suf), T(suffix + p), S(self.mid), T(p + prefix)]
        else:
            p = self.pad
            out = [S(self.pre), T(p + prefix + p), S(self.suf), T(suffix + p), S(self.mid)]
        return self.context_pieces(context, path, repo) + self.header(ext) + [x for x in out if x[0]]

    def render(self, prefix: str, suffix: str, ext: str | None = None, context=(), path: str | None = None,
               repo: str | None = None) -> str:
        """The prompt as one string (for a server that parses sentinels in its prompt)."""
        return "".join(text for text, _ in self.pieces(prefix, suffix, ext, context, path, repo))

    @property
    def sentinels(self) -> tuple[str, ...]:
        return tuple(s for s in (self.pre, self.suf, self.mid, self.meta, *self.stops) if s)


def _ext(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[name.rfind("."):].lower() if "." in name[1:] else ""


def _comment(path: str) -> str:
    """The line-comment marker of a file's language ("#" or "//")."""
    return "#" if _ext(path) in (".py", ".pyi", ".sh", ".bash", ".zsh", ".rb", ".r", ".pl", ".toml", ".yaml",
                                 ".yml") else ("--" if _ext(path) == ".lua" else "//")


_QWEN_STOPS = ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>")
_FAMILIES: dict[str, Template] = {
    "starcoder": Template("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
                          ("<|endoftext|>", "<file_sep>", "<fim_pad>"), repo="starcoder"),
    "santacoder": Template("santacoder", "<fim-prefix>", "<fim-suffix>", "<fim-middle>", ("<|endoftext|>",)),
    "deepseek": Template("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
                         ("<｜end▁of▁sentence｜>", "<|EOT|>"), bos=True),
    "qwen": Template("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", _QWEN_STOPS, repo="qwen"),
    "codellama": Template("codellama", "<PRE>", "<SUF>", "<MID>", ("<EOT>",), bos=True, pad=" "),
    "incoder": Template("incoder", infill_tokens.mask_token(0), infill_tokens.mask_token(1), "",
                        (infill_tokens.EOM,), incoder=True),
    "infill": Template("infill", infill_tokens.FIM_PREFIX, infill_tokens.FIM_SUFFIX, infill_tokens.FIM_MIDDLE,
                       (infill_tokens.EOM, infill_tokens.EOS), meta=infill_tokens.FILE_META, repo="infill"),
}
TEMPLATES: dict[str, Template] = dict(_FAMILIES)
TEMPLATES.update({f"{k}-spm": Template(**{**v.__dict__, "name": f"{k}-spm", "spm": True})
                  for k, v in _FAMILIES.items() if not v.incoder})
TEMPLATES["llama-infill"] = Template("llama-infill", "", "", "", (), native="/infill")

# Detection order: most specific first (an infill export also has qwen-style and InCoder sentinels).
_DETECT = (
    ("infill-spm", (infill_tokens.FILE_META, infill_tokens.EOM, infill_tokens.FIM_PREFIX)),
    ("qwen", ("<|fim_prefix|>", "<|fim_middle|>")),
    ("starcoder", ("<fim_prefix>", "<fim_middle>")),
    ("santacoder", ("<fim-prefix>", "<fim-middle>")),
    ("deepseek", ("<｜fim▁begin｜>", "<｜fim▁hole｜>")),
    ("codellama", ("<PRE>", "<MID>")),
    ("codellama", ("▁<PRE>", "▁<MID>")),
    ("incoder", (infill_tokens.mask_token(0), infill_tokens.EOM)),
)


def get(name: str) -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"unknown FIM template {name!r}; choose from {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]


def detect(vocab: set[str] | dict) -> Template:
    """The template whose sentinels the vocabulary has; `ValueError` naming `--template` otherwise."""
    for name, needed in _DETECT:
        if all(tok in vocab for tok in needed):
            return TEMPLATES[name]
    raise ValueError("cannot tell the model's FIM template from its tokenizer's special tokens; "
                     f"pass --template ({', '.join(sorted(TEMPLATES))})")


def clean(text: str, specials: list[str] | tuple[str, ...]) -> str:
    """`text` with every special-token string removed (longest first, until none is left)."""
    specials = sorted({s for s in specials if s}, key=len, reverse=True)
    while True:
        before = text
        for s in specials:
            text = text.replace(s, "")
        if text == before:
            return text

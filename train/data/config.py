"""The one configuration object of the data pipeline.

Every threshold a rule uses lives here, with its default and the paper it comes from, so a run's
report can record exactly what was applied (`DataConfig.to_dict`). Bad values raise `ValueError`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from infill.corpus import HELD_OUT_PACKAGES, package_key

# Permissive SPDX ids kept by default. Anything else (GPL, LGPL, AGPL, MPL, proprietary, unknown)
# is counted and dropped unless named in `DataConfig.licenses`.
PERMISSIVE_LICENSES: tuple[str, ...] = (
    "0BSD", "Apache-2.0", "BSD-1-Clause", "BSD-2-Clause", "BSD-3-Clause", "BSD-3-Clause-Clear",
    "BSL-1.0", "BlueOak-1.0.0", "CC0-1.0", "CNRI-Python", "HPND", "ISC", "MIT", "MIT-0", "MIT-CMU", "NCSA",
    "PSF-2.0", "Python-2.0", "Unlicense", "UPL-1.0", "X11", "Zlib",
)


@dataclass
class DataConfig:
    """Thresholds and switches of `infill data build`."""

    licenses: tuple[str, ...] = PERMISSIVE_LICENSES
    """SPDX ids to keep. An expression `A OR B` is kept if any side is; `A AND B` if both are.
    Add "unknown" to keep files whose license could not be found."""
    languages: tuple[str, ...] | None = None
    """Languages to keep (names from `infill.corpus.LANGUAGES`); None keeps every known language."""
    max_file_bytes: int = 1_000_000
    """Drop files larger than this (CodeParrot: 1 MB). Larger files are never read into memory."""
    max_line_length: int = 1000
    """Drop files with any line longer than this many characters (CodeParrot, PolyCoder)."""
    max_mean_line_length: float = 100.0
    """Drop files whose mean line length exceeds this (CodeParrot)."""
    min_alnum_fraction: float = 0.25
    """Drop files whose alphanumeric character fraction is below this (CodeParrot)."""
    autogen_lines: int = 5
    """Look for "auto-generated" / "do not edit" markers in this many first lines (CodeParrot)."""
    near_threshold: float = 0.7
    """Jaccard similarity above which two files are near duplicates (CodeParrot, OpenCoder: 0.7)."""
    num_perm: int = 256
    """MinHash permutations."""
    shingle_size: int = 5
    """Tokens per shingle for MinHash."""
    decontam_ngram: int = 13
    """Words per n-gram shared with a benchmark that marks a file as contaminated (GPT-3: 13)."""
    held_out: tuple[str, ...] = ()
    """Extra files or directories (text, .jsonl, .jsonl.gz) to decontaminate against."""
    exclude_packages: tuple[str, ...] = HELD_OUT_PACKAGES
    """Sources (installed distributions, by name) never harvested. The default keeps the held-out
    package of `infill eval rest-of-line` (`infill.corpus.HELD_OUT_PACKAGES`) out of every corpus."""
    benchmarks: bool = True
    """Decontaminate against the shipped HumanEval-infilling splits."""
    val_fraction: float = 0.05
    """Share of split groups (repositories or packages) sent to the validation split."""
    seed: int = 0
    """Salt of the train/validation hash and seed of the MinHash permutations."""
    shard_bytes: int = 64_000_000
    """Uncompressed bytes of text per output shard before a new one is started."""
    redact: bool = True
    """Replace emails, IP addresses, keys and tokens by placeholders."""

    def __post_init__(self) -> None:
        self.licenses = tuple(self.licenses)
        if self.languages is not None:
            from infill.corpus import LANGUAGES

            self.languages = tuple(self.languages)
            unknown = sorted(set(self.languages) - set(LANGUAGES.values()))
            if unknown:
                raise ValueError(f"unknown languages {unknown}; known: {sorted(set(LANGUAGES.values()))}")
        self.held_out = tuple(str(p) for p in self.held_out)
        self.exclude_packages = tuple(package_key(str(p)) for p in self.exclude_packages)
        if not self.licenses:
            raise ValueError("licenses must name at least one SPDX id")
        for name in ("max_file_bytes", "max_line_length", "num_perm", "shingle_size",
                     "decontam_ngram", "shard_bytes", "autogen_lines"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_mean_line_length <= 0:
            raise ValueError(f"max_mean_line_length must be positive, got {self.max_mean_line_length}")
        if not 0.0 <= self.min_alnum_fraction <= 1.0:
            raise ValueError(f"min_alnum_fraction must be in [0, 1], got {self.min_alnum_fraction}")
        if not 0.0 < self.near_threshold <= 1.0:
            raise ValueError(f"near_threshold must be in (0, 1], got {self.near_threshold}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict:
        """JSON-ready copy of every field, for the run report."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


"""Training configuration: dataclasses with one docstring per field, checked in `__post_init__`.

A run is fully described by a `TrainConfig` (the model shape is a preset name plus overrides);
recipes (`train.recipes`) are functions returning one, and `--set key=value` edits it
(`apply_overrides`). The config is written into every checkpoint, so `--resume` needs no flags.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from infill.config import ATTENTION_BACKENDS, PRESETS, ModelConfig
from train.budget import parse_duration

SCHEDULES = ("cosine", "wsd")
OPTIMIZERS = ("adamw", "muon")
DTYPES = ("auto", "float32", "bfloat16")
PARALLEL = ("ddp", "fsdp")


@dataclass
class ObjectiveConfig:
    """How each document becomes a training example (see `train.masking`). Rates are per document."""

    causal_rate: float = 0.5
    """InCoder causal masking: Poisson(1) spans (truncated to [1, max_spans]) moved to the end."""
    spm_rate: float = 0.2
    """Single-span FIM in SPM order (what the language server prompts with)."""
    psm_rate: float = 0.1
    """Single-span FIM in PSM order."""
    l2r_rate: float = 0.2
    """Plain left-to-right. The four rates sum to 1; `l2r_rate=1` is the left-to-right ablation."""
    max_spans: int = 16
    """K: most spans per causal-masking example (also capped by the tokenizer's mask tokens - 1)."""
    syntax_rate: float = 0.5
    """Share of span choices (Python documents) that use syntax-aware spans instead of random ones."""
    node_weight: float = 0.6
    """Among syntax-aware choices: whole expressions, statements and blocks."""
    identifier_weight: float = 0.2
    """Among syntax-aware choices: every occurrence of one identifier (teaches renaming)."""
    annotation_weight: float = 0.2
    """Among syntax-aware choices: type-annotation slots (teaches type inference)."""
    header_rate: float = 0.5
    """Share of examples that start with the file-metadata header (`<|file|> ext=.py`)."""

    def __post_init__(self) -> None:
        rates = {"causal_rate": self.causal_rate, "spm_rate": self.spm_rate, "psm_rate": self.psm_rate,
                 "l2r_rate": self.l2r_rate}
        for name, value in {**rates, "syntax_rate": self.syntax_rate, "header_rate": self.header_rate,
                            "node_weight": self.node_weight, "identifier_weight": self.identifier_weight,
                            "annotation_weight": self.annotation_weight}.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"objective.{name} must be in [0, 1], got {value}")
        if abs(sum(rates.values()) - 1.0) > 1e-6:
            raise ValueError(f"objective rates {rates} must sum to 1")
        if self.node_weight + self.identifier_weight + self.annotation_weight <= 0:
            raise ValueError("objective: at least one syntax-aware span kind needs a positive weight")
        if self.max_spans < 1:
            raise ValueError(f"objective.max_spans must be >= 1, got {self.max_spans}")

    @property
    def eval_format(self) -> str:
        """The prompt format the model is evaluated (and served) with: spm, psm, incoder or l2r."""
        for fmt, rate in (("spm", self.spm_rate), ("psm", self.psm_rate), ("incoder", self.causal_rate)):
            if rate > 0:
                return fmt
        return "l2r"


@dataclass
class TrainConfig:
    """One training run: model, data, objective, optimisation, evaluation, checkpoints, parallelism."""

    # model ------------------------------------------------------------------------------------
    model: str = "test-tiny"
    """Model preset name (`infill.config.PRESETS`)."""
    model_overrides: dict = field(default_factory=dict)
    """ModelConfig fields replacing the preset's (`--set model.n_layer=4`)."""
    # data -------------------------------------------------------------------------------------
    data: str | None = None
    """Corpus directory written by `infill data build`; None builds the small standard-library corpus."""
    tokenizer: str | None = None
    """tokenizer.json (or its directory). None: DATA/tokenizer.json if present, else trained on the corpus."""
    stdlib_modules: int = 24
    """Without `data`: how many standard-library modules form the corpus (a sixth held out)."""
    seq_len: int = 256
    """Tokens per packed row (the training context)."""
    pack_by: str = "file"
    """file: every file is its own attention segment; repo: the files of one package (record
    `source`) follow each other and share one segment, each behind its `<|file|>` header."""
    pack_chunk_kb: int = 16
    """With `pack_by=repo`: a package is visited in chunks of consecutive files (path order) of about
    this many KB, the chunks of all packages shuffled together (so no package fills the stream)."""
    num_workers: int = 0
    """Loader worker processes that mask documents (0: in the training process)."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """The causal-masking objective mix."""
    # optimisation -----------------------------------------------------------------------------
    steps: int = 100
    """Optimizer steps (ignored when `time_budget` is set: then time decides)."""
    time_budget: str = ""
    """Wall time of the run, e.g. 90m, 2h, 300s (train.budget): WSD whose decay starts at
    `1 - decay_fraction` of the budget, its length placed from the measured throughput. "" = `steps`."""
    batch_tokens: int = 4096
    """Global tokens per optimizer step (all ranks and accumulation micro-batches together)."""
    micro_batch: int = 8
    """Rows per forward pass on one rank; gradient accumulation makes up the rest of the batch."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a share of `lr`."""
    warmup_steps: int = 10
    """Linear warm-up steps."""
    schedule: str = "cosine"
    """After warm-up: cosine decay, or wsd (warmup-stable-decay: flat, then linear decay)."""
    decay_fraction: float = 0.2
    """wsd: share of the steps spent in the final decay."""
    optimizer: str = "adamw"
    """adamw, or muon (torch.optim.Muon on the hidden weight matrices, AdamW on embeddings and norms)."""
    muon_momentum: float = 0.95
    """Muon: Nesterov momentum of the matrix updates."""
    weight_decay: float = 0.1
    """Decoupled weight decay, on matrices only (not norms, biases or embeddings)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 turns clipping off)."""
    seed: int = 1234
    """Seeds the model initialisation and every masking decision."""
    # hardware ---------------------------------------------------------------------------------
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    dtype: str = "auto"
    """auto (bf16 autocast on CUDA, where it is faster; fp32 on CPU), float32 or bfloat16."""
    compile: bool = False
    """torch.compile the model."""
    attention_backend: str = "auto"
    """auto (triton on CUDA, sdpa on CPU) or one of infill.config.ATTENTION_BACKENDS."""
    parallel: str = "ddp"
    """Under torchrun: ddp (replicated) or fsdp (FSDP2 `fully_shard`)."""
    # evaluation, logs, checkpoints ------------------------------------------------------------
    eval_every: int = 50
    """Evaluate every this many steps (and at the end); 0 turns evaluation off."""
    eval_rows: int = 8
    """Packed validation rows for the validation loss."""
    eval_bpb_docs: int = 16
    """Validation documents (first chunk each) scored for bits per byte per language."""
    eval_infill: int = 16
    """Held-out single-line spans scored for infill exact match (greedy)."""
    eval_max_tokens: int = 32
    """Most tokens generated per held-out span."""
    log_every: int = 1
    """Write a JSONL/TensorBoard record every this many steps."""
    tensorboard: bool = True
    """Also write TensorBoard event files under OUT/tb."""
    progress: bool = True
    """tqdm progress bar on stderr."""
    ckpt_every: int = 50
    """Write a checkpoint every this many steps (and at the end); 0: only at the end."""
    keep_last: int = 3
    """Checkpoints kept; older ones are deleted after a new one is complete."""

    def __post_init__(self) -> None:
        if isinstance(self.objective, dict):
            self.objective = ObjectiveConfig(**self.objective)
        if self.model not in PRESETS:
            raise ValueError(f"unknown model preset {self.model!r}; choose one of {', '.join(PRESETS)}")
        self.model_config()  # validates the overrides
        for name in ("seq_len", "steps", "batch_tokens", "micro_batch", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "warmup_steps", "eval_every", "eval_rows", "eval_bpb_docs", "eval_infill",
                     "eval_max_tokens", "ckpt_every", "grad_clip", "weight_decay", "stdlib_modules"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if self.seq_len > self.model_config().max_seq_len:
            raise ValueError(f"seq_len {self.seq_len} exceeds the model's max_seq_len "
                             f"{self.model_config().max_seq_len}")
        if self.batch_tokens % self.seq_len:
            raise ValueError(f"batch_tokens {self.batch_tokens} is not a multiple of seq_len {self.seq_len}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"need lr > 0 and 0 <= min_lr_ratio <= 1, got {self.lr}, {self.min_lr_ratio}")
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.time_budget:
            parse_duration(self.time_budget)
            if self.schedule != "wsd":
                raise ValueError("time_budget needs schedule=wsd (a cosine needs the step count in advance)")
        if not 0 <= self.muon_momentum < 1:
            raise ValueError(f"muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if self.pack_chunk_kb < 1:
            raise ValueError(f"pack_chunk_kb must be >= 1, got {self.pack_chunk_kb}")
        checks = (("schedule", SCHEDULES), ("optimizer", OPTIMIZERS), ("pack_by", ("file", "repo")),
                  ("dtype", DTYPES), ("parallel", PARALLEL),
                  ("device", ("auto", "cpu", "cuda")), ("attention_backend", ("auto",) + ATTENTION_BACKENDS))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def rows_per_step(self) -> int:
        """Packed rows per optimizer step, over all ranks."""
        return self.batch_tokens // self.seq_len

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per rank per step; raises ValueError when the batch does not divide evenly."""
        per_pass = self.micro_batch * world_size
        if self.rows_per_step % per_pass:
            raise ValueError(f"batch_tokens/seq_len = {self.rows_per_step} rows is not a multiple of "
                             f"micro_batch x world_size = {self.micro_batch} x {world_size}")
        return self.rows_per_step // per_pass

    def model_config(self) -> ModelConfig:
        """The ModelConfig of this run (the preset with `model_overrides` applied)."""
        overrides = dict(self.model_overrides)
        overrides.setdefault("prompt_format", self.objective.eval_format)
        return ModelConfig.from_preset(self.model, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**data)


def _parse_value(text: str, current):
    """A `--set` value typed like the field it replaces (JSON where that is ambiguous)."""
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str) or current is None:
        return None if text.lower() in ("none", "null") else text
    return json.loads(text)


def apply_overrides(config: TrainConfig, items: list[str]) -> TrainConfig:
    """A new config with `key=value` items applied: `steps=200`, `objective.l2r_rate=1`,
    `model.n_layer=4` (a ModelConfig field). Raises ValueError naming a bad key or value."""
    data = config.to_dict()
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key = key.strip()
        try:
            if key.startswith("model."):
                name = key.split(".", 1)[1]
                base = ModelConfig.from_preset(data["model"]).to_dict()
                if name not in base:
                    raise ValueError(f"unknown model field {name!r}")
                data["model_overrides"][name] = _parse_value(text, base[name])
            elif key.startswith("objective."):
                name = key.split(".", 1)[1]
                if name not in data["objective"]:
                    raise ValueError(f"unknown objective field {name!r}")
                data["objective"][name] = _parse_value(text, data["objective"][name])
            else:
                if key not in data:
                    raise ValueError(f"unknown config field {key!r}")
                data[key] = _parse_value(text, data[key])
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"--set {item}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"--set {item}: {exc}") from None
    return TrainConfig.from_dict(data)

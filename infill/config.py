"""Model configuration: one dataclass, derived fields in `__post_init__`, named presets in one dict.

The field names describe a Llama-style decoder; `to_hf_config` maps them one to one onto
Hugging Face's `LlamaConfig`, which is what makes `infill export --hf` a pure renaming-free copy.

A model directory is untrusted input: its config decides how much memory loading allocates (a
`max_seq_len` of 2**22 alone took the language server from 0.5 to 4.1 GB, in RoPE tables). So every
size has an upper bound (`LIMITS`, each above any released open model's), and `check_fits` compares
what loading and one full context will take (`load_bytes`, `hf_load_bytes`) with the memory the
machine has, before anything is allocated.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

ATTENTION_BACKENDS = ("sdpa", "ref", "triton", "flash_attn")
PROMPT_FORMATS = ("spm", "psm", "incoder", "l2r")
"""How a model is prompted (`infill.formats`): suffix first, prefix first, InCoder masks, or the prefix
alone (left to right: the ablation trained without infilling)."""
LIMITS: dict[str, int] = {
    "vocab_size": 2**20, "dim": 2**16, "n_layer": 1024, "n_head": 1024, "n_kv_head": 1024,
    "intermediate_size": 2**19, "max_seq_len": 2**20,
}
"""Largest accepted value of each size field (Qwen2.5-1M's 1,010,000-token context is below 2**20)."""
ROPE_PEAK = 3.5
"""float32 (L, head_dim) arrays alive at once while `infill.model.rope_table` builds cos and sin."""


def _swiglu_hidden(dim: int, multiple_of: int = 256) -> int:
    """Llama's rule: 2/3 of 4*dim, rounded up to a multiple (keeps SwiGLU's cost equal to a 4x MLP)."""
    hidden = int(2 * 4 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass
class ModelConfig:
    """Shape and behaviour of an infill decoder (RoPE, RMSNorm, SwiGLU, optional GQA)."""

    vocab_size: int = 16384
    """Rows of the embedding; must cover the tokenizer, special tokens included."""
    dim: int = 384
    """Width of the residual stream (HF: hidden_size)."""
    n_layer: int = 6
    """Number of decoder blocks."""
    n_head: int = 6
    """Query heads."""
    n_kv_head: int | None = None
    """Key/value heads; fewer than `n_head` is grouped-query attention. None means `n_head`."""
    intermediate_size: int | None = None
    """SwiGLU hidden width. None derives Llama's 8/3 * dim rounded to 256."""
    max_seq_len: int = 2048
    """Context length in tokens: the longest prompt plus completion the model is trained for."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    tie_embeddings: bool = False
    """Share the input embedding with the output projection."""
    attention_backend: str = "sdpa"
    """Attention implementation: sdpa (default), ref (plain PyTorch), triton (CUDA), flash_attn."""
    prompt_format: str = "spm"
    """Prompt format used for single-hole infilling at inference: spm, psm or incoder."""
    head_dim: int = field(init=False)
    """Derived: dim // n_head."""

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.intermediate_size is None:
            self.intermediate_size = _swiglu_hidden(self.dim)
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
                raise ValueError(f"ModelConfig.{name} must be an integer in 1..{limit}, got {value!r}")
        if self.dim % self.n_head:
            raise ValueError(f"dim {self.dim} is not a multiple of n_head {self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head {self.n_head} is not a multiple of n_kv_head {self.n_kv_head}")
        for name, low, high in (("rope_theta", 1.0, 1e12), ("norm_eps", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low < value < high:
                raise ValueError(f"ModelConfig.{name} must be a number between {low:g} and {high:g}, got {value!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"ModelConfig.tie_embeddings must be true or false, got {self.tie_embeddings!r}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {self.prompt_format!r}")
        self.head_dim = self.dim // self.n_head

    def to_dict(self) -> dict:
        """The fields a constructor takes (derived ones left out), for config.json."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Inverse of `to_dict`; unknown keys are an error so that typos do not pass silently."""
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ModelConfig":
        """A named preset, with fields replaced by `overrides`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def num_params(self) -> int:
        """Parameter count, computed from the shapes (embeddings counted once when tied)."""
        d, kv = self.dim, self.n_kv_head * self.head_dim
        attn = d * d * 2 + d * kv * 2
        mlp = 3 * d * self.intermediate_size
        per_layer = attn + mlp + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.n_layer * per_layer + emb + d

    def load_bytes(self, dtype_bytes: int = 4) -> int:
        """Bytes that loading this model and filling its whole context once take: the weights, the
        RoPE tables while they are built, and one KV cache of `max_seq_len` tokens."""
        weights = self.num_params() * dtype_bytes
        rope = int(ROPE_PEAK * self.max_seq_len * self.head_dim * 4)
        kv = 2 * self.n_layer * self.max_seq_len * self.n_kv_head * self.head_dim * dtype_bytes
        return weights + rope + kv

    def to_hf_config(self, *, bos_token_id: int, eos_token_id: int, pad_token_id: int | None = None) -> dict:
        """The equivalent Hugging Face `LlamaConfig` as a dict (config.json of an exported model)."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.n_layer,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_kv_head,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": False,
            "mlp_bias": False,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "pad_token_id": pad_token_id,
            "torch_dtype": "float32",
        }


PRESETS: dict[str, dict] = {
    # Well under 1M parameters: unit tests build it in milliseconds.
    "test-tiny": dict(vocab_size=1024, dim=64, n_layer=2, n_head=4, n_kv_head=2, intermediate_size=160,
                      max_seq_len=512, tie_embeddings=True),
    # ~16M parameters: the CPU-trained default model.
    "small": dict(vocab_size=16384, dim=384, n_layer=6, n_head=6, n_kv_head=2, intermediate_size=1024,
                  max_seq_len=2048, tie_embeddings=True),
    # ~125M parameters: the GPU research size.
    "base": dict(vocab_size=32768, dim=768, n_layer=12, n_head=12, n_kv_head=4, intermediate_size=2048,
                 max_seq_len=2048),
    # OpenCoder-1.5B's shape (Huang et al. 2024).
    "opencoder-1.5b": dict(vocab_size=96640, dim=2240, n_layer=24, n_head=14, n_kv_head=14,
                           intermediate_size=6144, max_seq_len=4096, rope_theta=10000.0),
    # PolyCoder-2.7B's shape (Xu et al. 2022) with a SwiGLU MLP of equal cost to its 4x GeLU MLP.
    "polycoder-2.7b": dict(vocab_size=50304, dim=2560, n_layer=32, n_head=32, n_kv_head=32,
                           intermediate_size=6912, max_seq_len=2048),
}


_HF_KEYS: dict[str, tuple[str, ...]] = {
    "vocab_size": ("vocab_size",),
    "dim": ("hidden_size", "n_embd", "d_model"),
    "n_layer": ("num_hidden_layers", "n_layer", "num_layers"),
    "n_head": ("num_attention_heads", "n_head"),
    "n_kv_head": ("num_key_value_heads", "multi_query_group_num"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "max_seq_len": ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"),
}


def hf_load_bytes(data: dict, dtype_bytes: int = 4) -> int:
    """What `ModelConfig.load_bytes` says, for a Hugging Face config.json (`data`, its text part for a
    multimodal one); `ValueError` naming the key when a size is not an integer within `LIMITS`. Keys
    it does not know count as the smallest value, so the estimate is a lower bound."""
    if isinstance(data.get("text_config"), dict):
        data = {**data, **data["text_config"]}
    sizes: dict[str, int] = {}
    for name, keys in _HF_KEYS.items():
        for key in keys:
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= LIMITS[name]:
                raise ValueError(f"{key} must be an integer in 1..{LIMITS[name]}, got {value!r}")
            sizes[name] = value
            break
    dim, layers = sizes.get("dim", 1), sizes.get("n_layer", 1)
    heads = sizes.get("n_head", 1)
    head_dim = data.get("head_dim") if isinstance(data.get("head_dim"), int) and 0 < data["head_dim"] <= 2**14 \
        else max(dim // heads, 1)
    kv = sizes.get("n_kv_head", heads) * head_dim
    per_layer = dim * heads * head_dim * 2 + dim * kv * 2 + 3 * dim * sizes.get("intermediate_size", 4 * dim)
    emb = sizes.get("vocab_size", 1) * dim * (1 if data.get("tie_word_embeddings", True) else 2)
    context = sizes.get("max_seq_len", 1)
    return (layers * per_layer + emb) * dtype_bytes + 2 * layers * context * kv * dtype_bytes


def available_bytes(device: str = "cpu") -> int | None:
    """Memory a load can use now: free memory of a CUDA device, else the machine's available RAM
    (MemAvailable, else physical pages); None when it cannot be told."""
    if str(device).startswith("cuda"):
        try:
            import torch

            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(needed: int, available: int | None, what: str) -> None:
    """`ValueError` (one line) when `needed` bytes exceed `available` (None: unknown, no check)."""
    if available is not None and needed > available:
        raise ValueError(f"{what} needs about {needed / 2**30:.1f} GiB (weights and one full context) "
                         f"but only {available / 2**30:.1f} GiB is available")

"""The decoder: Llama-style (RoPE, RMSNorm, SwiGLU, optional GQA and tied embeddings).

Parameter names and layouts are Hugging Face Llama's (`model.layers.0.self_attn.q_proj.weight`,
RoPE in the rotate-half convention), so a state dict is an HF checkpoint as it is.
`forward` returns logits; the loss lives with the trainer. A KV cache is owned by the caller and
written at the explicit position `start_pos`; the model never advances it (generation does).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from infill.attention import attention
from infill.config import ModelConfig


class KVCache:
    """Pre-allocated keys and values for every layer: (n_layer, B, max_len, Hkv, D) each."""

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (config.n_layer, batch_size, max_len, config.n_kv_head, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (B, T, Hkv, D) at [start, start + T); return the valid keys and values so far."""
        end = start + k.shape[1]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} tokens; writing up to position {end}")
        self.k[layer, :, start:end] = k
        self.v[layer, :, start:end] = v
        return self.k[layer, :, :end], self.v[layer, :, :end]

    def expand(self, batch_size: int) -> "KVCache":
        """A new cache with row 0 copied into `batch_size` rows (for n candidates of one prompt)."""
        new = KVCache.__new__(KVCache)
        new.k = self.k[:, :1].expand(-1, batch_size, -1, -1, -1).clone()
        new.v = self.v[:, :1].expand(-1, batch_size, -1, -1, -1).clone()
        return new


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_table(length: int, head_dim: int, theta: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (length, D) for positions 0..length-1 (HF's rotate-half layout)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    freqs = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq  # (L, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.backend = config.attention_backend
        kv_dim = config.n_kv_head * config.head_dim
        self.q_proj = nn.Linear(config.dim, config.dim, bias=False)
        self.k_proj = nn.Linear(config.dim, kv_dim, bias=False)
        self.v_proj = nn.Linear(config.dim, kv_dim, bias=False)
        self.o_proj = nn.Linear(config.dim, config.dim, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None, start_pos: int, doc_ids):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim)  # (B, T, Hq, D)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, Hkv, D)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, start_pos, k, v)  # (B, start_pos + T, Hkv, D)
        y = attention(q, k, v, backend=self.backend, doc_ids=doc_ids)  # (B, T, Hq, D)
        return self.o_proj(y.reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache, start_pos, doc_ids):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, start_pos, doc_ids)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """The stack under `model.` in HF's naming: embeddings, blocks, final norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.tie_weights()
        self.apply(self._init_weights)
        self._rope: dict = {}  # (device, dtype) -> (cos, sin) tables; derived, never saved

    def tie_weights(self) -> None:
        """With `tie_embeddings`, make the output head the embedding matrix again (after a load that
        replaced either). Tied weights are one tensor: saved once, as the embedding (`tied_state`)."""
        if self.config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def rope(self, positions: torch.Tensor, dtype: torch.dtype, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (B, T, 1, D) for positions (B, T) below `end`, from a table built once per device and dtype."""
        key = (positions.device, dtype)
        cos, sin = self._rope.get(key, (None, None))
        need = max(self.config.max_seq_len, end)
        if cos is None or cos.shape[0] < need:
            cos, sin = rope_table(need, self.config.head_dim, self.config.rope_theta, positions.device, dtype)
            self._rope[key] = (cos, sin)
        return cos[positions][:, :, None], sin[positions][:, :, None]

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def set_attention_backend(self, backend: str) -> None:
        """Switch every layer's attention implementation (config validation applies)."""
        self.config.attention_backend = backend
        self.config.__post_init__()
        for layer in self.model.layers:
            layer.self_attn.backend = backend

    def forward(self, tokens: torch.Tensor, *, start_pos: int = 0, cache: KVCache | None = None,
                positions: torch.Tensor | None = None, doc_ids: torch.Tensor | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, V) for tokens (B, T).

        start_pos: absolute position of tokens[:, 0]; with a cache, where its keys are written.
        positions: explicit RoPE positions (B, T), each below max(T, max_seq_len), e.g. restarting
            at each packed document.
        doc_ids: (B, T) document index of each token; attention stays within a document.
        last_only: compute logits for the last position only (generation).
        """
        B, T = tokens.shape
        x = self.model.embed_tokens(tokens)  # (B, T, C)
        if positions is None:
            cos, sin = self.rope(torch.arange(start_pos, start_pos + T, device=tokens.device)[None], x.dtype,
                                 start_pos + T)
        else:  # packed documents: positions restart, so they stay below the row length
            cos, sin = self.rope(positions, x.dtype, T)
        for layer in self.model.layers:
            x = layer(x, cos, sin, cache, start_pos, doc_ids)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.model.norm(x))  # (B, T, V)


TIED = ("lm_head.weight", "model.embed_tokens.weight")
"""(the head, the embedding it shares) when `tie_embeddings` is set."""


def tied_state(state: dict, config: ModelConfig, *, saving: bool) -> dict:
    """A state dict as written (`saving`: without the shared head) or as loaded (the head filled in
    from the embedding when missing), for a tied `config`; unchanged otherwise."""
    if not config.tie_embeddings:
        return state
    head, embedding = TIED
    state = dict(state)
    if saving:
        state.pop(head, None)
    elif head not in state and embedding in state:
        state[head] = state[embedding]
    return state

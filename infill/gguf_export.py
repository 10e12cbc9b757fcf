"""`infill export --gguf`: a checkpoint as a GGUF file that llama.cpp (and Ollama, LM Studio) runs.

Written through `gguf`, the format's own Python package (llama.cpp's), never by hand. Rules:
- The architecture is llama.cpp's `llama`: the decoder is a Llama (`infill.model`), so every size maps
  one to one (`llama.*` keys) and every tensor has its `blk.N.*` name (`TENSOR_NAMES`).
- RoPE: our weights (Hugging Face's layout) rotate the two halves of each head; llama.cpp's `llama`
  rotates adjacent pairs. The query and key rows of each head are reordered (`interleave_rope_rows`)
  so that the same attention scores come out; no other weight changes.
- A tied output head is left out: llama.cpp then uses the embedding for it, as we do.
- `--type`: f32 keeps every value; f16 rounds the matrices; q8_0 quantises them with gguf's own
  `quants` module (blocks of 32 values and one f16 scale). Norm weights stay f32 (as llama.cpp's
  own converter keeps 1-D tensors).
- The tokenizer is GGUF's `gpt2` (byte-level BPE): tokens by id, merges by rank, special tokens as
  CONTROL (so llama.cpp never reads them from text, as `infill.tokenizer` does not), rows past the
  tokenizer UNUSED. `tokenizer.ggml.pre` names the llama.cpp pre-split of the tokenizer's version
  (`infill.tokenizer.LLAMA_PRE`). A version-1 tokenizer has none: the file is still written, with the
  nearest one, and `export_gguf` says that llama.cpp will split some text differently.
- The FIM sentinels are marked (`fim_pre`, `fim_suf`, `fim_mid`) and `<|endofmask|>`, which ends a
  middle, is the EOT token, so llama.cpp's `/infill` endpoint and its end-of-generation test know them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from infill.checkpoint import load_checkpoint
from infill.config import ModelConfig
from infill.tokenizer import LLAMA_PRE, TOKENIZER_VERSION, CodeTokenizer

TYPES = ("f32", "f16", "q8_0")
ARCH = "llama"
PER_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
"""Our per-layer parameter names (`model.layers.N.` omitted) -> llama.cpp's (`blk.N.` omitted)."""
GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
          "lm_head.weight": "output.weight"}


def tensor_name(name: str) -> str:
    """llama.cpp's name of our parameter `name`."""
    if name in GLOBAL:
        return GLOBAL[name]
    parts = name.split(".")
    if parts[:2] != ["model", "layers"] or ".".join(parts[3:]) not in PER_LAYER:
        raise KeyError(name)
    return f"blk.{parts[2]}.{PER_LAYER['.'.join(parts[3:])]}"


def interleave_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a query or key projection (n_head * D, dim) reordered from rotate-half pairs (i, i + D/2)
    to adjacent pairs (2i, 2i + 1) within each head: row 2i + h of a head is our row h * D/2 + i."""
    rows, cols = w.shape
    half = rows // n_head // 2
    return w.reshape(n_head, 2, half, cols).swapaxes(1, 2).reshape(rows, cols)


def _tensors(model, config: ModelConfig) -> list[tuple[str, np.ndarray]]:
    out = []
    for name, t in model.state_dict().items():
        if config.tie_embeddings and name == "lm_head.weight":
            continue
        w = t.detach().float().cpu().numpy()
        if name.endswith("q_proj.weight"):
            w = interleave_rope_rows(w, config.n_head)
        elif name.endswith("k_proj.weight"):
            w = interleave_rope_rows(w, config.n_kv_head)
        out.append((tensor_name(name), np.ascontiguousarray(w)))
    return out


def _add_tokenizer(writer, tok: CodeTokenizer, vocab_size: int) -> None:
    import gguf

    tokens, merges = tok.bpe_tables()
    special = tok.special_ids
    types = [int(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL) for i in range(len(tokens))]
    for i in range(len(tokens), vocab_size):  # embedding rows the tokenizer does not use
        tokens.append(f"[PAD{i}]")
        types.append(int(gguf.TokenType.UNUSED))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(LLAMA_PRE.get(tok.version, LLAMA_PRE[TOKENIZER_VERSION]))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.eos_id)
    writer.add_eos_token_id(tok.eos_id)
    writer.add_eot_token_id(tok.eom_id)
    writer.add_pad_token_id(tok.pad_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    K = gguf.Keys.Tokenizer
    writer.add_uint32(K.FIM_PRE_ID, tok.fim_prefix_id)
    writer.add_uint32(K.FIM_SUF_ID, tok.fim_suffix_id)
    writer.add_uint32(K.FIM_MID_ID, tok.fim_middle_id)
    writer.add_uint32("infill.tokenizer_version", tok.version or 0)


def export_gguf(directory: str | Path, out: str | Path, *, type: str = "f32") -> tuple[Path, list[str]]:
    """Write checkpoint `directory` as the GGUF file `out` with matrices stored as `type` (`TYPES`).
    Returns (the file, warnings for the user)."""
    import gguf

    if type not in TYPES:
        raise ValueError(f"--type must be one of {', '.join(TYPES)}, got {type!r}")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out}: is a directory; give the name of the .gguf file to write")
    model, tok = load_checkpoint(directory)
    config = model.config
    warnings = []
    if tok.version not in LLAMA_PRE:
        warnings.append(f"the tokenizer's pre-split (version {tok.version or 'unknown'}) has no llama.cpp "
                        f"equivalent; the file uses {LLAMA_PRE[TOKENIZER_VERSION]!r}, so llama.cpp will tokenize "
                        "some text (identifiers with '_' or digits, indentation before a word) differently "
                        f"than infill does. A model trained with tokenizer version {TOKENIZER_VERSION} has none of this.")
    if type == "q8_0":
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
        for name, w in _tensors(model, config):
            if w.ndim == 2 and w.shape[1] % block:
                raise ValueError(f"q8_0 needs rows of a multiple of {block} values; {name} has {w.shape[1]}")
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[type]
    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    try:
        writer.add_name("infill")
        writer.add_context_length(config.max_seq_len)
        writer.add_embedding_length(config.dim)
        writer.add_block_count(config.n_layer)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(config.n_head)
        writer.add_head_count_kv(config.n_kv_head)
        writer.add_layer_norm_rms_eps(config.norm_eps)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type(int(file_type))
        if type == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_string("infill.prompt_format", config.prompt_format)
        _add_tokenizer(writer, tok, config.vocab_size)
        for name, w in _tensors(model, config):
            if w.ndim == 1 or type == "f32":
                writer.add_tensor(name, w.astype(np.float32))
            elif type == "f16":
                writer.add_tensor(name, w.astype(np.float16))
            else:
                q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=True)
        writer.close()
        tmp.replace(out)
    finally:
        writer.close()
        if tmp.exists():
            tmp.unlink()
    return out, warnings

"""Named training runs: functions returning a `TrainConfig` (`infill train --recipe NAME`).

`tiny` runs in seconds on the standard-library corpus (tests, smoke runs). `cpu-small` trained the
first default model on this project's 2-core CPU machine in about an hour; `cpu-2h`, the size an
IsoFLOP sweep chose for that machine's compute, trains the default model now (70 minutes);
`gpu-small` is `cpu-small`'s model for 20 minutes of one H100. The last three carry the published shapes and optimisation settings of
the models they are named after (see docs/train.md for sources, caveats and expected cost); they are
not run here.
"""
from __future__ import annotations

from collections.abc import Callable

from train.config import ObjectiveConfig, TrainConfig


def tiny() -> TrainConfig:
    """0.15M parameters, 256-token rows, 40 steps of 4K tokens: seconds on a CPU."""
    return TrainConfig(
        model="test-tiny", model_overrides={"max_seq_len": 256}, stdlib_modules=24, seq_len=256,
        steps=40, batch_tokens=4096, micro_batch=8, lr=3e-3, warmup_steps=5, eval_every=20, eval_rows=4,
        eval_bpb_docs=4, eval_infill=4, eval_max_tokens=16, ckpt_every=20, keep_last=2)


def cpu_small() -> TrainConfig:
    """The first default model (until session 4): the `small` preset (15.7M parameters), 512-token context, ~1 hour on 2 cores.

    Needs `--data DIR` (an `infill data build` corpus with `infill data tokenizer` output in DIR, or
    `--set tokenizer=PATH`). 380 steps of 4,096 tokens (1.56M tokens): one thread per run (set
    OMP_NUM_THREADS=1) gave ~440 tokens/s here, so the model and its left-to-right ablation train side
    by side in about an hour (scripts/default_model.sh). Smaller steps than the 8K first planned: at a
    budget this small, more optimizer updates do more than larger batches."""
    return TrainConfig(
        model="small", model_overrides={"max_seq_len": 512}, seq_len=512, steps=380, batch_tokens=4096,
        micro_batch=8, lr=2e-3, min_lr_ratio=0.1, warmup_steps=20, schedule="wsd", decay_fraction=0.2,
        eval_every=150, eval_rows=16, eval_bpb_docs=32, eval_infill=50, ckpt_every=50, keep_last=3)


def cpu_2h() -> TrainConfig:
    """The compute-optimal model for about two hours of this 2-core CPU (`--time-budget`, both cores).

    Two hours at the ~150 GFLOP/s that `bench/train.py` measures here on a quiet machine are ~1e15
    FLOPs. The first guess (Chinchilla's ~20 tokens per parameter: 192 x 3, 2.0M parameters) was moved
    by the IsoFLOP sweep (`scripts/cpu_model.sh sweep`, docs/train.md): at 1e13 and 3e13 FLOPs the
    smallest of four sizes (0.35M) had the lowest held-out loss, which puts the optimum at ~6e14 FLOPs
    below ~1.6M (the optimum growing as the square root of compute); so 128 x 4, 1.26M parameters (a
    4,096-token vocabulary: the embedding is 0.52M of them): 1,900 steps, 31.1M tokens in 70 minutes
    with Muon (the default model, MODEL_CARD.md). 1,024-token
    context, repository-level packing, WSD ending on time. Needs `--data DIR` and a 4,096-token
    tokenizer (`infill data tokenizer --vocab-size 4096`; scripts/cpu_model.sh)."""
    return TrainConfig(
        model="small", model_overrides={"vocab_size": 4096, "dim": 128, "n_layer": 4, "n_head": 4, "n_kv_head": 2,
                                        "intermediate_size": 352, "max_seq_len": 1024},
        seq_len=1024, pack_by="repo", time_budget="2h", steps=1_000_000, batch_tokens=16384, micro_batch=8,
        lr=3e-3, min_lr_ratio=0.1, warmup_steps=50, schedule="wsd", decay_fraction=0.2, eval_every=300,
        eval_rows=16, eval_bpb_docs=32, eval_infill=32, ckpt_every=300, keep_last=3)


def gpu_small() -> TrainConfig:
    """The same `small` model for 20 minutes of one H100: 2048-token context, bf16, compiled, triton."""
    return TrainConfig(
        model="small", seq_len=2048, steps=4000, batch_tokens=262144, micro_batch=32, lr=2e-3,
        min_lr_ratio=0.1, warmup_steps=200, schedule="wsd", decay_fraction=0.2, compile=True,
        attention_backend="auto", num_workers=12, eval_every=500, eval_rows=32, eval_bpb_docs=64,
        eval_infill=200, ckpt_every=500, keep_last=3)


def gpu_oneshot() -> TrainConfig:
    """`scripts/gpu_oneshot.sh`: about 6 minutes of one H200 (the script sets the time budget).

    ~6 min at 40% of 989 TFLOP/s is ~1.4e17 FLOPs, compute-optimal near 35M parameters; the export
    limit (50 MB in bf16) caps it at 24M: width 512, 6 layers, a 12,288-token vocabulary (tied),
    2,048-token context, repository-level packing, bf16, compiled, the Triton attention."""
    return TrainConfig(
        model="small", model_overrides={"vocab_size": 12288, "dim": 512, "n_layer": 6, "n_head": 8, "n_kv_head": 4,
                                        "intermediate_size": 1408, "max_seq_len": 2048},
        seq_len=2048, pack_by="repo", time_budget="6m", steps=1_000_000, batch_tokens=262144, micro_batch=32,
        lr=3e-3, min_lr_ratio=0.1, warmup_steps=50, schedule="wsd", decay_fraction=0.2, compile=True,
        dtype="bfloat16", attention_backend="auto", num_workers=14, eval_every=1_000_000, eval_rows=32,
        eval_bpb_docs=64, eval_infill=64, ckpt_every=0, keep_last=1)


def incoder_1_3b() -> TrainConfig:
    """InCoder-1.3B (Fried et al. 2022): 24 layers, width 2048, 32 heads, 2048 context, causal masking
    only with a metadata header. Shape from the released config; the optimisation values are
    unverified here (see docs/train.md)."""
    return TrainConfig(
        model="base", model_overrides={"vocab_size": 50518, "dim": 2048, "n_layer": 24, "n_head": 32,
                                       "n_kv_head": 32, "intermediate_size": 5504, "max_seq_len": 2048},
        objective=ObjectiveConfig(causal_rate=1.0, spm_rate=0.0, psm_rate=0.0, l2r_rate=0.0, syntax_rate=0.0,
                                  max_spans=31, header_rate=1.0),
        seq_len=2048, steps=50_000, batch_tokens=2048 * 512, micro_batch=8, lr=8e-4, beta2=0.98,
        weight_decay=0.01, warmup_steps=1500, schedule="cosine", compile=True, parallel="fsdp", num_workers=16,
        eval_every=2000, ckpt_every=1000)


def polycoder_2_7b() -> TrainConfig:
    """PolyCoder-2.7B (Xu et al. 2022): GPT-NeoX 2.7B shape, 150K steps of 262K tokens (39B tokens),
    lr 1.6e-4, 1600 warm-up steps, cosine; left-to-right only, as published."""
    return TrainConfig(
        model="polycoder-2.7b",
        objective=ObjectiveConfig(causal_rate=0.0, spm_rate=0.0, psm_rate=0.0, l2r_rate=1.0),
        seq_len=2048, steps=150_000, batch_tokens=2048 * 128, micro_batch=8, lr=1.6e-4, min_lr_ratio=0.1,
        warmup_steps=1600, schedule="cosine", compile=True, parallel="fsdp", num_workers=16,
        eval_every=2000, ckpt_every=1000)


def opencoder_1_5b() -> TrainConfig:
    """OpenCoder-1.5B (Huang et al. 2024): 24 layers, width 2240, 14 heads, 4096 context, WSD schedule,
    peak lr 3e-4, 2000 warm-up steps, ~4M-token batches, ~2T tokens."""
    return TrainConfig(
        model="opencoder-1.5b", seq_len=4096, steps=500_000, batch_tokens=4096 * 1024, micro_batch=4,
        lr=3e-4, min_lr_ratio=0.1, warmup_steps=2000, schedule="wsd", decay_fraction=0.1, compile=True,
        parallel="fsdp", num_workers=16, eval_every=5000, ckpt_every=1000)


RECIPES: dict[str, Callable[[], TrainConfig]] = {
    "tiny": tiny,
    "cpu-small": cpu_small,
    "cpu-2h": cpu_2h,
    "gpu-small": gpu_small,
    "gpu-oneshot": gpu_oneshot,
    "incoder-1.3b": incoder_1_3b,
    "polycoder-2.7b": polycoder_2_7b,
    "opencoder-1.5b": opencoder_1_5b,
}


def recipe(name: str) -> TrainConfig:
    """The config of recipe `name`; ValueError naming the choices for an unknown one."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]()

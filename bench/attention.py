"""Attention throughput: the project's Triton kernels against torch and flash-attn.

    python bench/attention.py --json            # writes out/bench/attention.{json,png}

Convention (as in the FlashAttention papers): forward FLOPs = 4 * B * H * N^2 * D, halved when
causal; backward = 2.5 x forward, so forward+backward = 3.5 x forward. bf16, causal, D in {64, 128},
N from 512 to 16k, B * N = 16k tokens and H * D = 2048 at every point.

Providers: `triton` (ours, batched), `triton-varlen` (ours, one 16k-token pack of documents of
length N, the same FLOPs), torch SDPA with the flash and the cuDNN backends, FlexAttention (causal
block mask, and a document mask over the same pack), and flash-attn (batched and varlen) when
installed. A provider that fails is recorded with its error and skipped. On a machine without a
CUDA GPU the script says so in one line and exits 0.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

NEEDS_GPU = "bench/attention.py needs a CUDA GPU; none found, nothing measured."
TOTAL_TOKENS = 16384
HIDDEN = 2048
SEQLENS = [512, 1024, 2048, 4096, 8192, 16384]
HEAD_DIMS = [64, 128]


def attention_flops(batch, heads, seqlen, head_dim, causal, mode):
    fwd = 4 * batch * heads * seqlen * seqlen * head_dim / (2 if causal else 1)
    return fwd * (3.5 if mode == "fwd_bwd" else 1.0)


def _providers(batch, heads, seqlen, head_dim, dtype):
    """name -> (make_inputs, run): make_inputs() returns the leaf tensors, run(*t) the output."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from kernels import flash_attention

    dev = "cuda"
    n_docs = batch
    cu = torch.arange(n_docs + 1, device=dev, dtype=torch.int32) * seqlen

    def bthd():
        return [torch.randn(batch, seqlen, heads, head_dim, device=dev, dtype=dtype) for _ in range(3)]

    def bhnd():
        return [torch.randn(batch, heads, seqlen, head_dim, device=dev, dtype=dtype) for _ in range(3)]

    def packed_thd():
        return [torch.randn(batch * seqlen, heads, head_dim, device=dev, dtype=dtype) for _ in range(3)]

    def packed_bhnd():
        return [torch.randn(1, heads, batch * seqlen, head_dim, device=dev, dtype=dtype) for _ in range(3)]

    def sdpa(backend):
        def run(q, k, v):
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return run

    flex = torch.compile(flex_attention, dynamic=False)
    causal_mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, seqlen, seqlen,
                                    device=dev)
    doc_id = torch.arange(batch * seqlen, device=dev) // seqlen

    def document_causal(b, h, qi, ki):
        return (doc_id[qi] == doc_id[ki]) & (qi >= ki)

    doc_mask = create_block_mask(document_causal, None, None, batch * seqlen, batch * seqlen,
                                 device=dev)
    providers = {
        "triton": (bthd, lambda q, k, v: flash_attention(q, k, v, causal=True)),
        "triton-varlen": (packed_thd, lambda q, k, v: flash_attention(q, k, v, cu_seqlens=cu)),
        "sdpa-flash": (bhnd, sdpa(SDPBackend.FLASH_ATTENTION)),
        "sdpa-cudnn": (bhnd, sdpa(SDPBackend.CUDNN_ATTENTION)),
        "flex-causal": (bhnd, lambda q, k, v: flex(q, k, v, block_mask=causal_mask)),
        "flex-document": (packed_bhnd, lambda q, k, v: flex(q, k, v, block_mask=doc_mask)),
    }
    try:
        from flash_attn import flash_attn_func, flash_attn_varlen_func
    except ImportError:
        return providers
    providers["flash-attn"] = (bthd, lambda q, k, v: flash_attn_func(q, k, v, causal=True))
    providers["flash-attn-varlen"] = (packed_thd, lambda q, k, v: flash_attn_varlen_func(
        q, k, v, cu, cu, seqlen, seqlen, causal=True))
    return providers


def _time_ms(make_inputs, run, mode):
    import triton

    tensors = [t.requires_grad_(mode == "fwd_bwd") for t in make_inputs()]
    if mode == "fwd":
        with torch.no_grad():
            return triton.testing.do_bench(lambda: run(*tensors), warmup=25, rep=100)
    out = run(*tensors)
    grad = torch.randn_like(out)

    def step():
        run(*tensors).backward(grad)

    return triton.testing.do_bench(step, warmup=25, rep=100, grad_to_none=tensors)


def measure(seqlens, head_dims, modes, dtype=torch.bfloat16):
    results = []
    for head_dim in head_dims:
        heads = HIDDEN // head_dim
        for seqlen in seqlens:
            batch = max(1, TOTAL_TOKENS // seqlen)
            for name, (make_inputs, run) in _providers(batch, heads, seqlen, head_dim, dtype).items():
                for mode in modes:
                    row = {"provider": name, "mode": mode, "head_dim": head_dim, "seqlen": seqlen,
                           "batch": batch, "heads": heads}
                    try:
                        ms = _time_ms(make_inputs, run, mode)
                        flops = attention_flops(batch, heads, seqlen, head_dim, True, mode)
                        row.update(ms=ms, tflops=flops / ms / 1e9)
                    except Exception as err:  # a missing backend must not stop the others
                        row.update(ms=None, tflops=None, error=f"{type(err).__name__}: {err}"[:300])
                    torch.cuda.empty_cache()
                    results.append(row)
                    shown = f"{row['tflops']:7.1f} TFLOP/s" if row["tflops"] else row["error"][:60]
                    print(f"D={head_dim:3d} N={seqlen:5d} {mode:7s} {name:18s} {shown}",
                          file=sys.stderr)
    return results


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({r["mode"] for r in results}, reverse=True)
    dims = sorted({r["head_dim"] for r in results})
    fig, axes = plt.subplots(len(modes), len(dims), figsize=(6 * len(dims), 4 * len(modes)),
                             squeeze=False)
    for i, mode in enumerate(modes):
        for j, head_dim in enumerate(dims):
            ax = axes[i][j]
            rows = [r for r in results if r["mode"] == mode and r["head_dim"] == head_dim and r["tflops"]]
            for name in sorted({r["provider"] for r in rows}):
                pts = sorted((r["seqlen"], r["tflops"]) for r in rows if r["provider"] == name)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{mode}, causal, bf16, D={head_dim}")
            ax.set_xlabel("sequence length N")
            ax.set_ylabel("TFLOP/s")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--out", default="out/bench", help="folder for attention.json and .png")
    parser.add_argument("--seqlens", type=int, nargs="+", default=SEQLENS)
    parser.add_argument("--head-dims", type=int, nargs="+", default=HEAD_DIMS)
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd_bwd"], choices=["fwd", "fwd_bwd"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": NEEDS_GPU}) if args.json else NEEDS_GPU)
        return 0
    # Running as a script from a checkout that is not installed: make `kernels` importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import triton

    started = time.time()
    results = measure(args.seqlens, args.head_dims, args.modes)
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "dtype": "bf16",
        "causal": True,
        "total_tokens": TOTAL_TOKENS,
        "hidden": HIDDEN,
        "flops": "fwd 4*B*H*N^2*D/2 (causal); fwd_bwd 3.5x fwd",
        "seconds": round(time.time() - started, 1),
        "results": results,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "attention.json"), "w") as f:
        json.dump(report, f, indent=2)
    plot(results, os.path.join(args.out, "attention.png"))
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

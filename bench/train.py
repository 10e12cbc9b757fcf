"""Training throughput: `infill train` (loader included) vs a minimal plain-PyTorch loop, and the
trainer's roofline on this machine.

Both run the same model, the same batch shape (micro-batches and accumulation) and AdamW with
clipping, on this machine, one after the other. The plain loop reuses one pre-built batch, so it
measures compute alone; the ratio is what the trainer's pipeline (masking, packing, logging, the
progress bar) costs. Goal: ratio >= 0.95 on CPU. Step times are medians after warm-up steps, so a
neighbour's burst on shared cores does not decide the result. Also reports the loader alone, which
must sustain at least 2x the trainer's tokens/s.

Roofline, in the same run: the trainer's achieved FLOP/s (`train.trainer.flops_per_token`: 6 N per
token plus attention, times its tokens/s), this machine's own fp32 matmul rate at the model's shapes
(every projection's forward and both backward products at micro-batch x seq_len rows, and the
attention score and value products, each timed as a median and weighted by how often a step runs
it), and their ratio. Goal: ratio >= 0.5 (the trainer is near what the hardware does at these shapes).

    python bench/train.py --json                       # cpu-small model on the stdlib corpus
    python bench/train.py --recipe tiny --steps 20 --json
    python bench/train.py --recipe cpu-2h --steps 3 --json         # the 2-hour model's roofline
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from infill.model import Transformer  # noqa: E402
from train.config import apply_overrides  # noqa: E402
from train.loader import Loader, corpora  # noqa: E402
from train.logs import read_log  # noqa: E402
from train.packing import IGNORE, collate  # noqa: E402
from train.recipes import recipe  # noqa: E402
from train.trainer import configure_optimizer, flops_per_token, resolve_tokenizer, train  # noqa: E402


def _median_time(fn, repeats: int, min_sample_s: float = 0.02) -> float:
    """Median seconds per call of `fn`; each sample runs it enough times to last `min_sample_s`, so
    microsecond-sized products are not timed at the clock's resolution or one neighbour's burst."""
    fn()  # warm-up (allocation, kernel choice)
    t0 = time.perf_counter()
    fn()
    calls = max(1, int(min_sample_s / max(time.perf_counter() - t0, 1e-7)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def matmul_shapes(model_config, micro_batch: int, seq_len: int) -> list[tuple[str, int, tuple, tuple]]:
    """(name, count per micro-batch, A shape, B shape) of the matmuls of one training micro-batch.

    Each linear layer (in -> out) of a step runs X(M, in) @ W(in, out) forward, dY(M, out) @ W(out, in)
    and X^T(in, M) @ dY(M, out) backward, M = micro_batch * seq_len; attention runs QK^T and PV per
    head forward and two products each backward (batched over micro_batch * heads)."""
    m, d, L = micro_batch * seq_len, model_config.dim, model_config.n_layer
    kv = model_config.n_kv_head * model_config.head_dim
    linears = [("q_proj+o_proj", 2 * L, d, d), ("k_proj+v_proj", 2 * L, d, kv),
               ("gate+up", 2 * L, d, model_config.intermediate_size), ("down", L, model_config.intermediate_size, d),
               ("lm_head", 1, d, model_config.vocab_size)]
    out = []
    for name, count, fan_in, fan_out in linears:
        out += [(f"{name} fwd", count, (m, fan_in), (fan_in, fan_out)),
                (f"{name} grad-in", count, (m, fan_out), (fan_out, fan_in)),
                (f"{name} grad-w", count, (fan_in, m), (m, fan_out))]
    bh, hd = micro_batch * model_config.n_head, model_config.head_dim
    out += [("attn scores", 3 * L, (bh, seq_len, hd), (bh, hd, seq_len)),
            ("attn values", 3 * L, (bh, seq_len, seq_len), (bh, seq_len, hd))]
    return out


def matmul_rate(model_config, micro_batch: int, seq_len: int, repeats: int = 5) -> dict:
    """This machine's fp32 matmul FLOP/s at the model's shapes: total FLOPs / total median time."""
    total_flops, total_s, parts = 0.0, 0.0, {}
    for name, count, a_shape, b_shape in matmul_shapes(model_config, micro_batch, seq_len):
        a, b = torch.randn(a_shape), torch.randn(b_shape)
        flops = 2 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.shape[0] if a.ndim == 3 else 1)
        seconds = _median_time(lambda: torch.matmul(a, b), repeats)
        parts[name] = round(flops / seconds / 1e9, 1)
        total_flops += count * flops
        total_s += count * seconds
    return {"flops_per_s": total_flops / total_s, "gflops_by_shape": parts}


def plain_loop(config, batches, steps: int) -> list[float]:
    """Seconds per step of the textbook loop on fixed batches."""
    torch.manual_seed(config.seed)
    model = Transformer(config.model_config())
    opt = configure_optimizer(model, config, torch.device("cpu"))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        n = sum(int((b.targets != IGNORE).sum()) for b in batches)
        for b in batches:
            logits = model(b.tokens, positions=b.positions, doc_ids=b.doc_ids)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), b.targets.flatten(), ignore_index=IGNORE,
                                   reduction="sum") / n
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cpu-small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side (default 1)")
    parser.add_argument("--matmul-repeats", type=int, default=5, help="timed repeats per matmul shape (default 5)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    total = args.steps + args.warmup
    config = apply_overrides(recipe(args.recipe), [
        "eval_every=0", "ckpt_every=0", "tensorboard=false", "progress=false", "device=cpu",
        f"steps={total}", "time_budget=", *args.overrides])
    train_corpus, _ = corpora(config)
    tok = resolve_tokenizer(config, train_corpus, config.model_config().vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(tmp)
        config = apply_overrides(config, [f"tokenizer={tmp}/tokenizer.json"])
        # the loader alone
        loader = Loader(train_corpus, tok, config)
        loader.take(config.rows_per_step)  # first shard read, caches warm
        t0 = time.perf_counter()
        rows = loader.take(config.rows_per_step * 2)
        loader_tps = len(rows) * config.seq_len / (time.perf_counter() - t0)
        accum = config.accumulation(1)
        batches = [collate(rows[i * config.micro_batch:(i + 1) * config.micro_batch]) for i in range(accum)]
        plain = plain_loop(config, batches, total)[args.warmup:]
        train(config, Path(tmp) / "run")
        trainer = [config.batch_tokens / r["tokens_per_s"] for r in read_log(Path(tmp) / "run")["train"]][args.warmup:]
    plain_tps = config.batch_tokens / statistics.median(plain)
    trainer_tps = config.batch_tokens / statistics.median(trainer)
    model_config = config.model_config()
    model_config.vocab_size = max(model_config.vocab_size, len(tok))
    roof = matmul_rate(model_config, config.micro_batch, config.seq_len, args.matmul_repeats)
    achieved = flops_per_token(model_config, config.seq_len) * trainer_tps
    result = {
        "recipe": args.recipe, "model": config.model, "params": config.model_config().num_params(),
        "seq_len": config.seq_len, "batch_tokens": config.batch_tokens, "micro_batch": config.micro_batch,
        "steps_timed": args.steps, "threads": torch.get_num_threads(),
        "trainer_tokens_per_s": round(trainer_tps, 1), "plain_tokens_per_s": round(plain_tps, 1),
        "ratio": round(trainer_tps / plain_tps, 3), "loader_tokens_per_s": round(loader_tps, 1),
        "loader_over_trainer": round(loader_tps / trainer_tps, 1),
        "flops_per_token": flops_per_token(model_config, config.seq_len),
        "trainer_gflops": round(achieved / 1e9, 2), "matmul_gflops": round(roof["flops_per_s"] / 1e9, 2),
        "roofline_ratio": round(achieved / roof["flops_per_s"], 3),
        "load_avg_1m": round(os.getloadavg()[0], 2), "matmul_gflops_by_shape": roof["gflops_by_shape"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: `infill train` (loader included) vs a minimal plain-PyTorch loop.

Both run the same model, the same batch shape (micro-batches and accumulation) and AdamW with
clipping, on this machine, one after the other. The plain loop reuses one pre-built batch, so it
measures compute alone; the ratio is what the trainer's pipeline (masking, packing, logging, the
progress bar) costs. Goal: ratio >= 0.95 on CPU. Step times are medians after warm-up steps, so a
neighbour's burst on shared cores does not decide the result. Also reports the loader alone, which
must sustain at least 2x the trainer's tokens/s.

    python bench/train.py --json                       # cpu-small model on the stdlib corpus
    python bench/train.py --recipe tiny --steps 20 --json
"""
from __future__ import annotations

import argparse
import json
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
from train.trainer import configure_optimizer, resolve_tokenizer, train  # noqa: E402


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
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    total = args.steps + args.warmup
    config = apply_overrides(recipe(args.recipe), [
        "eval_every=0", "ckpt_every=0", "tensorboard=false", "progress=false", "device=cpu",
        f"steps={total}", *args.overrides])
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
    result = {
        "recipe": args.recipe, "model": config.model, "params": config.model_config().num_params(),
        "seq_len": config.seq_len, "batch_tokens": config.batch_tokens, "micro_batch": config.micro_batch,
        "steps_timed": args.steps, "threads": torch.get_num_threads(),
        "trainer_tokens_per_s": round(trainer_tps, 1), "plain_tokens_per_s": round(plain_tps, 1),
        "ratio": round(trainer_tps / plain_tps, 3), "loader_tokens_per_s": round(loader_tps, 1),
        "loader_over_trainer": round(loader_tps / trainer_tps, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

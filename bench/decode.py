"""Decode speed and session-cache reuse on this CPU, each as a ratio against a reference from the same run.

decode_ratio: our greedy generation (infill.generation.generate, prompt-lookup drafts on, as shipped) vs
transformers' `generate` on the very same weights (exported with `infill export --hf`), same prompt,
length, dtype and threads, `small` preset. decode_ratio_plain: the same with drafting off (lookahead=0).
The weights are random unless --model names a checkpoint: a random model repeats itself, which makes
prompt lookup unusually effective, so read decode_ratio_plain too.
reuse_ratio: latency of a request whose prompt is the previous one plus a few typed characters, with the
session cache, divided by the same request without a cache (~1,500-token SPM prompt).

    python bench/decode.py [--json] [--new-tokens 128] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per decode run")
    parser.add_argument("--prompt-tokens", type=int, default=200, help="prompt length of the decode runs")
    parser.add_argument("--reuse-prompt-tokens", type=int, default=1500, help="SPM prompt length for reuse_ratio")
    parser.add_argument("--reuse-max-tokens", type=int, default=16, help="tokens generated per reuse request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--model", help="a `small` checkpoint directory to use instead of random weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from infill.checkpoint import export_hf, save_checkpoint
    from infill.config import ModelConfig
    from infill.engines import InfillRequest
    from infill.engines.local import LocalEngine
    from infill.generation import GenerationConfig, generate
    from infill.model import Transformer
    from infill.tokenizer import CodeTokenizer

    from infill.checkpoint import load_checkpoint

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))[:120]]
    corpus = "\n".join(texts)
    if args.model:
        model, tok = load_checkpoint(args.model)
        config = model.config
    else:
        print("training a benchmark tokenizer...", file=sys.stderr)
        tok = CodeTokenizer.train(texts, 16384)
        torch.manual_seed(0)
        config = ModelConfig.from_preset("small", vocab_size=16384)
        model = Transformer(config).eval()

    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / "ckpt", model, tok)
        export_hf(Path(tmp) / "ckpt", Path(tmp) / "hf")
        hf = AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf", dtype=torch.float32).eval()

    # --- decode_ratio -----------------------------------------------------------------------------
    prompt = tok.encode(corpus)[:args.prompt_tokens]
    gen_config = GenerationConfig(max_tokens=args.new_tokens)
    ours_tokens = generate(model, prompt, gen_config)[0].tokens  # warm-up, and the output to compare
    ids = torch.tensor([prompt])
    hf_kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                     pad_token_id=tok.pad_id, eos_token_id=None)
    with torch.inference_mode():
        hf_tokens = hf.generate(ids, **hf_kwargs)[0, len(prompt):].tolist()
    plain_config = GenerationConfig(max_tokens=args.new_tokens, lookahead=0)
    plain_tokens = generate(model, prompt, plain_config)[0].tokens
    ours_s = best_of(lambda: generate(model, prompt, gen_config), args.repeats)
    plain_s = best_of(lambda: generate(model, prompt, plain_config), args.repeats)
    with torch.inference_mode():
        hf_s = best_of(lambda: hf.generate(ids, **hf_kwargs), args.repeats)

    # --- reuse_ratio ------------------------------------------------------------------------------
    engine = LocalEngine(model, tok)
    text = corpus[:40_000]
    cut = len(text) // 2
    while len(tok.encode(text[:cut])) + len(tok.encode(text[cut:cut + 1200])) > args.reuse_prompt_tokens:
        cut -= 200
    prefix, suffix = text[:cut], text[cut:cut + 1200]
    typed = text[cut:cut + 3]

    def reuse(max_tokens: int) -> tuple[float, float, int, int]:
        """Median warm and cold latency (ms) of requests that type 1-3 characters, and the token counts."""
        req = lambda extra, session: InfillRequest(prefix + extra, suffix, GenerationConfig(max_tokens=max_tokens),
                                                   session=session)
        cold_times, warm_times = [], []
        for _ in range(args.repeats):
            for i in range(1, 4):  # type 1, 2, 3 characters after a request on the unchanged prompt
                engine.infill(req(typed[:i - 1], "doc"))
                warm = engine.infill(req(typed[:i], "doc"))
                cold = engine.infill(req(typed[:i], None))
                warm_times.append(warm.latency_ms)
                cold_times.append(cold.latency_ms)
        return statistics.median(warm_times), statistics.median(cold_times), warm.prompt_tokens, warm.cached_tokens

    warm_ms, cold_ms, prompt_tokens, cached = reuse(args.reuse_max_tokens)
    first_warm_ms, first_cold_ms, _, _ = reuse(1)

    result = {
        "weights": args.model or "random",
        "params": config.num_params(),
        "threads": args.threads,
        "dtype": "float32",
        "prompt_tokens": len(prompt),
        "new_tokens": args.new_tokens,
        "decode_tokens_per_s": round(args.new_tokens / ours_s, 1),
        "hf_decode_tokens_per_s": round(args.new_tokens / hf_s, 1),
        "decode_ratio": round(hf_s / ours_s, 3),
        "decode_plain_tokens_per_s": round(args.new_tokens / plain_s, 1),
        "decode_ratio_plain": round(hf_s / plain_s, 3),
        "same_tokens_as_hf": ours_tokens == hf_tokens == plain_tokens,
        "reuse_prompt_tokens": prompt_tokens,
        "reuse_cached_tokens": cached,
        "reuse_max_tokens": args.reuse_max_tokens,
        "reuse_warm_ms": round(warm_ms, 1),
        "reuse_cold_ms": round(cold_ms, 1),
        "reuse_ratio": round(warm_ms / cold_ms, 3),
        "reuse_first_token_warm_ms": round(first_warm_ms, 1),
        "reuse_first_token_cold_ms": round(first_cold_ms, 1),
        "reuse_ratio_first_token": round(first_warm_ms / first_cold_ms, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:24} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

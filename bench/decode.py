"""Decode speed and session-cache reuse on this CPU, each as a ratio against a reference from the same run.

decode_ratio: our greedy generation (infill.generation.generate, prompt-lookup drafts on, as shipped) vs
transformers' `generate` on the very same weights (exported with `infill export --hf`), same prompt,
length, dtype and threads, `small` preset. decode_ratio_plain: the same with drafting off (lookahead=0).
The weights are random unless --model names a checkpoint: a random model repeats itself, which makes
prompt lookup unusually effective, so read decode_ratio_plain too.
llama.cpp columns (when llama-cpp-python is installed: scripts/llama_cpp.sh): the same weights exported
with `infill export --gguf` as f32 and as q8_0, run by llama.cpp (greedy, same prompt ids, same number of
new tokens, same threads, the KV cache reset before every run): tokens/s measured like ours (prompt plus
new tokens, divided into the new tokens) and first-token latency (the prompt plus one token), next to
ours and transformers'. q8_0 runs without llama.cpp's AMX/repack buffers (see `_llama`).
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


def _llama(llama_cpp, path: str, *, extra_bufts: bool, **kwargs):
    """A `llama_cpp.Llama`; `extra_bufts=False` turns off llama.cpp's extra CPU buffer types (AMX and
    weight repacking), which llama-cpp-python does not expose: with them, this machine's build
    (GGML_NATIVE, AMX_INT8 detected) segfaults on the first q8_0 matrix product."""
    if extra_bufts:
        return llama_cpp.Llama(path, **kwargs)
    default = llama_cpp.llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    llama_cpp.llama_cpp.llama_model_default_params = params
    try:
        return llama_cpp.Llama(path, **kwargs)
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = default


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

    # --- first-token latency, and llama.cpp on the same weights -------------------------------------
    one = GenerationConfig(max_tokens=1, lookahead=0)
    first_s = best_of(lambda: generate(model, prompt, one), args.repeats)
    with torch.inference_mode():
        hf_first_s = best_of(lambda: hf.generate(ids, **{**hf_kwargs, "max_new_tokens": 1, "min_new_tokens": 1}),
                             args.repeats)
    llama = {}
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
        print("llama-cpp-python is not installed (scripts/llama_cpp.sh): no llama.cpp columns", file=sys.stderr)
    if llama_cpp is not None:
        from infill.gguf_export import export_gguf

        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(Path(tmp) / "ckpt", model, tok)
            for kind in ("f32", "q8_0"):
                path, _ = export_gguf(Path(tmp) / "ckpt", Path(tmp) / f"{kind}.gguf", type=kind)
                llm = _llama(llama_cpp, str(path), extra_bufts=kind != "q8_0", n_ctx=len(prompt) + args.new_tokens + 8,
                             n_threads=args.threads, n_batch=512, verbose=False)

                def run(n: int) -> list[int]:
                    llm.reset()  # no prompt reuse between runs
                    out = []
                    gen = llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True)
                    try:
                        for t in gen:
                            out.append(t)
                            if len(out) == n:
                                break
                    finally:
                        gen.close()  # before the model can be freed: a suspended generator holds its context
                    return out

                tokens = run(args.new_tokens)  # warm-up, and the output to compare
                llama[kind] = {"tokens_per_s": round(args.new_tokens / best_of(lambda: run(args.new_tokens), args.repeats), 1),
                               "first_token_ms": round(1000 * best_of(lambda: run(1), args.repeats), 1),
                               "same_tokens": tokens == plain_tokens}
                llm.close()

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
        "first_token_ms": round(1000 * first_s, 1),
        "hf_first_token_ms": round(1000 * hf_first_s, 1),
        **{f"llama_cpp_{k}_{m}": v for k, col in llama.items() for m, v in col.items()},
        **({"decode_ratio_plain_vs_llama_cpp_f32": round(args.new_tokens / plain_s / llama["f32"]["tokens_per_s"], 3),
            "decode_ratio_vs_llama_cpp_f32": round(args.new_tokens / ours_s / llama["f32"]["tokens_per_s"], 3)}
           if "f32" in llama else {}),
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

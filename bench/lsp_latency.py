"""infill-lsp latency as an editor sees it, through a real LSP client over stdio, `small` preset, this CPU.

Scenario: a 40-line function is typed one character at a time into the middle of a 300-line file
(standard-library code). After every keystroke the client sends the edit and a
`textDocument/inlineCompletion` request; while typing goes on, the previous request is cancelled with
`$/cancelRequest` (stale); every `--pause-every`th keystroke the typist pauses and the completion is
awaited and timed. Reference, measured in the same run: the same keystrokes, requests, cancellations
and pauses with the session cache off (`cacheMb: 0`), so `cache_speedup` = line p50 without the cache
/ line p50 with it. (Until session 2 the reference typed a third of the keys and sent requests only at
the pauses, so it never paid for cancelled requests: its cache_speedup figures are not comparable.)

Keys: ttft_p50_ms (server-side, request start to first token, from `infill/status`), line_p50_ms and
line_p95_ms (client round trip of a finished single-line completion), cache_speedup, peak_rss_mb (the
server's VmHWM), counts, typed_through (pauses answered by the typed-through cache, no model call; ttft
is over the others). The model has random `small` weights unless `--model` names a checkpoint; a random
model never ends a line early, so its single-line figures are an upper bound.

Per-token cost: the server's, (latencyMs - ttftMs) / (tokens - 1) of each timed completion from
`infill/status`, against the engine's alone (reference, same run, after the servers exit): the same
documents and cursors through `lsp.completion.complete_steps` in this process, timed the same way.
token_cost_ratio = server p50 / engine p50 (goal <= 1.2).

Input lag: after the typing, a storm of `--storm-keys` keystrokes at `--storm-rate` keys a second, each
followed by an inline completion request (the previous one cancelled) and a `textDocument/rename` (no
model); input_lag_p95_ms is the rename's round trip (goal <= 50 ms). Reference: the same renames with
no typing and no model work, input_lag_idle_p50_ms.

Real model size (`--qwen`, on by default; `--no-qwen` skips it): a transformers Qwen2 model of
Qwen2.5-Coder-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocab
151936, tied embeddings), random weights, built here from transformers' `Qwen2Config`, with the
default model's tokenizer (exported by `infill export --hf`, so the `infill-spm` template), context
`--qwen-context` tokens (the real model has 32K; a CPU prefill of that would take minutes). It types
`--qwen-keys` keys, awaiting every completion, with the session cache and without it:
qwen_ttft_cached_p50_ms / qwen_ttft_nocache_p50_ms, and its per-token cost against the HF engine alone.

The cache model (`--cache-model`, the server option `cache`, on by default as in the server): run the
bench with `--no-cache-model` as well to compare line p50/p95 with and without it.

The load average (1 minute) is printed at the start and the end: the figures are only as quiet as it.

    python bench/lsp_latency.py [--json] [--lines 40] [--pause-every 4] [--max-tokens 24] [--model DIR]
                                [--storm-keys 100] [--storm-rate 20] [--no-qwen] [--qwen-keys 8]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

GOALS = {"ttft_p50_ms": 25.0, "line_p50_ms": 100.0, "line_p95_ms": 250.0, "cache_speedup": 3.0,
         "input_lag_p95_ms": 50.0, "token_cost_ratio": 1.2}
QWEN_SHAPE = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True)
ANCHORS = {"tabby_starcoder1b_m2max_ms": 340, "llama_vim_15k_ctx_260_tokens_ms": 1245}


def build_checkpoint(out: Path) -> Path:
    import torch

    from infill.checkpoint import save_checkpoint
    from infill.config import ModelConfig
    from infill.model import Transformer
    from infill.tokenizer import CodeTokenizer

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))[:120]]
    tok = CodeTokenizer.train(texts, 16384)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("small", vocab_size=len(tok))).eval()
    return save_checkpoint(out / "small", model, tok)


def scenario(n_lines: int) -> tuple[str, int, str]:
    """(the 300-line file without the function, the line to type at, the function's text)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    host = (stdlib / "textwrap.py").read_text().splitlines(keepends=True)[:300]
    func_src = (stdlib / "shlex.py").read_text().splitlines(keepends=True)
    start = next(i for i, ln in enumerate(func_src) if ln.startswith("    def read_token"))
    body = "".join(ln[4:] if ln.startswith("    ") else ln for ln in func_src[start:start + n_lines])
    at = next(i for i in range(150, 300) if host[i].strip() == "" and host[i + 1][:1] not in (" ", "\t"))
    return "".join(host), at + 1, body


def build_qwen(default_model: Path, out: Path, context: int) -> Path:
    """A random Qwen2 model of Qwen2.5-Coder-0.5B's shape with the default model's tokenizer (see above)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from infill.checkpoint import export_hf

    export_hf(default_model, out)  # the tokenizer files; the model is replaced below
    for f in out.glob("*.safetensors"):
        f.unlink()
    spec = json.loads((out / "config.json").read_text())
    torch.manual_seed(0)
    config = Qwen2Config(**QWEN_SHAPE, max_position_embeddings=context, bos_token_id=spec.get("bos_token_id"),
                         eos_token_id=spec.get("eos_token_id"), pad_token_id=spec.get("pad_token_id"))
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)  # bf16 on disk, float32 when served
    return out


def rename_target(host: str) -> tuple[int, int]:
    """(line, column) of a parameter the storm renames: `text` in the first `def ...(self, text)`."""
    for i, ln in enumerate(host.splitlines()):
        if ln.lstrip().startswith("def ") and "(self, text)" in ln:
            return i, ln.index("text)")
    raise SystemExit("no rename target in the scenario file")


async def run(checkpoint: Path, args, *, cache: bool, keys: int | None = None, pause_every: int | None = None,
              max_tokens: int | None = None, storm: bool = False, budget_ms: int = 10000) -> dict:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("bench", "0")
    statuses: list = []
    client.feature("infill/status")(lambda ls, p: statuses.append(p))
    await client.start_io(sys.executable, "-m", "lsp", "--model", str(checkpoint), "--device", "cpu",
                          "--log-file", args.server_log)
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options={
            "maxTokens": max_tokens or args.max_tokens, "cacheMb": 256 if cache else 0, "timeBudgetMs": budget_ms,
            "typeHints": False, "cache": args.cache_model}))
    client.initialized(types.InitializedParams())
    while not statuses or statuses[-1].state not in ("ready", "failed"):
        await asyncio.sleep(0.05)
    if statuses[-1].state != "ready":
        raise SystemExit(f"server failed: {statuses[-1].message}")
    host, at, func = scenario(args.lines)
    uri = "file:///bench/host.py"
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, host)))
    line, col, version = at, 0, 1
    pending = None
    line_ms, ttft_ms, cancelled, requests = [], [], 0, 0
    token_ms, typed_through, docs = [], 0, []
    text, offset = host, sum(len(ln) for ln in host.splitlines(keepends=True)[:at])
    pause_every = pause_every or args.pause_every
    keys = func if keys is None else func[:keys]
    for i, ch in enumerate(keys):  # the reference types the same keys and sends the same requests
        version += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(line, col), types.Position(line, col)), text=ch)]))
        text, offset = text[:offset] + ch + text[offset:], offset + 1
        line, col = (line + 1, 0) if ch == "\n" else (line, col + 1)
        if pending is not None and not pending[1].done():
            client.cancel_request(types.CancelParams(id=pending[0]))
            cancelled += 1
        pause = (i + 1) % pause_every == 0 and ch not in "\n "
        msg_id = f"req-{i}"
        before = len(statuses)
        started = time.perf_counter()
        future = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, col),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)),
            msg_id=msg_id)
        requests += 1
        pending = (msg_id, future)
        if pause:
            server_exit = asyncio.ensure_future(client._server.wait())
            done, _ = await asyncio.wait([asyncio.wrap_future(future), server_exit],
                                         return_when=asyncio.FIRST_COMPLETED)
            if server_exit in done:
                raise SystemExit(f"infill-lsp exited with status {client._server.returncode} (see {args.server_log})")
            server_exit.cancel()
            line_ms.append((time.perf_counter() - started) * 1000)
            for _ in range(100):  # the status notification follows the response
                if len(statuses) > before and statuses[-1].ttftMs is not None:
                    break
                await asyncio.sleep(0.002)
            if len(statuses) > before:
                st = statuses[-1]
                if getattr(st, "typedThrough", False):
                    typed_through += 1
                elif st.ttftMs is not None:
                    ttft_ms.append(st.ttftMs)
                    if (st.tokens or 0) >= 4:
                        token_ms.append((st.latencyMs - st.ttftMs) / (st.tokens - 1))
                        docs.append((text, offset))
            pending = None
        else:
            await asyncio.sleep(0)
    lags, idle = [], []
    if storm:
        target = rename_target(host)
        rename = types.RenameParams(text_document=types.TextDocumentIdentifier(uri),
                                    position=types.Position(*target), new_name="words")
        for _ in range(20):  # the reference: nothing else going on
            started = time.perf_counter()
            await client.text_document_rename_async(rename)
            idle.append((time.perf_counter() - started) * 1000)
        for i in range(args.storm_keys):
            tick = time.perf_counter()
            version += 1
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(line, col), types.Position(line, col)), text="x")]))
            col += 1
            if pending is not None and not pending[1].done():
                client.cancel_request(types.CancelParams(id=pending[0]))
            msg_id = f"storm-{i}"
            pending = (msg_id, client.protocol.send_request(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, col),
                    context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)),
                msg_id=msg_id))
            started = time.perf_counter()
            await client.text_document_rename_async(rename)
            lags.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(max(0.0, 1 / args.storm_rate - (time.perf_counter() - tick)))
    pid = client._server.pid
    with open(f"/proc/{pid}/status") as f:
        peak = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")) / 1024
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {"line_ms": line_ms, "ttft_ms": ttft_ms, "cancelled": cancelled, "requests": requests,
            "peak_rss_mb": peak, "token_ms": token_ms, "typed_through": typed_through, "docs": docs,
            "lags": lags, "idle": idle}


def engine_token_ms(model: str, docs: list[tuple[str, int]], max_tokens: int, budget_ms: int,
                    cache_model: bool = True) -> list[float]:
    """The reference: per-token cost of the engine alone on the same documents and cursors."""
    from infill.engines import load_engine
    from lsp.options import ServerOptions

    import threading

    engine = load_engine(model, device="cpu", cache_mb=256)
    options = ServerOptions(max_tokens=max_tokens, time_budget_ms=budget_ms, cache=cache_model)
    out: list[float] = []
    # on a thread of its own, as the server's model worker runs it: the same arrangement of threads, so
    # the ratio is the server's own overhead (on a loaded machine torch's speed differed between the
    # main thread and another one, which is not what this compares)
    worker = threading.Thread(target=_engine_token_ms, args=(engine, options, docs, out))
    worker.start()
    worker.join()
    return out


def _engine_token_ms(engine, options, docs, out) -> None:
    from lsp.completion import complete_steps

    for text, offset in docs:
        for session in ("warm", "warm"):  # the second with the prompt cached, as in the server
            started, first = time.perf_counter(), None
            steps = complete_steps(text, offset, engine, options, language="python", session=session, ext=".py")
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    _, result = done.value
                    break
                if first is None:
                    first = time.perf_counter()
        tokens = result.candidates[0].tokens if result.candidates else 0
        if tokens >= 4 and first is not None:
            out.append((time.perf_counter() - first) * 1000 / (tokens - 1))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def _p50(xs: list[float]) -> float:
    return round(statistics.median(xs), 2) if xs else float("nan")


def _ratio(server: list[float], engine: list[float]) -> float:
    return round(statistics.median(server) / statistics.median(engine), 3) if server and engine else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--lines", type=int, default=40, help="lines of the function typed")
    parser.add_argument("--server-log", default=str(Path(tempfile.gettempdir()) / "infill-lsp-bench.log"),
                        help="where the server writes its log")
    parser.add_argument("--pause-every", type=int, default=4, help="await every Nth completion")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--model", help="a checkpoint directory (e.g. infill/default_model) instead of random "
                                        "small-preset weights")
    parser.add_argument("--cache-model", action=argparse.BooleanOptionalAction, default=True,
                        help="the cache model (server option cache; default on, the server's default); run with "
                             "--no-cache-model for the latency without it")
    parser.add_argument("--storm-keys", type=int, default=100, help="keystrokes of the input-lag storm")
    parser.add_argument("--storm-rate", type=float, default=20.0, help="keys a second in the storm")
    parser.add_argument("--qwen", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the Qwen2.5-Coder-0.5B-shaped model (default: on)")
    parser.add_argument("--qwen-keys", type=int, default=8, help="keys typed with the 0.5B-shaped model")
    parser.add_argument("--qwen-max-tokens", type=int, default=8)
    parser.add_argument("--qwen-context", type=int, default=1024, help="context of the 0.5B-shaped model")
    args = parser.parse_args()
    if args.model and not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: not a checkpoint directory (no config.json)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            ckpt = Path(args.model)
        else:
            print("building the small-preset checkpoint...", file=sys.stderr)
            ckpt = build_checkpoint(Path(tmp))
        load_start = os.getloadavg()[0]
        print("typing with the session cache, then the storm...", file=sys.stderr)
        cached = asyncio.run(run(ckpt, args, cache=True, storm=True))
        print("typing without it (reference)...", file=sys.stderr)
        plain = asyncio.run(run(ckpt, args, cache=False))
        print("the engine alone on the same prompts (reference)...", file=sys.stderr)
        engine_ms = engine_token_ms(str(ckpt), cached["docs"][:12], args.max_tokens, 10000, args.cache_model)
        qwen = None
        if args.qwen:
            default = Path(__file__).resolve().parent.parent / "infill" / "default_model"
            print("building the 0.5B-shaped model...", file=sys.stderr)
            qdir = build_qwen(default, Path(tmp) / "qwen", args.qwen_context)
            common = dict(keys=args.qwen_keys, pause_every=1, max_tokens=args.qwen_max_tokens, budget_ms=60000)
            print("0.5B-shaped model, with the session cache...", file=sys.stderr)
            q_cached = asyncio.run(run(qdir, args, cache=True, **common))
            print("0.5B-shaped model, without it...", file=sys.stderr)
            q_plain = asyncio.run(run(qdir, args, cache=False, **common))
            print("0.5B-shaped model, the engine alone...", file=sys.stderr)
            q_engine = engine_token_ms(str(qdir), q_cached["docs"][:4], args.qwen_max_tokens, 60000)
            warm = q_cached["ttft_ms"][1:] or q_cached["ttft_ms"]  # the first keystroke finds no cache yet
            qwen = {
                "qwen_ttft_cached_p50_ms": round(statistics.median(warm), 1),
                "qwen_ttft_nocache_p50_ms": round(statistics.median(q_plain["ttft_ms"]), 1),
                "qwen_cache_ttft_speedup": round(statistics.median(q_plain["ttft_ms"]) / statistics.median(warm), 2),
                "qwen_token_ms_p50": _p50(q_cached["token_ms"]),
                "qwen_engine_token_ms_p50": _p50(q_engine),
                "qwen_token_cost_ratio": _ratio(q_cached["token_ms"], q_engine),
                "qwen_timed": len(q_cached["ttft_ms"]), "qwen_context": args.qwen_context,
                "qwen_tokenizer": "infill/default_model's, via infill export --hf",
                "qwen_peak_rss_mb": round(max(q_cached["peak_rss_mb"], q_plain["peak_rss_mb"]), 1),
            }
        load_end = os.getloadavg()[0]
    out = {
        "ttft_p50_ms": round(statistics.median(cached["ttft_ms"]), 2),
        "line_p50_ms": round(pct(cached["line_ms"], 0.5), 2),
        "line_p95_ms": round(pct(cached["line_ms"], 0.95), 2),
        "nocache_line_p50_ms": round(pct(plain["line_ms"], 0.5), 2),
        "cache_speedup": round(pct(plain["line_ms"], 0.5) / pct(cached["line_ms"], 0.5), 2),
        "reference": "same server and scenario with the session cache off (cacheMb 0)",
        "typed_through": cached["typed_through"],
        "token_ms_p50": _p50(cached["token_ms"]),
        "engine_token_ms_p50": _p50(engine_ms),
        "token_cost_ratio": _ratio(cached["token_ms"], engine_ms),
        "input_lag_p95_ms": round(pct(cached["lags"], 0.95), 1),
        "input_lag_p50_ms": round(pct(cached["lags"], 0.5), 1),
        "input_lag_idle_p50_ms": round(pct(cached["idle"], 0.5), 1),
        "input_lag_ratio": round(pct(cached["lags"], 0.95) / pct(cached["idle"], 0.5), 2),
        "storm": f"{args.storm_keys} keys at {args.storm_rate:g}/s, a completion and a rename after each",
        "peak_rss_mb": round(max(cached["peak_rss_mb"], plain["peak_rss_mb"]), 1),
        "requests": cached["requests"], "cancelled": cached["cancelled"], "timed": len(cached["line_ms"]),
        "model": args.model or "random small-preset weights", "max_tokens": args.max_tokens, "anchors": ANCHORS,
    }
    if qwen is not None:
        out.update(qwen)
    out["load_average_1m"] = {"start": round(load_start, 2), "end": round(load_end, 2), "cores": os.cpu_count()}
    out["goals_met"] = {k: (out[k] >= v if k == "cache_speedup" else out[k] <= v) for k, v in GOALS.items()}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:22s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
server's VmHWM), counts. The model has random `small` weights unless `--model` names a checkpoint;
a random model never ends a line early, so its single-line figures are an upper bound.

    python bench/lsp_latency.py [--json] [--lines 40] [--pause-every 4] [--max-tokens 24] [--model DIR]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

GOALS = {"ttft_p50_ms": 25.0, "line_p50_ms": 100.0, "line_p95_ms": 250.0, "cache_speedup": 3.0}
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


async def run(checkpoint: Path, args, *, cache: bool) -> dict:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("bench", "0")
    statuses: list = []
    client.feature("infill/status")(lambda ls, p: statuses.append(p))
    await client.start_io(sys.executable, "-m", "lsp", "--model", str(checkpoint), "--device", "cpu",
                          "--log-file", args.server_log)
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options={
            "maxTokens": args.max_tokens, "cacheMb": 256 if cache else 0, "timeBudgetMs": 10000}))
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
    for i, ch in enumerate(func):  # the reference types the same keys and sends the same requests
        version += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(line, col), types.Position(line, col)), text=ch)]))
        line, col = (line + 1, 0) if ch == "\n" else (line, col + 1)
        if pending is not None and not pending[1].done():
            client.cancel_request(types.CancelParams(id=pending[0]))
            cancelled += 1
        pause = (i + 1) % args.pause_every == 0 and ch not in "\n "
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
                ttft_ms.append(statuses[-1].ttftMs)
            pending = None
        else:
            await asyncio.sleep(0)
    pid = client._server.pid
    with open(f"/proc/{pid}/status") as f:
        peak = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")) / 1024
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {"line_ms": line_ms, "ttft_ms": ttft_ms, "cancelled": cancelled, "requests": requests,
            "peak_rss_mb": peak}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


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
    args = parser.parse_args()
    if args.model and not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: not a checkpoint directory (no config.json)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            ckpt = Path(args.model)
        else:
            print("building the small-preset checkpoint...", file=sys.stderr)
            ckpt = build_checkpoint(Path(tmp))
        print("typing with the session cache...", file=sys.stderr)
        cached = asyncio.run(run(ckpt, args, cache=True))
        print("typing without it (reference)...", file=sys.stderr)
        plain = asyncio.run(run(ckpt, args, cache=False))
    out = {
        "ttft_p50_ms": round(statistics.median(cached["ttft_ms"]), 2),
        "line_p50_ms": round(pct(cached["line_ms"], 0.5), 2),
        "line_p95_ms": round(pct(cached["line_ms"], 0.95), 2),
        "nocache_line_p50_ms": round(pct(plain["line_ms"], 0.5), 2),
        "cache_speedup": round(pct(plain["line_ms"], 0.5) / pct(cached["line_ms"], 0.5), 2),
        "reference": "same server and scenario with the session cache off (cacheMb 0)",
        "peak_rss_mb": round(max(cached["peak_rss_mb"], plain["peak_rss_mb"]), 1),
        "requests": cached["requests"], "cancelled": cached["cancelled"], "timed": len(cached["line_ms"]),
        "model": args.model or "random small-preset weights", "max_tokens": args.max_tokens, "anchors": ANCHORS,
    }
    out["goals_met"] = {k: (out[k] >= v if k == "cache_speedup" else out[k] <= v) for k, v in GOALS.items()}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:22s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

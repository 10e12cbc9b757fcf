"""Cross-file rest-of-line exact match with and without repository context, through infill-lsp.

The set: lines of a held-out multi-file package (default `detect_secrets` from this venv's
site-packages: `infill.corpus.HELD_OUT_PACKAGES` keeps it out of every corpus; `httpx`, the default
until the second default model, is in that model's corpus) whose rest uses a name the
file imports from another file of the package (`from ._models import Request`). Half of the samples
blank the whole line (the cursor at its indentation), half put the cursor mid-line, just before the
cross-file name. The document sent is the file with the rest of that line removed.

How: a real LSP client over stdio, as an editor: the package copied into a temporary folder is the
workspace, the file that defines the name is open, then the edited file; one inlineCompletion request
per sample. Against: the same requests to a server with no workspace folder and `context: false`.
The copy baseline: the most common line of the same file that starts with the text before the cursor
(in the blanked-line case, the most common non-blank line with the same indentation). A prediction is
right when its first line, stripped, equals the line's rest, stripped.

Variants (`--variants`): mix, the server's default (the cache model on: it reads the document and,
with a workspace, the same files as repository context); model, the cache off. Counts are given by
mode (blank, mid), in total, and apart for targets of at most 2 characters, beside the same-file copy
baseline and the file-then-package one (the package's other files where the file has no match).

Gathering time: `lsp.context.gather` (no cache: what a completion costs when a source changed) for
every sample's cursor, in a 1,000-file workspace made of copies of the package; `cold` is the first
pass (imported files parsed), `warm` the second (parses cached by mtime, as the server keeps them).

Models: the default model (LocalEngine, the `<|file|>` repository format) and the same weights
exported to transformers (`infill export --hf`, run through HFEngine with the `infill-spm` template's
format); `--hf DIR` adds any local transformers model (e.g. a Qwen2.5-Coder directory).

    python bench/repo_context.py [--json] [--samples 400] [--variants mix,model] [--package detect_secrets]
                                 [--hf DIR ...] [--no-export] [--gather-only]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

GOALS = {"gain_points": 5.0, "gather_p95_ms": 5.0}


def samples_of(root: Path, n: int, seed: int = 0) -> list[dict]:
    """Benchmark lines of the package under `root` (see the module docstring)."""
    from lsp import context as ctx
    from lsp import syntax

    ws = ctx.Workspace([root])
    ws.scan()
    found = []
    for path in sorted(ws.files):
        text = path.read_text("utf-8", "replace")
        lines = text.splitlines(keepends=True)
        names: dict[str, Path] = {}
        for imp in ctx.imports_of(text):
            for target in ws.resolve(imp, path):
                if target == path:
                    continue
                defs = ws.parsed(target).definitions if ws.parsed(target) else {}
                names.update({name: target for name in imp.names if name in defs})
        if not names:
            continue
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b")
        tree = syntax.parser_for("python").parse(text.encode("utf-8"))
        offset = 0
        for i, line in enumerate(lines):
            start, offset = offset, offset + len(line.encode("utf-8"))
            s = line.strip()
            if not s or s.startswith(("import ", "from ", "#", "@", '"', "'")) or len(s) > 100:
                continue
            m = pattern.search(line)
            if m is None:
                continue
            at = start + len(line[:m.start()].encode("utf-8"))
            node = tree.root_node.descendant_for_byte_range(at, at + 1)
            if node is None or node.type != "identifier":
                continue  # the name in a string or a comment
            up = node
            while up is not None and up.type not in ("import_from_statement", "import_statement"):
                up = up.parent
            if up is not None:
                continue  # a line of a parenthesised import
            found.append({"path": path, "line": i, "name": m.group(1), "at": m.start(),
                          "defining": names[m.group(1)]})
    random.Random(seed).shuffle(found)
    out = []
    for k, s in enumerate(found[:n]):
        line = s["path"].read_text("utf-8", "replace").splitlines(keepends=True)[s["line"]]
        indent = len(line) - len(line.lstrip())
        col = indent if k % 2 == 0 or s["at"] <= indent else s["at"]
        out.append({**s, "col": col, "mode": "blank" if col == indent else "mid",
                    "target": line[col:].rstrip("\r\n").strip()})
    return out


def edited(sample: dict) -> str:
    lines = sample["path"].read_text("utf-8", "replace").splitlines(keepends=True)
    line = lines[sample["line"]]
    lines[sample["line"]] = line[:sample["col"]] + ("\n" if line.endswith("\n") else "")
    return "".join(lines)


def copy_baseline(sample: dict, package: list[Path] = ()) -> str:
    """The most common other line of the file that starts with the text before the cursor; with
    `package` (the package's other files), where the file has none, the most common one of those."""
    lines = sample["path"].read_text("utf-8", "replace").splitlines()
    line = lines[sample["line"]]
    head = line[:sample["col"]]

    def matches(ln: str) -> bool:
        if head.strip():
            return ln.startswith(head)
        return ln[:len(head)] == head and not ln[len(head):len(head) + 1].isspace()  # the same indentation
    pool = [ln for j, ln in enumerate(lines) if j != sample["line"] and ln.strip() and matches(ln)]
    for other in package:
        if pool:
            break
        if other != sample["path"]:
            pool += [ln for ln in other.read_text("utf-8", "replace").splitlines() if ln.strip() and matches(ln)]
    if not pool:
        return ""
    best = collections.Counter(ln[len(head):].strip() for ln in pool).most_common()
    best.sort(key=lambda kv: (-kv[1], kv[0]))
    return best[0][0]


async def run_server(model: str | None, samples: list[dict], root: Path | None, *, max_tokens: int,
                     cache: bool = True) -> tuple[list[str], list[int]]:
    """The first line of the completion of every sample, and the context tokens each used, from one
    infill-lsp (with `root` as its workspace and context on, or with neither; the cache model on or off)."""
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("bench", "0")
    statuses: list = []
    client.feature("infill/status")(lambda ls, p: statuses.append(p))
    args = [sys.executable, "-m", "lsp", "--device", "cpu"] + (["--model", model] if model else [])
    await client.start_io(*args)
    folders = [types.WorkspaceFolder(root.as_uri(), root.name)] if root else None
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), root_uri=root.as_uri() if root else None, workspace_folders=folders,
        initialization_options={"maxTokens": max_tokens, "timeBudgetMs": 30000, "context": root is not None,
                                "cache": cache}))
    client.initialized(types.InitializedParams())
    while not statuses or statuses[-1].state not in ("ready", "failed"):
        await asyncio.sleep(0.05)
    if statuses[-1].state != "ready":
        raise SystemExit(f"server failed: {statuses[-1].message}")
    preds, context_tokens = [], []
    for k, s in enumerate(samples):
        uri, def_uri = s["path"].as_uri(), s["defining"].as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            def_uri, "python", 1, s["defining"].read_text("utf-8", "replace"))))
        client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri, "python", 1, edited(s))))
        before = len(statuses)
        answer = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(s["line"], s["col"]),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
        for _ in range(200):
            if len(statuses) > before:
                break
            await asyncio.sleep(0.005)
        if len(statuses) > before:
            context_tokens.append(statuses[-1].contextTokens or 0)
        items = answer.items if answer else []
        preds.append(items[0].insert_text.split("\n")[0].strip() if items else "")
        for u in (uri, def_uri):
            client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(u)))
        print(f"\r{'with' if root else 'without'} context: {k + 1}/{len(samples)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return preds, context_tokens


def gather_times(package: Path, samples: list[dict], copies: int) -> dict:
    """Gathering milliseconds in a workspace of `copies` copies of the package (see the docstring)."""
    from lsp import context as ctx

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big"
        for c in range(copies):
            shutil.copytree(package, big / f"copy{c}" / package.name, ignore=shutil.ignore_patterns("__pycache__"))
        ws = ctx.Workspace([big])
        ws.scan()
        runs = {}
        for label in ("cold", "warm"):
            times = []
            for s in samples:
                path = big / "copy0" / package.name / s["path"].relative_to(s["root"] / package.name)
                text = edited(s)
                other = s["defining"].relative_to(s["root"]).as_posix()
                t = time.perf_counter()
                ctx.gather(text, s["line"], path, workspace=ws, recent=None,
                           open_docs={other: s["defining"].read_text()}, max_chars=4096)
                times.append((time.perf_counter() - t) * 1000)
            runs[label] = times
        return {"files": len(ws.files), "cold_p95_ms": pct(runs["cold"], 0.95),
                "warm_p50_ms": pct(runs["warm"], 0.5), "warm_p95_ms": pct(runs["warm"], 0.95)}


def split(preds: list[str], samples: list[dict]) -> dict:
    """Exact matches by mode (blank, mid), in total, and for targets of at most 2 characters or longer."""
    out = collections.Counter()
    for p, s in zip(preds, samples):
        hit = p == s["target"]
        out[s["mode"]] += hit
        out["total"] += hit
        out["short" if len(s["target"]) <= 2 else "long"] += hit
    return {k: out[k] for k in ("blank", "mid", "total", "short", "long")}


def fmt(c: dict) -> str:
    return f"{c['blank']} / {c['mid']} / {c['total']}, {c['short']} / {c['long']}"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--samples", type=int, default=400,
                        help="benchmark lines, half blanked, half mid-line (default 400, or as many as the package has)")
    parser.add_argument("--variants", default="mix,model",
                        help="comma-separated: mix (the model and the cache model, the server's default), model (the "
                             "model alone: cache off); default mix,model. The cache alone is measured by "
                             "`infill eval rest-of-line --variants cache` (the server has no such mode)")
    parser.add_argument("--package", default="detect_secrets",
                        help="held-out package (import name) in site-packages; default detect_secrets, which no "
                             "corpus holds (infill.corpus.HELD_OUT_PACKAGES)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--hf", action="append", default=[], help="also a local transformers model directory")
    parser.add_argument("--no-export", action="store_true", help="skip the default model exported to transformers")
    parser.add_argument("--gather-only", action="store_true", help="only the gathering time (no model runs)")
    args = parser.parse_args()
    site = Path(sysconfig.get_paths()["purelib"])
    if not (site / args.package / "__init__.py").is_file():
        parser.error(f"{args.package}: no such package in {site}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        shutil.copytree(site / args.package, root / args.package, ignore=shutil.ignore_patterns("__pycache__"))
        bare = Path(tmp) / "bare"  # the same files, for the run without a workspace (other URIs, no folder)
        shutil.copytree(root, bare)
        samples = [{**s, "root": root} for s in samples_of(root, args.samples)]
        if not samples:
            raise SystemExit(f"{args.package}: no line uses a name from another file of the package")
        models = [] if args.gather_only else [("default", None)]
        if not args.no_export and not args.gather_only:
            out = Path(tmp) / "default-hf"
            subprocess.run([sys.executable, "-m", "infill.cli", "export", "--hf", str(out)], check=True,
                           stdout=subprocess.DEVNULL)
            models.append(("default-hf", str(out)))
        models += [(Path(d).name, d) for d in args.hf]
        variants = [v for v in args.variants.split(",") if v]
        if not variants or set(variants) - {"mix", "model"}:
            parser.error(f"--variants must be a comma-separated list of mix, model, got {args.variants!r}")
        package = sorted((root / args.package).rglob("*.py"))
        copy = [copy_baseline(s) for s in samples]
        copy_pkg = [copy_baseline(s, package) for s in samples]
        report = {"package": args.package, "samples": len(samples),
                  "blank": sum(s["mode"] == "blank" for s in samples),
                  "short": sum(len(s["target"]) <= 2 for s in samples), "models": {},
                  "copy_em": 100 * statistics.mean(p == s["target"] for p, s in zip(copy, samples)),
                  "copy": split(copy, samples), "copy_file_then_package": split(copy_pkg, samples)}
        for name, model in models:
            for variant in variants:
                cache = variant == "mix"
                with_ctx, tokens = asyncio.run(run_server(model, samples, root, max_tokens=args.max_tokens,
                                                          cache=cache))
                bare_samples = [{**s, "root": bare, "path": bare / s["path"].relative_to(root),
                                 "defining": bare / s["defining"].relative_to(root)} for s in samples]
                without, _ = asyncio.run(run_server(model, bare_samples, None, max_tokens=args.max_tokens,
                                                    cache=cache))
                em = lambda preds: 100 * statistics.mean(p == s["target"] for p, s in zip(preds, samples))  # noqa: E731
                report["models"][f"{name} {variant}"] = {
                    "with_context_em": em(with_ctx), "without_context_em": em(without),
                    "with_context": split(with_ctx, samples), "without_context": split(without, samples),
                    "context_tokens_mean": statistics.mean(tokens) if tokens else 0.0}
        report["gather"] = gather_times(root / args.package, samples, copies=max(1, -(-1000 // len(
            list((root / args.package).rglob("*.py"))))))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['package']}: {report['samples']} lines ({report['blank']} blanked, the rest mid-line; "
              f"{report['short']} of at most 2 characters); copy baseline {report['copy_em']:.1f}% exact")
        print(f"  counts as blank / mid / total, <= 2 chars / longer: copy (same file) {fmt(report['copy'])}; "
              f"copy (file, else package) {fmt(report['copy_file_then_package'])}")
        for name, r in report["models"].items():
            print(f"  {name}: with context {r['with_context_em']:.1f}% ({fmt(r['with_context'])}), without "
                  f"{r['without_context_em']:.1f}% ({fmt(r['without_context'])}) "
                  f"(context {r['context_tokens_mean']:.0f} tokens a prompt on average)")
        g = report["gather"]
        print(f"  gathering in {g['files']} files: warm p50 {g['warm_p50_ms']:.2f} ms, p95 {g['warm_p95_ms']:.2f} ms"
              f" (goal <= {GOALS['gather_p95_ms']} ms); cold p95 {g['cold_p95_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

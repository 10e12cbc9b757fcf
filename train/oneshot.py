"""One command for a first GPU: test, benchmark, build a corpus, train on a time budget, export.

    scripts/gpu_oneshot.sh OUT                 # on the GPU machine (about 9 minutes on one H200)
    scripts/gpu_oneshot.sh OUT --rehearse      # the same code path on a CPU, tiny, in well under a minute
    python -m train.oneshot --join OUT MODEL   # back here: the sharded export as one model directory

Stages, in order, each timed (`stages` in the JSON):
1. `gpu_tests`: `pytest -m gpu tests/kernels` and `bench/attention.py --json` (the kernel's TFLOP/s
   against SDPA's backends, and flash-attn where installed).
2. `corpus`: `infill data build --executor local` over this machine's own installed packages
   (standard library included), `workers` datatrove tasks on as many processes (16 by default), with
   the usual licences, filters, dedup and decontamination.
3. `tokenizer`: the repository's BPE tokenizer trained on that corpus.
4. `train`: the `gpu-oneshot` recipe with a time budget (what is left of `--total` after the stages
   before it, less a reserve for the export, at most `--train-budget`): bf16, compiled, the Triton
   attention; SDPA when the GPU tests failed (recorded as `attention.fallback`).
5. `export`: the model in bf16 as `config.json`, `tokenizer.json` and safetensors shards of at most
   15 MiB, 50 MB and 6 files in all (checked; a model that does not fit is an error).
6. `oneshot.json`: every figure (environment, tests, attention benchmark, tokens/s, MFU, loss curve,
   evaluation, stage times, export files); `oneshot.log`: what the sub-processes printed.
OUT holds those files only (at most 8); the corpus and the run live in `--work` (a temporary
directory unless given). `--rehearse` swaps the sizes (three small installed packages, a 1,024-token
vocabulary, the tiny model, a few seconds of training, fp32 on the CPU) and nothing else.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
SHARD_BYTES = 15 * MIB
EXPORT_BYTES = 50_000_000
EXPORT_FILES = 6
OUT_FILES = 8
SHARD_NAME = "model-{:05d}-of-{:05d}.safetensors"
EXPORT_RESERVE_S = 45.0
USAGE_ERROR = 2


class OneshotError(Exception):
    """A stage could not produce what the next one needs."""


class Run:
    """The stage timer, the JSON being filled and the log file."""

    def __init__(self, out: Path):
        self.out, self.t0 = out, time.perf_counter()
        self.result: dict = {"stages": {}}
        self.log = open(out / "oneshot.log", "a", encoding="utf-8")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def stage(self, name: str, fn, *args, **kwargs):
        print(f"oneshot: {name} (at {self.elapsed():.0f} s)", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.result["stages"][name] = round(time.perf_counter() - t, 2)
            self.save()

    def sh(self, args: list[str], timeout: float) -> tuple[int, str]:
        """Run a command from the repository root; its output goes to the log and is returned."""
        self.log.write(f"$ {' '.join(args)}\n")
        self.log.flush()
        try:
            p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
            rc, text = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as exc:
            rc = 124
            text = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or "")
        self.log.write(text + f"\n[exit {rc}]\n")
        self.log.flush()
        return rc, text

    def save(self) -> None:
        self.result["total_s"] = round(self.elapsed(), 2)
        tmp = self.out / ".oneshot.json.tmp"
        tmp.write_text(json.dumps(self.result, indent=2) + "\n")
        os.replace(tmp, self.out / "oneshot.json")


NEEDED = ("numpy", "tokenizers", "safetensors", "tqdm", "datatrove", "dill", "multiprocess", "loguru", "humanize",
          "fsspec", "huggingface_hub", "xxhash", "orjson", "tree_sitter", "tree_sitter_python", "pytest")


def preflight() -> None:
    """Every package the stages import is there, before anything runs (the GPU machine has no network:
    a missing one is carried as a wheel, docs/train.md)."""
    import importlib.util

    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise OneshotError(f"missing Python package(s) {', '.join(missing)}: carry them as wheels (docs/train.md)")


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpu_count": os.cpu_count(), "device": "cpu"}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
    return env


# 1. GPU tests and the attention benchmark --------------------------------------------------------

def _pytest_counts(text: str) -> dict:
    import re

    tail = text.strip().splitlines()[-1] if text.strip() else ""
    return {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail)}


def gpu_tests(run: Run, rehearse: bool) -> dict:
    rc, text = run.sh([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                       "tests/kernels"], timeout=60)
    tests = {"exit": rc, **_pytest_counts(text)}
    bench_args = [sys.executable, "bench/attention.py", "--json", "--out", str(run.work / "bench")]
    if not rehearse:
        bench_args += ["--seqlens", "1024", "4096", "16384"]
    rc, text = run.sh(bench_args, timeout=60)
    bench: dict = {"exit": rc}
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if rc == 0 and lines:
        bench.update(json.loads(lines[-1]))
    return {"tests": tests, "attention_bench": bench}


# 2. corpus, 3. tokenizer -------------------------------------------------------------------------

def _source_bytes(source) -> int:
    return sum(os.path.getsize(path) for path, _, _ in source.files if os.path.exists(path))


def corpus(run: Run, rehearse: bool, workers: int, sources_mb: float = 0) -> dict:
    from train.data.config import PERMISSIVE_LICENSES, DataConfig
    from train.data.harvest import site_packages_sources
    from train.data.pipeline import build

    sources = site_packages_sources()
    if rehearse:  # the three smallest permissively licensed packages with some Python in them
        small = [s for s in sources if s.kind == "package" and s.license in PERMISSIVE_LICENSES
                 and sum(rel.endswith(".py") for _, rel, _ in s.files) >= 3]
        sources = sorted(small, key=_source_bytes)[:3]
    elif sources_mb > 0:  # the standard library first, then packages by name, up to the cap
        kept, total = [], 0
        for source in sources:
            size = _source_bytes(source) if source.files else 0
            if kept and total + size > sources_mb * 1e6:
                continue
            kept.append(source)
            total += size
        sources = kept
    report = build(sources, str(run.work / "corpus"), DataConfig(), executor="local", tasks=workers,
                   workers=workers, progress=not rehearse, overwrite=True)
    totals = report["totals"]
    return {"sources": len(sources), "files_kept": totals["files_kept"], "bytes_kept": totals["bytes_kept"],
            "shards": len(report["shards"])}


def tokenizer(run: Run, vocab_size: int, rehearse: bool) -> dict:
    from train.data.tokenizer import train_tokenizer

    tok = train_tokenizer(str(run.work / "corpus"), str(run.work / "corpus"), vocab_size=vocab_size,
                          sample_bytes=2_000_000 if rehearse else 50_000_000, count=False, progress=not rehearse)
    return {"vocab_size": len(tok)}


# 4. training -------------------------------------------------------------------------------------

def train_config(rehearse: bool, budget_s: float, backend: str, vocab_size: int):
    from train.config import apply_overrides
    from train.recipes import recipe

    if rehearse:
        items = ["model.max_seq_len=128", "seq_len=128", "batch_tokens=512", "micro_batch=4", "warmup_steps=2",
                 "eval_every=1000000", "eval_rows=2", "eval_bpb_docs=2", "eval_infill=2", "num_workers=0",
                 "device=cpu", "dtype=float32", "compile=false", "pack_by=repo"]
        config = apply_overrides(recipe("tiny"), items + ["schedule=wsd"])
    else:
        config = recipe("gpu-oneshot")
    items = [f"time_budget={max(1.0, budget_s):.0f}s", f"attention_backend={backend}", "tensorboard=false",
             "ckpt_every=0"]
    return apply_overrides(config, items + ([f"model.vocab_size={vocab_size}"] if vocab_size else []))


def training(run: Run, rehearse: bool, budget_s: float, gpu_ok: bool, vocab_size: int) -> dict:
    import torch

    from train.config import apply_overrides
    from train.logs import read_log
    from train.trainer import flops_per_token, train

    cuda = torch.cuda.is_available()
    backend = "triton" if cuda and gpu_ok else "sdpa"
    fallback = None if backend == "triton" or not cuda else "the GPU tests failed: SDPA instead of Triton"
    config = train_config(rehearse, budget_s, backend, vocab_size)
    config = apply_overrides(config, [f"data={run.work / 'corpus'}", f"progress={str(not rehearse).lower()}"])
    run_dir = run.work / "run"
    status = train(config, run_dir)
    if status != 0:
        raise OneshotError(f"training stopped with status {status}")
    log = read_log(run_dir)
    steps = log["train"]
    later = steps[len(steps) // 5:] or steps  # leave out the first steps (compilation, warm-up)
    tps = statistics.median(r["tokens_per_s"] for r in later)
    model_config = config.model_config()
    out = {"attention": {"backend": backend, "fallback": fallback},
           "config": {"model": model_config.to_dict(), "params": model_config.num_params(),
                      "seq_len": config.seq_len, "batch_tokens": config.batch_tokens, "compile": config.compile,
                      "dtype": config.dtype, "time_budget": config.time_budget, "optimizer": config.optimizer},
           "steps": len(steps), "tokens": steps[-1]["tokens"] if steps else 0,
           "tokens_per_s": round(tps, 1), "flops_per_token": flops_per_token(model_config, config.seq_len),
           "train_s": steps[-1].get("elapsed_s") if steps else None,
           "loss_curve": [[r["step"], round(r["loss"], 4)] for r in steps],
           "eval": log["eval"][-1] if log["eval"] else None}
    mfus = [r["mfu"] for r in later if "mfu" in r]
    out["mfu"] = round(statistics.median(mfus), 4) if mfus else None
    out["loader_tokens_per_s"] = round(steps[-1]["loader_tokens_per_s"], 1) if steps else None
    return out


# 5. export ---------------------------------------------------------------------------------------

def export(model_dir: Path, out: Path) -> dict:
    """The model of `model_dir` in bf16 as config.json, tokenizer.json and <= 15 MiB shards in `out`."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_dir / "model.safetensors"))
    shards: list[dict] = [{}]
    size = 0
    for name in sorted(state):
        t = state[name].to(torch.bfloat16) if state[name].is_floating_point() else state[name]
        nbytes = t.numel() * t.element_size()
        if nbytes > SHARD_BYTES - MIB:
            raise OneshotError(f"tensor {name} ({nbytes / MIB:.1f} MiB) does not fit a 15 MiB shard")
        if size + nbytes > SHARD_BYTES - MIB and shards[-1]:  # a MiB of room for the header
            shards.append({})
            size = 0
        shards[-1][name] = t.contiguous()
        size += nbytes
    config = json.loads((model_dir / "config.json").read_text())
    config.setdefault("infill", {})["weights_dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "tokenizer.json").write_text((model_dir / "tokenizer.json").read_text())
    for i, part in enumerate(shards):
        save_file(part, str(out / SHARD_NAME.format(i + 1, len(shards))), metadata={"format": "pt"})
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir())
             if p.name in ("config.json", "tokenizer.json") or p.name.startswith("model-")}
    total = sum(files.values())
    if len(files) > EXPORT_FILES or total > EXPORT_BYTES or max(files.values()) > SHARD_BYTES:
        raise OneshotError(f"export is {total / 1e6:.1f} MB in {len(files)} files; the limits are "
                           f"{EXPORT_BYTES / 1e6:.0f} MB in {EXPORT_FILES} files of 15 MiB")
    return {"files": files, "bytes": total}


def join_export(src: str | Path, dst: str | Path) -> Path:
    """The sharded export in `src` as one model directory `dst` (`infill.checkpoint` layout)."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    shards = sorted(src.glob("model-*-of-*.safetensors"))
    if not shards or not (src / "config.json").is_file():
        raise OneshotError(f"{src}: no oneshot export (config.json and model-*-of-*.safetensors)")
    expected = int(shards[0].name.split("-of-")[1].split(".")[0])
    if len(shards) != expected:
        raise OneshotError(f"{src}: {len(shards)} of {expected} shards present")
    state = {}
    for shard in shards:
        state.update(load_file(str(shard)))
    dst.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    for name in ("config.json", "tokenizer.json"):
        (dst / name).write_text((src / name).read_text())
    return dst


# the whole run -----------------------------------------------------------------------------------

def oneshot(out: Path, work: Path, *, rehearse: bool, total_s: float, train_budget_s: float, workers: int,
            sources_mb: float = 0) -> dict:
    preflight()
    out.mkdir(parents=True, exist_ok=True)
    stray = [p.name for p in out.iterdir() if p.name not in ("oneshot.json", "oneshot.log")]
    if stray:
        raise OneshotError(f"{out} is not empty ({stray[0]}); choose a new OUT")
    run = Run(out)
    run.work = work
    r = run.result
    r.update({"rehearse": rehearse, "environment": environment(), "limits": {"total_s": total_s}})
    try:
        r["gpu"] = run.stage("gpu_tests", gpu_tests, run, rehearse)
        gpu_ok = r["gpu"]["tests"]["exit"] == 0 and r["gpu"]["tests"].get("passed", 0) > 0
        r["corpus"] = run.stage("corpus", corpus, run, rehearse, workers, sources_mb)
        vocab = 1024 if rehearse else train_config(False, 1, "sdpa", 0).model_config().vocab_size
        r["tokenizer"] = run.stage("tokenizer", tokenizer, run, vocab, rehearse)
        budget = min(train_budget_s, total_s - run.elapsed() - EXPORT_RESERVE_S * (0.1 if rehearse else 1))
        if budget < 1:
            raise OneshotError(f"no time left to train ({run.elapsed():.0f} s of {total_s:.0f} s used)")
        r["train"] = run.stage("train", training, run, rehearse, budget, gpu_ok, r["tokenizer"]["vocab_size"])
        r["export"] = run.stage("export", export, work / "run" / "model", out)
        r["ok"] = True
    except OneshotError as exc:
        r["ok"], r["error"] = False, str(exc)
    finally:
        run.save()
        run.log.close()
    return r


def main(argv: list[str] | None = None) -> int:
    from train.budget import parse_duration

    parser = argparse.ArgumentParser(prog="scripts/gpu_oneshot.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT", nargs="?", help="output directory (new or empty)")
    parser.add_argument("--rehearse", action="store_true", help="the same path on a CPU, tiny, in seconds")
    parser.add_argument("--work", metavar="DIR", help="corpus and run directory (default: a temporary one)")
    parser.add_argument("--total", default="9m", help="wall time of the whole command (default 9m)")
    parser.add_argument("--train-budget", default="6m", help="most training time (default 6m)")
    parser.add_argument("--workers", type=int, default=None, help="corpus tasks, run at once (default 16, 2 rehearsing)")
    parser.add_argument("--sources-mb", type=float, default=0,
                        help="cap the harvested packages at about this many MB (default 0: all of them)")
    parser.add_argument("--join", nargs=2, metavar=("OUT", "MODEL"),
                        help="write the sharded export in OUT as the model directory MODEL, then exit")
    args = parser.parse_args(argv)
    try:
        if args.join:
            print(join_export(*args.join))
            return 0
        if not args.out:
            parser.error("OUT is required")
        total = parse_duration("5m" if args.rehearse and args.total == "9m" else args.total)
        budget = parse_duration("4s" if args.rehearse and args.train_budget == "6m" else args.train_budget)
        workers = args.workers or (2 if args.rehearse else 16)
        with tempfile.TemporaryDirectory(prefix="oneshot-") as tmp:
            work = Path(args.work) if args.work else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            result = oneshot(Path(args.out), work, rehearse=args.rehearse, total_s=total, train_budget_s=budget,
                             workers=workers, sources_mb=args.sources_mb)
    except (OneshotError, ValueError, OSError) as exc:
        print(f"gpu_oneshot: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    if not result["ok"]:
        print(f"gpu_oneshot: error: {result['error']} (see {args.out}/oneshot.json)", file=sys.stderr)
        return 1
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result["stages"].items())
    print(f"gpu_oneshot: done in {result['total_s']:.0f} s ({stages}); {args.out}/oneshot.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

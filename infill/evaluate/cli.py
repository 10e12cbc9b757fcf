"""The `infill eval` subcommands: argument parsing and printing only; the work is in the sibling modules.

Every command writes into `--out` and prints its summary as a single JSON line, last on stdout.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from infill.config import PROMPT_FORMATS

FORMATS = PROMPT_FORMATS
"""What --format takes: the model formats (`l2r` is the prefix alone)."""

EXAMPLES = """examples:
  infill eval humaneval-infilling --split single-line --model ckpt/ --out runs/sl
  infill eval humaneval-infilling --split multi-line --limit 500 --samples 10 --temperature 0.8 --model M --out D
  infill eval humaneval-infilling --format l2r --model runs/l2r/model --out runs/sl-l2r   # prefix only
  infill eval middle-bpb --split single-line --model ckpt/ --out runs/mid   # likelihood of the true middles
  infill eval score --samples runs/sl/samples.jsonl --out runs/rescored
  infill eval perplexity --model ckpt/ --data held-out/ --out runs/ppl
  infill eval types --model ckpt/ --out runs/types
  infill eval names --model ckpt/ --out runs/names
  infill eval rest-of-line --out runs/rol   # the rest of a line, as the language server completes it, beside a copy baseline
  infill eval report runs/sl runs/ppl --out report/

--model: an infill checkpoint, a Hugging Face model directory or cached hub name (--template to set its
FIM template), or openai:URL. Generated programs run in a sandbox (bubblewrap and a cgroup per sample;
see docs/eval.md); without one nothing is scored unless --unsafe-no-sandbox.
"""


def _print_summary(summary: dict) -> None:
    print(json.dumps(summary, sort_keys=True))


def _engine(args):
    from infill.engines.local import LocalEngine
    from infill.engines.load import load_engine

    engine = load_engine(args.model, device=args.device, template=args.template)
    fmt = getattr(args, "format", None)
    if fmt is not None:
        if not isinstance(engine, LocalEngine):
            raise ValueError("--format applies to infill checkpoints; a Hugging Face model or server takes --template")
        engine.format = fmt
    return engine


def _sandbox(args):
    from infill.evaluate.sandbox import SandboxConfig

    return SandboxConfig(timeout_s=args.timeout, memory_mb=args.memory_mb, pids=args.pids,
                         unsafe_no_sandbox=args.unsafe_no_sandbox)


def _scored(run):
    """`run()`, with a sandbox that cannot be had or set up turned into the one-line error of `infill`."""
    from infill.evaluate.sandbox import SandboxError

    try:
        return run()
    except SandboxError as exc:
        raise ValueError(str(exc)) from None


def cmd_humaneval(args) -> int:
    from infill.evaluate import humaneval

    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    tasks = humaneval.load_tasks(args.split, args.limit)
    engine = _engine(args)
    pairs = humaneval.generate(engine, tasks, args.split, samples=args.samples, temperature=args.temperature,
                               max_tokens=args.max_tokens, seed=args.seed, cache=args.cache)
    meta = {"eval": "humaneval-infilling", "split": args.split, "model": engine.name, "cache": args.cache,
            "engine": type(engine).__name__, "format": getattr(engine, "format", args.template), "temperature": args.temperature, "samples_per_task": args.samples,
            "limit": args.limit}
    summary = _scored(lambda: humaneval.score(pairs, Path(args.out), sandbox=_sandbox(args), workers=args.workers,
                                              total=len(tasks), meta=meta, progress=not args.quiet))
    _print_summary(summary)
    return 0


def cmd_score(args) -> int:
    from infill.evaluate import humaneval

    path = Path(args.samples)
    split = args.split
    if split is None:
        with open(path, encoding="utf-8") as f:
            n, first = next(((n, line) for n, line in enumerate(f, 1) if line.strip()), (1, "{}"))
        try:
            task_id = json.loads(first).get("task_id", "")
        except (ValueError, AttributeError):
            raise ValueError(f"{path}:{n}: expected a JSON object with task_id and completion") from None
        split = humaneval.split_of(task_id) if isinstance(task_id, str) else None
        if split is None:
            raise ValueError(f"{path}:{n}: cannot tell the split from task id {task_id!r}; pass --split")
    pairs = list(humaneval.read_samples(path, split))
    meta = {"eval": "humaneval-infilling", "split": split, "model": f"samples:{path.name}", "engine": "none"}
    summary = _scored(lambda: humaneval.score(pairs, Path(args.out) if args.out else None, sandbox=_sandbox(args),
                                              workers=args.workers, total=len(pairs), meta=meta,
                                              progress=not args.quiet))
    _print_summary(summary)
    return 0


def cmd_middle_bpb(args) -> int:
    from infill.evaluate import humaneval

    tasks = humaneval.load_tasks(args.split, args.limit)
    engine = _engine(args)
    fmt = getattr(engine, "format", None) or getattr(getattr(engine, "template", None), "name", None)
    meta = {"eval": "middle-bpb", "split": args.split, "model": engine.name, "engine": type(engine).__name__,
            "format": fmt, "limit": args.limit}
    summary = humaneval.middle_bits(engine, tasks, Path(args.out), meta=meta, progress=not args.quiet)
    _print_summary(summary)
    return 0


def cmd_perplexity(args) -> int:
    from infill.evaluate import perplexity

    engine = _engine(args)
    summary = perplexity.evaluate(engine, Path(args.data), Path(args.out), limit=args.limit,
                                  max_tokens=args.context, progress=not args.quiet)
    _print_summary(summary)
    return 0


def cmd_identifiers(args) -> int:
    from infill.evaluate import identifiers

    engine = _engine(args)
    files = identifiers.held_out_files(Path(args.data) if args.data else None)
    run = identifiers.evaluate_types if args.command_name == "types" else identifiers.evaluate_names
    summary = run(engine, files, Path(args.out), limit=args.limit, progress=not args.quiet, cache=args.cache)
    _print_summary(summary)
    return 0


def cmd_report(args) -> int:
    from infill.evaluate import report

    summary = report.write_report([Path(d) for d in args.runs], Path(args.out))
    _print_summary(summary)
    return 0


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="infill checkpoint dir, Hugging Face dir or cached hub name, or openai:URL "
                                   "(default: $INFILL_MODEL, then the built-in model)")
    p.add_argument("--template", help="FIM template of a Hugging Face model or server (default: detected)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _sandbox_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per program (default 3)")
    p.add_argument("--memory-mb", type=int, default=1024,
                   help="memory of one sample, all its processes together (cgroup; default 1024)")
    p.add_argument("--pids", type=int, default=32,
                   help="processes and threads of one sample at once, the sandbox's own 4 included (default 32)")
    p.add_argument("--workers", type=int, default=2, help="programs run in parallel (default 2)")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="where no sandbox can be had (bwrap and a cgroup), run the generated programs on the host "
                        "anyway; the summary and report then mark every figure unsandboxed. Without it such a "
                        "machine scores nothing")


def register(sub):
    """Add `infill eval` and its subcommands to the `infill` parser; return its subparsers, where the
    `infill.commands` entry points named `eval.NAME` add theirs (`infill eval rest-of-line`, from lsp)."""
    from infill.benchmarks import SPLITS

    parser = sub.add_parser("eval", help="evaluate a model: HumanEval-infilling, perplexity, types, names, rest of line, report",
                            description="Evaluate a model or score given samples.", epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ev = parser.add_subparsers(dest="eval_command", metavar="EVAL")

    p = ev.add_parser("humaneval-infilling", help="pass@k on HumanEval-infilling, programs run in a sandbox")
    _model_options(p)
    _sandbox_options(p)
    p.add_argument("--split", choices=list(SPLITS), default="single-line")
    p.add_argument("--samples", type=int, default=1, help="samples per task (default 1)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default 0)")
    p.add_argument("--max-tokens", type=int, default=None, help="per middle (default 64 single-line, else 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", action="store_true",
                   help="mix the cache model (infill.cache) over the task's own text into the model's predictions, "
                        "as the language server does (engines with logits); default: the model alone")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="prompt format of an infill checkpoint (default: the model's own); l2r is the prefix "
                        "alone, the left-to-right baseline that never sees the suffix")
    p.set_defaults(func=cmd_humaneval)

    p = ev.add_parser("score", help="score given completions ({task_id, completion} JSONL), no model")
    _sandbox_options(p)
    p.add_argument("--samples", required=True, help="JSONL file, one {task_id, completion} per line")
    p.add_argument("--split", choices=list(SPLITS), default=None, help="default: from the task ids")
    p.add_argument("--out", default=None, help="output directory (default: print only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_score)

    p = ev.add_parser("middle-bpb", help="bits per byte of HumanEval-infilling's canonical middles (teacher-forced)")
    _model_options(p)
    p.add_argument("--split", choices=list(SPLITS), default="single-line")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="prompt format (default: the model's own); l2r scores the middle after the prefix alone")
    p.set_defaults(func=cmd_middle_bpb)

    p = ev.add_parser("perplexity", help="bits per byte and token perplexity per language on held-out files")
    _model_options(p)
    p.add_argument("--data", required=True, help="directory of source files, or of *.jsonl(.gz) data shards")
    p.add_argument("--context", type=int, default=None, help="tokens per window (default: the model's context)")
    p.set_defaults(func=cmd_perplexity)

    for name, what in (("types", "type annotation prediction on held-out annotated Python"),
                       ("names", "identifier name prediction on held-out Python (InCoder protocol)")):
        p = ev.add_parser(name, help=what)
        _model_options(p)
        p.add_argument("--data", default=None, help="directory of Python files (default: a fixed standard-library sample)")
        p.add_argument("--cache", action="store_true",
                       help="mix the cache model over the item's document into the model's predictions (to measure "
                            "whether this feature gains from it); default: the model alone, as the server does")
        p.set_defaults(func=cmd_identifiers, command_name=name)

    p = ev.add_parser("report", help="Markdown table and PNG plot over run directories, with published figures")
    p.add_argument("runs", nargs="+", metavar="DIR", help="directories holding summary.json")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_report)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    return ev

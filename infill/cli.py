"""The `infill` command.

Core subcommands live here (`complete`, `export`, and the `eval` group from `infill.evaluate.cli`); packages that build on the core (`train`, `lsp`) add
theirs through the `infill.commands` entry-point group, so the core never imports them. An entry point
named `eval.NAME` adds `infill eval NAME` (its `register` gets the `eval` group's subparsers). Every user
error is one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points

from infill.text import UserError, parse_location, read_source, split_at

EXAMPLES = """examples:
  infill complete app.py:12:5                 fill in at line 12, column 5 (1-based)
  infill complete app.py:12:5 --json          {"middle": ..., "tokens": N, "latency_ms": ...}
  infill export --hf out/hf --model ckpt/     a Hugging Face Llama directory (transformers, vLLM, llama.cpp)
  infill export --checkpoint small/ --dtype bfloat16 --model ckpt/   the same checkpoint at half the size
  infill export --gguf model.gguf --type q8_0  one GGUF file for llama.cpp, Ollama, LM Studio (docs/lsp.md)
  infill eval humaneval-infilling --model ckpt/ --out runs/sl   HumanEval-infilling pass@1 (see infill eval -h)
  infill eval rest-of-line --out runs/rol     rest-of-line exact match as an editor asks, beside a copy baseline

The model: --model DIR, else $INFILL_MODEL, else the built-in default model. --model also takes a
Hugging Face model directory or locally cached hub name, or openai:URL (an OpenAI-compatible server).
"""


def cmd_complete(args) -> int:
    from infill.engines import CacheConfig, GenerationConfig, InfillRequest
    from infill.engines.load import load_engine

    path, line, col = parse_location(args.location)
    prefix, suffix = split_at(read_source(path), line, col)
    engine = load_engine(args.model, device=args.device, template=args.template)
    req = InfillRequest(prefix, suffix,
                        GenerationConfig(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed),
                        ext=path.suffix or None, cache=CacheConfig() if args.cache else None)
    result = engine.infill(req)
    if args.json:
        out = {"middle": result.text, "tokens": result.candidates[0].tokens if result.candidates else 0,
               "latency_ms": round(result.latency_ms, 2)}
        print(json.dumps(out))
    else:
        sys.stdout.write(result.text)
        if not result.text.endswith("\n"):
            sys.stdout.write("\n")
    return 0


def cmd_export(args) -> int:
    from infill.checkpoint import copy_checkpoint, export_hf
    from infill.engines.load import resolve_model

    if sum(x is not None for x in (args.hf, args.checkpoint, args.gguf)) != 1:
        raise UserError("give one of --hf OUT (a Hugging Face directory), --checkpoint OUT (an infill "
                        "checkpoint) or --gguf OUT.gguf (a llama.cpp file)")
    if args.type is not None and args.gguf is None:
        raise UserError("--type applies to --gguf")
    model = resolve_model(args.model)
    if args.gguf is not None:
        from infill.gguf_export import export_gguf

        if args.dtype != "float32":
            raise UserError("--dtype applies to --checkpoint; --gguf takes --type f32|f16|q8_0")
        out, warnings = export_gguf(model, args.gguf, type=args.type or "f32")
        for w in warnings:
            print(f"infill: warning: {w}", file=sys.stderr)
    elif args.hf is not None:
        if args.dtype != "float32":
            raise UserError("--dtype applies to --checkpoint; --hf writes float32")
        out = export_hf(model, args.hf)
    else:
        out = copy_checkpoint(model, args.checkpoint, dtype=args.dtype)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infill", description="Fill-in-the-middle code model: complete, export, curate data, train.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("complete", help="print the text that fills the hole at FILE:LINE:COL",
                       description="Print the code that fills the hole at a position of a file. The text "
                                   "before the position is the prefix, the text after it the suffix.")
    p.add_argument("location", metavar="FILE:LINE:COL", help="file and 1-based line and column of the cursor")
    p.add_argument("--model", help="checkpoint directory, Hugging Face model, or openai:URL "
                                   "(default: $INFILL_MODEL, then the built-in model)")
    p.add_argument("--template", help="FIM template of a Hugging Face model or server (default: detected)")
    p.add_argument("--max-tokens", type=int, default=64, help="most tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default 0)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed, for reproducible samples")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--json", action="store_true", help='print {"middle", "tokens", "latency_ms"} as JSON')
    p.add_argument("--cache", action="store_true",
                   help="mix the cache model over the file into the model's predictions, as the language server "
                        "does by default (engines with logits)")
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("export", help="write a model as a Hugging Face directory, a GGUF file or a smaller checkpoint",
                       description="Write a checkpoint as a Hugging Face directory that "
                                   "transformers.AutoModelForCausalLM.from_pretrained loads, with the "
                                   "tokenizer and its special tokens; as one GGUF file that llama.cpp's "
                                   "server, Ollama and LM Studio run (FIM tokens marked, so llama.cpp's "
                                   "/infill works); or as an infill checkpoint with its "
                                   "weights stored in another dtype (bfloat16 halves the size; it is "
                                   "loaded back as float32 on a CPU).")
    p.add_argument("--hf", metavar="OUT", help="output directory for the Hugging Face model")
    p.add_argument("--checkpoint", metavar="OUT", help="output directory for an infill checkpoint")
    p.add_argument("--gguf", metavar="OUT.gguf", help="output file for llama.cpp (GGUF, llama architecture)")
    p.add_argument("--type", choices=["f32", "f16", "q8_0"], default=None,
                   help="weights of --gguf: f32 (exact, default), f16 (half size), q8_0 (8-bit, about a quarter)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="weights dtype of --checkpoint (default float32)")
    p.add_argument("--model", help="checkpoint directory (default: $INFILL_MODEL, then the built-in model)")
    p.set_defaults(func=cmd_export)

    from infill.evaluate.cli import register as register_eval

    groups = {"": sub, "eval.": register_eval(sub)}
    for ep in sorted(entry_points(group="infill.commands"), key=lambda e: e.name):
        group, name = ("eval.", ep.name[5:]) if ep.name.startswith("eval.") else ("", ep.name)
        try:
            register = ep.load()
        except ImportError as exc:  # an optional package that is not installed
            groups[group].add_parser(name, help=f"unavailable: {exc}")
            continue
        register(groups[group])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from infill.checkpoint import CheckpointError

    try:
        return args.func(args)
    except (UserError, CheckpointError, ValueError) as exc:
        print(f"infill: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"infill: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`infill data build` and `infill data tokenizer`.

Registered on the `infill` console script through the `infill.commands` entry point
(`register`). User errors (a missing source, an unwritable output, a bad threshold) print one line
on stderr and return exit code 2; progress bars go to stderr.
"""
from __future__ import annotations

import argparse
import sys
import tempfile

from train.data.config import PERMISSIVE_LICENSES, DataConfig
from train.data.pipeline import EXECUTORS, TASKS_PER_WORKER, ClusterConfig

USAGE_ERROR = 2


def _error(message: str) -> int:
    print(f"infill data: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def register(subparsers) -> None:
    """Add the `data` command and its `build` and `tokenizer` sub-commands."""
    data = subparsers.add_parser("data", help="build a curated code corpus and train a tokenizer",
                                 description="Curate code into training shards (docs/data.md).")
    data.set_defaults(func=lambda args: (data.print_help(sys.stderr), USAGE_ERROR)[1])
    sub = data.add_subparsers(dest="data_command", metavar="{build,tokenizer}")

    d = DataConfig()
    b = sub.add_parser(
        "build", help="harvest, filter, deduplicate, redact and shard source code",
        description="Build compressed JSONL shards plus report.json/.md/.png with a datatrove "
                    "pipeline, on this machine (--executor local), a Slurm cluster or a Ray "
                    "cluster. An interrupted build resumes when the same command is run again.")
    b.add_argument("src", nargs="*", metavar="SRC",
                   help="directories, git checkouts or git URLs to harvest; with --input jsonl or "
                        "parquet, one file or folder of rows (a local path or an fsspec URL)")
    b.add_argument("--out", required=True, help="output directory for shards and report")
    b.add_argument("--site-packages", action="store_true",
                   help="also harvest the standard library and the installed distributions")
    b.add_argument("--input", choices=("files", "jsonl", "parquet"), default="files",
                   help="what SRC is: source trees (default), or JSONL / Parquet rows with "
                        "text, path, language, source, license, version columns")
    b.add_argument("--text-key", default="text", help="column of the text in JSONL / Parquet rows")
    b.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where the tasks run (default local: processes on this machine)")
    b.add_argument("--tasks", type=int, default=None,
                   help="tasks of each per-file stage: the input is cut into this many parts "
                        f"(default: {TASKS_PER_WORKER} per worker)")
    b.add_argument("--workers", type=int, default=1,
                   help="tasks running at once (default 1; Slurm: array limit, Ray: concurrency)")
    b.add_argument("--partition", help="Slurm partition (required with --executor slurm)")
    b.add_argument("--time", default=ClusterConfig.time, help="Slurm time limit per task")
    b.add_argument("--cpus-per-task", type=int, default=ClusterConfig.cpus_per_task,
                   help="Slurm / Ray CPUs per task")
    b.add_argument("--mem-per-cpu-gb", type=float, default=ClusterConfig.mem_per_cpu_gb,
                   help="Slurm / Ray memory per CPU in GB")
    b.add_argument("--env-command", help="Slurm: shell line that makes infill importable in a job "
                                         "(default: activate this Python environment)")
    b.add_argument("--ray-address", help="address of a running Ray cluster (default: start one here)")
    b.add_argument("--licenses", nargs="+", default=list(PERMISSIVE_LICENSES), metavar="SPDX",
                   help="SPDX ids to keep; add 'unknown' to keep unlicensed files "
                        "(default: permissive licenses)")
    b.add_argument("--languages", nargs="+", default=None, metavar="LANG",
                   help="keep only these languages (python, c, cpp, javascript, ...)")
    b.add_argument("--near-threshold", type=float, default=d.near_threshold,
                   help=f"MinHash Jaccard threshold for near duplicates (default {d.near_threshold})")
    b.add_argument("--max-file-bytes", type=int, default=d.max_file_bytes)
    b.add_argument("--max-line-length", type=int, default=d.max_line_length)
    b.add_argument("--max-mean-line-length", type=float, default=d.max_mean_line_length)
    b.add_argument("--min-alnum-fraction", type=float, default=d.min_alnum_fraction)
    b.add_argument("--decontam-ngram", type=int, default=d.decontam_ngram,
                   help=f"words per n-gram shared with a benchmark (default {d.decontam_ngram})")
    b.add_argument("--held-out", nargs="+", default=[], metavar="PATH",
                   help="extra held-out files or directories to decontaminate against")
    b.add_argument("--no-benchmarks", action="store_true",
                   help="do not decontaminate against the shipped HumanEval-infilling splits")
    b.add_argument("--no-redact", action="store_true", help="keep emails, IPs and secrets")
    b.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help=f"share of packages/repositories in validation (default {d.val_fraction})")
    b.add_argument("--seed", type=int, default=d.seed)
    b.add_argument("--shard-mb", type=float, default=d.shard_bytes / 1e6,
                   help="uncompressed MB of text per shard")
    b.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=build_command)

    t = sub.add_parser("tokenizer", help="train the code tokenizer on a sample of a built corpus",
                       description="Train infill's CodeTokenizer on the train shards of --data.")
    t.add_argument("--data", required=True, help="directory written by `infill data build`")
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--out", required=True, help="directory for tokenizer.json")
    t.add_argument("--sample-bytes", type=int, default=50_000_000,
                   help="at most this many bytes of text are read (default 50 MB)")
    t.add_argument("--n-masks", type=int, default=32, help="mask sentinel tokens (default 32)")
    t.add_argument("--no-count", action="store_true",
                   help="skip counting tokens per package over the whole corpus")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=tokenizer_command)


def build_command(args: argparse.Namespace) -> int:
    """`infill data build`: returns 0, or 2 on bad input."""
    from train.data.harvest import resolve_sources
    from train.data.pipeline import StageFailed, TableInput, build

    try:
        config = DataConfig(
            licenses=tuple(args.licenses), languages=args.languages,
            max_file_bytes=args.max_file_bytes, max_line_length=args.max_line_length,
            max_mean_line_length=args.max_mean_line_length,
            min_alnum_fraction=args.min_alnum_fraction, near_threshold=args.near_threshold,
            decontam_ngram=args.decontam_ngram, held_out=tuple(args.held_out),
            benchmarks=not args.no_benchmarks, redact=not args.no_redact,
            val_fraction=args.val_fraction, seed=args.seed,
            shard_bytes=max(1, int(args.shard_mb * 1e6)))
        cluster = ClusterConfig(partition=args.partition, time=args.time,
                                cpus_per_task=args.cpus_per_task, mem_per_cpu_gb=args.mem_per_cpu_gb,
                                env_command=args.env_command, ray_address=args.ray_address)
        run = dict(executor=args.executor, tasks=args.tasks or TASKS_PER_WORKER * args.workers,
                   workers=args.workers,
                   progress=not args.quiet, overwrite=args.overwrite, cluster=cluster)
        if args.input != "files":
            if len(args.src) != 1 or args.site_packages:
                raise ValueError(f"--input {args.input} reads one file or folder (SRC)")
            data = build(TableInput(args.input, args.src[0], args.text_key), args.out, config, **run)
        else:
            with tempfile.TemporaryDirectory(prefix="infill-clone-") as clone_dir:
                sources = resolve_sources(args.src, args.site_packages, clone_dir)
                data = build(sources, args.out, config, **run)
    except ValueError as e:
        return _error(str(e))
    except ImportError as e:  # the data extra (datatrove...), or Ray for --executor ray
        extra = "data,ray" if e.name == "ray" else "data"
        return _error(f"{e.name} is not installed; install infill with pip install -e '.[{extra}]'")
    except StageFailed as e:
        print(f"infill data: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _error("interrupted; run the same command again to resume")
    if data is None:
        print(f"submitted the build to Slurm; its report will be {args.out}/report.md "
              f"(logs: {args.out}/work/logs)", file=sys.stderr)
        return 0
    t = data["totals"]
    print(f"kept {t['files_kept']:,} of {t['files_seen']:,} files "
          f"({t['bytes_kept'] / 1e6:,.1f} MB) in {len(data['shards'])} shard(s); "
          f"report: {args.out}/report.md", file=sys.stderr)
    return 0


def tokenizer_command(args: argparse.Namespace) -> int:
    """`infill data tokenizer`: returns 0, or 2 on bad input."""
    from train.data.tokenizer import train_tokenizer

    try:
        train_tokenizer(args.data, args.out, vocab_size=args.vocab_size,
                        sample_bytes=args.sample_bytes, n_masks=args.n_masks,
                        count=not args.no_count, progress=not args.quiet)
    except ValueError as e:
        return _error(str(e))
    except KeyboardInterrupt:
        return _error("interrupted")
    print(f"tokenizer written to {args.out}/tokenizer.json", file=sys.stderr)
    return 0

"""Pipeline: the curation stages as one datatrove pipeline, run locally, on Slurm or on Ray.

    1 curate      (tasks)   read -> harvest, licenses, filter, redact, decontaminate -> curated
                            JSONL; exact-dedup signatures
    2 exact       (1)       exact duplicates (datatrove ExactFindDedups)
    3 signatures  (tasks)   curated minus exact duplicates -> MinHash signatures
    4 buckets     (25)      candidate pairs, one task per LSH band
    5 cluster     (1)       union-find over the pairs: one file per cluster is kept
    6 write       (tasks)   curated minus both kinds of duplicates -> split -> shards
    7 report      (1)       report.json / .md / .png from every step's counters

Each stage is a list of `PipelineStep`s (`steps`, and datatrove's dedup steps) run by one executor
with `tasks` tasks; `make_executor` is the one place that knows local from Slurm from Ray. Task r
of every stage handles the same documents (stage 1's output `curated/{r:05d}.jsonl`), in input
order, so duplicates resolve to the first copy as a single process would see it.

Intermediate files, completion markers and logs live in `OUT/work/` (shared storage on a
cluster). datatrove marks each finished task; running the same command again after a crash or a
kill skips finished tasks and stages, and the result is the same as an uninterrupted build.

Memory per task: one document at a time through the per-file stages, plus what datatrove's
dedup holds: the task's exact-dedup hashes (16 bytes a file) until stage 1 ends, and the
clustering stage's union-find over duplicate pairs (in one process, as the index was before).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass

from infill.corpus import package_key
from train.data.config import DataConfig
from train.data.harvest import Source
from train.data.shards import shard_paths

EXECUTORS = ("local", "slurm", "ray")
# Default tasks per worker: a task is a contiguous block of the input, and redaction's cost per
# byte varies by file, so a few blocks per worker let the executor's pool even out the load.
TASKS_PER_WORKER = 4
REPORT_FILES = ("report.json", "report.md", "report.png")
WORK_DIR = "work"


@dataclass
class ClusterConfig:
    """Settings of the Slurm and Ray executors (ignored by `local`)."""

    partition: str | None = None
    """Slurm partition (required for Slurm)."""
    time: str = "04:00:00"
    """Slurm time limit of each task."""
    cpus_per_task: int = 1
    """CPUs per task (Slurm and Ray)."""
    mem_per_cpu_gb: float = 2.0
    """Memory per CPU in GB (Slurm and Ray)."""
    env_command: str | None = None
    """Shell line that makes `infill` importable in a Slurm job; default: activate this venv."""
    ray_address: str | None = None
    """Address of a running Ray cluster ("auto" for the local node's); None starts a local Ray."""


@dataclass(frozen=True)
class TableInput:
    """JSONL or Parquet rows as input (`steps.table_reader`): a file, a folder or an fsspec URL."""

    kind: str  # "jsonl" or "parquet"
    path: str
    text_key: str = "text"


def make_executor(kind: str, pipeline: list, *, name: str, tasks: int, workers: int,
                  logging_dir: str, depends=None, cluster: ClusterConfig | None = None):
    """The datatrove executor of one stage: the only place where local, Slurm and Ray differ."""
    cluster = cluster or ClusterConfig()
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        # fork, as the multiprocessing pool did: workers start with this process's imports and
        # caches instead of importing everything again (datatrove's default is forkserver)
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks),
                                     logging_dir=logging_dir, depends=depends, start_method="fork")
    if kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        env = cluster.env_command or f"source {os.path.join(sys.prefix, 'bin', 'activate')}"
        return SlurmPipelineExecutor(pipeline, tasks=tasks, workers=workers, time=cluster.time,
                                     partition=cluster.partition, cpus_per_task=cluster.cpus_per_task,
                                     mem_per_cpu_gb=cluster.mem_per_cpu_gb, job_name=f"infill-{name}",
                                     env_command=env, logging_dir=logging_dir, depends=depends,
                                     mail_type="NONE")
    if kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir,
                                   depends=depends, cpus_per_task=cluster.cpus_per_task,
                                   mem_per_cpu_gb=cluster.mem_per_cpu_gb)
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")


def stages(reader, out_dir: str, config: DataConfig, tasks: int) -> list[tuple[str, list, int]]:
    """(name, steps, tasks) of each stage, in order; intermediate data under `out_dir/work`."""
    from datatrove.pipeline.dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature,
                                          ExactFindDedups, MinhashDedupBuckets, MinhashDedupCluster,
                                          MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.writers import JsonlWriter

    from train.data.dedup import CodeWords, code_minhash_config, exact_content, exact_priority
    from train.data.steps import AssignSplit, CountDrops, Curate, RankReader, WriteReport, WriteShards

    work = os.path.join(out_dir, WORK_DIR)
    curated, exact, minhash = (os.path.join(work, d) for d in ("curated", "exact", "minhash"))
    exact_config = ExactDedupConfig(content_getter=exact_content, document_priority=exact_priority)
    minhash_config = code_minhash_config(config)

    def exact_filter():
        return ExactDedupFilter(f"{exact}/dups", config=exact_config)

    return [
        ("1-curate", [reader, Curate(config),
                      JsonlWriter(curated, output_filename="${rank}.jsonl", compression=None),
                      ExactDedupSignature(f"{exact}/sigs", config=exact_config)], tasks),
        ("2-exact", [ExactFindDedups(f"{exact}/sigs", f"{exact}/dups", config=exact_config)], 1),
        ("3-signatures", [RankReader(curated), exact_filter(),
                          MinhashDedupSignature(f"{minhash}/sigs", config=minhash_config,
                                                language=CodeWords())], tasks),
        ("4-buckets", [MinhashDedupBuckets(f"{minhash}/sigs", f"{minhash}/buckets",
                                           config=minhash_config)], minhash_config.num_buckets),
        ("5-cluster", [MinhashDedupCluster(f"{minhash}/buckets", f"{minhash}/remove",
                                           config=minhash_config)], 1),
        ("6-write", [RankReader(curated), CountDrops(exact_filter(), "dedup.exact"),
                     CountDrops(MinhashDedupFilter(f"{minhash}/remove"), "dedup.near"),
                     AssignSplit(config), WriteShards(out_dir, config.shard_bytes)], tasks),
        ("7-report", [WriteReport(out_dir)], 1),
    ]


def _plan(inputs, config: DataConfig, executor: str, tasks: int) -> dict:
    """What identifies a build: an interrupted one resumes only with the same plan."""
    if isinstance(inputs, TableInput):
        described = [f"{inputs.kind}:{inputs.path}"]
    else:
        described = [f"{s.name} {s.version}".strip() for s in inputs]
    return {"sources": described, "config": config.to_dict(), "executor": executor, "tasks": tasks}


def _prepare_out(out_dir: str, plan: dict, overwrite: bool) -> bool:
    """Make `out_dir` ready; True when an interrupted build of the same plan is resumed there."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output directory {out_dir!r}: {e.strerror}") from e
    if not os.access(out_dir, os.W_OK):
        raise ValueError(f"output directory {out_dir!r} is not writable")
    work = os.path.join(out_dir, WORK_DIR)
    reports = [os.path.join(out_dir, f) for f in REPORT_FILES if os.path.exists(os.path.join(out_dir, f))]
    plan_file = os.path.join(work, "plan.json")
    if not overwrite:
        if reports or (shard_paths(out_dir) and not os.path.exists(plan_file)):
            raise ValueError(f"output directory {out_dir!r} already holds a corpus; pass --overwrite")
        if os.path.exists(plan_file):
            with open(plan_file, encoding="utf-8") as f:
                if json.load(f)["plan"] == plan:
                    return True
            raise ValueError(f"output directory {out_dir!r} holds an interrupted build with other "
                             "settings; rerun that command to finish it, or pass --overwrite")
    for path in shard_paths(out_dir) + reports:
        os.remove(path)
    shutil.rmtree(work, ignore_errors=True)
    return False


@contextlib.contextmanager
def _console_to(path: str):
    """datatrove logs every task to stderr: send stderr (this process's, and the worker
    processes' it starts) to `path`; yield a stream to the real stderr for the progress bar."""
    sys.stderr.flush()
    saved_fd, saved = os.dup(2), sys.stderr
    console = os.fdopen(os.dup(saved_fd), "w", buffering=1)
    with open(path, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 2)
        sys.stderr = log
        try:
            yield console
        finally:
            sys.stderr = saved
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            console.close()
            # datatrove's logger was last pointed at the log file, now closed: point it back
            from datatrove.utils.logging import setup_default_logger

            setup_default_logger()


class StageFailed(RuntimeError):
    """A stage's task raised; the message names the stage and its log."""


def build(inputs: list[Source] | TableInput, out_dir: str, config: DataConfig, *,
          executor: str = "local", tasks: int = 1, workers: int = 1, progress: bool = True,
          overwrite: bool = False, cluster: ClusterConfig | None = None) -> dict | None:
    """Run the pipeline over `inputs` into `out_dir`; return the report's dict, or None for Slurm
    (the jobs are submitted; the report appears when the last one ends). Sources named in
    `config.exclude_packages` (by default the evaluations' held-out package) are dropped first.
    An interrupted build with the same inputs and settings in `out_dir` is resumed.

    Raises `ValueError` for bad input (output directory, held-out path, executor settings),
    `StageFailed` when a task fails (its log is named; run the same command again to resume)."""
    from train.data.steps import SourceReader, table_reader

    if tasks < 1 or workers < 1:
        raise ValueError(f"tasks and workers must be at least 1, got {tasks} and {workers}")
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor == "slurm" and not (cluster and cluster.partition):
        raise ValueError("the Slurm executor needs --partition")
    missing = [p for p in config.held_out if not os.path.exists(p)]
    if missing:
        raise ValueError(f"held-out path {missing[0]!r} does not exist")
    if isinstance(inputs, TableInput):
        if "://" not in inputs.path:
            if not os.path.exists(inputs.path):
                raise ValueError(f"input {inputs.path!r} does not exist")
            if os.path.abspath(out_dir).startswith(os.path.abspath(inputs.path).rstrip(os.sep) + os.sep):
                raise ValueError("--out is inside the input folder: the build would read its own output")
        reader = table_reader(inputs.kind, inputs.path, inputs.text_key)
    else:
        inputs = [s for s in inputs if package_key(s.name) not in config.exclude_packages]
        reader = SourceReader(inputs, config)
    if executor == "ray":  # before anything is written: no Ray, no half-prepared output
        import ray

        if not ray.is_initialized():
            ray.init(address=cluster.ray_address if cluster else None)
    out_dir = os.path.abspath(out_dir)
    plan = _plan(inputs, config, executor, tasks)
    resumed = _prepare_out(out_dir, plan, overwrite)
    work = os.path.join(out_dir, WORK_DIR)
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    with open(os.path.join(work, "plan.json"), "w", encoding="utf-8") as f:
        json.dump({"plan": plan, "workers": workers, "started": time.time(), "resumed": resumed}, f)

    plan_stages = stages(reader, out_dir, config, tasks)
    if executor == "slurm":
        previous = None
        for name, steps, n in plan_stages:
            previous = make_executor(executor, steps, name=name, tasks=n, workers=workers,
                                     logging_dir=os.path.join(work, "logs", name), depends=previous,
                                     cluster=cluster)
        previous.run()  # submits every stage, each an array job depending on the one before
        return None
    from tqdm import tqdm

    with _console_to(os.path.join(work, "logs", "console.log")) as console:
        bar = tqdm(total=len(plan_stages), unit="stage", desc="infill data build", file=console,
                   disable=not progress)
        seconds = {}
        for name, steps, n in plan_stages:
            start = time.perf_counter()
            bar.set_postfix_str(f"{name} ({n} task{'s' * (n > 1)})")
            logging_dir = os.path.join(work, "logs", name)
            try:
                make_executor(executor, steps, name=name, tasks=n, workers=workers,
                              logging_dir=logging_dir, cluster=cluster).run()
            except Exception as e:  # a task's exception, re-raised by the executor
                raise StageFailed(f"stage {name} failed ({type(e).__name__}: {e}); log: "
                                  f"{logging_dir}/logs; run the same command again to resume") from e
            seconds[name] = round(time.perf_counter() - start, 3)
            bar.update(1)
        bar.close()
    with open(os.path.join(work, "logs", "stage_seconds.json"), "w", encoding="utf-8") as f:
        json.dump(seconds, f)
    with open(os.path.join(out_dir, "report.json"), encoding="utf-8") as f:
        return json.load(f)

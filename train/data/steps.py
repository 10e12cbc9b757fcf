"""The curation stages as datatrove `PipelineStep`s, so one pipeline runs on any executor.

A record (`records`) and a datatrove `Document` map one to one: `text` is the text, the other
fields are the metadata, `source/path` is the id (`to_document`, `to_record`). Each step's
`run(data, rank, world_size)` takes documents and yields the ones it keeps; a record that a rule
drops is counted where it is dropped, with `stat_update` under the labels of
`report.record_counts` (`Tally`), and never passed on. The report is the sum of those counters
over every step of every task (`pipeline`), wherever the tasks ran.

    SourceReader   discovered files of directories, git checkouts, installed packages
    table_reader   JSONL / Parquet rows (datatrove's readers; a Hub dataset's file list works too)
    Curate         today's per-file stages: harvest, licenses, filter, redact, decontaminate
    CountDrops     wraps a datatrove filter (exact and MinHash dedup) and counts what it drops
    AssignSplit    train / validation by group (a hash of the group name: same on every node)
    WriteShards    the shards training reads, one series per task, and the kept-file counts
    RankReader     reads back, in a later stage, what the same task wrote in the first
    WriteReport    sums every step's counters of every task into report.json / .md / .png

Exact and near-duplicate detection are datatrove's own steps (`pipeline`), set for code in `dedup`.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader

from infill.corpus import LANGUAGES, language_of
from train.data.config import DataConfig
from train.data.decontaminate import decontaminate
from train.data.filters import filter_quality
from train.data.harvest import Source, discover, harvest
from train.data.licenses import filter_licenses
from train.data.records import Record, drop, is_removed
from train.data.redact import redact
from train.data.report import Report, record_counts, write_report
from train.data.shards import ShardWriter
from train.data.split import split_of

# Today's per-file stages, in order: each a function from records to records (see `records`).
PER_FILE_STAGES = (harvest, filter_licenses, filter_quality, redact, decontaminate)
# What `table_reader` reads as one file rather than a folder of them.
TABLE_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".parquet")


def to_document(record: Record) -> Document:
    """The datatrove document of a record: its text, and every other field as metadata."""
    return Document(text=record.get("text", ""), id=f"{record['source']}/{record['path']}",
                    metadata={k: v for k, v in record.items() if k != "text"})


def to_record(doc: Document) -> Record:
    """The record of a datatrove document (the inverse of `to_document`)."""
    return {"text": doc.text, **doc.metadata}


class Tally:
    """Mixin for steps that count records leaving the pipeline (`report.record_counts`)."""

    def tally(self, record: Record) -> None:
        for label, value in record_counts(record):
            self.stat_update(label, value=value)


def rank_block(sizes: list[int], rank: int, world_size: int) -> range:
    """The contiguous run of items (of these byte sizes) that task `rank` of `world_size` takes:
    boundaries at equal shares of the bytes, so tasks are balanced and, read in rank order, the
    blocks are the input in order (what makes dedup keep the first copy, as one process would)."""
    total = sum(sizes) or 1
    start = end = None
    before = 0
    for i, size in enumerate(sizes):
        owner = min(world_size - 1, before * world_size // total)
        if owner == rank and start is None:
            start = i
        if owner > rank:
            end = i
            break
        before += size
    if start is None:
        return range(0)
    return range(start, len(sizes) if end is None else end)


class SourceReader(PipelineStep):
    """Reader of local sources (`harvest.Source`: directories, git checkouts, installed packages).

    Every task lists all files (`harvest.discover`: paths and sizes, cheap) and keeps its block
    (`rank_block`); the documents carry no text yet: `Curate` reads them, so reading is parallel.
    Files must be visible to every task (one machine, or a shared file system)."""

    type = "📖 - READER"
    name = "infill sources"

    def __init__(self, sources: list[Source], config: DataConfig) -> None:
        super().__init__()
        self.sources = sources
        self.config = config

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        records = list(discover(self.sources, self.config))
        for i in rank_block([r["bytes"] for r in records], rank, world_size):
            self.stat_update("files_listed")
            yield to_document(records[i])


class TableColumns:
    """Adapter of datatrove's JSONL / Parquet readers: one row, one record.

    Columns: `text_key` (default "text"); `path` (else the row's id); `source` (else `repo_name`,
    `repo`, else the input file's name); `language` (a name from `infill.corpus.LANGUAGES`, else
    from the path's extension); `license` (an SPDX expression; a list of ids reads as a choice,
    `A OR B`); `version`. The rules that read files on disk (binary sniffing, license files) do
    not apply to rows; every other rule does."""

    def __init__(self, text_key: str = "text") -> None:
        self.text_key = text_key

    def __call__(self, reader, row: dict, path: str, id_in_file: int | str) -> dict:
        text = row.get(self.text_key) or ""
        file_path = str(row.get("path") or row.get("id") or f"{id_in_file}")
        source = str(row.get("source") or row.get("repo_name") or row.get("repo")
                     or path.rsplit("/", 1)[-1].split(".", 1)[0])
        language = str(row.get("language") or "").lower()
        if language not in set(LANGUAGES.values()):
            language = language_of(file_path) or ""
        license_ = row.get("license") or ""
        if isinstance(license_, (list, tuple)):
            license_ = " OR ".join(map(str, license_))
        record = {"text": text, "path": file_path, "language": language, "source": source,
                  "version": str(row.get("version") or ""), "license": str(license_),
                  "group": source, "bytes": len(text.encode("utf-8"))}
        return {"text": text, "id": f"{source}/{file_path}", "metadata": {k: v for k, v in record.items()
                                                                          if k != "text"}}


def table_reader(kind: str, path: str, text_key: str = "text") -> PipelineStep:
    """datatrove's JSONL or Parquet reader over a file or folder (a local path or any fsspec URL,
    e.g. `hf://datasets/...`; in a folder, the `.jsonl*` or `.parquet` files at any depth), with
    rows adapted by `TableColumns`."""
    from datatrove.pipeline.readers import ParquetReader  # needs pyarrow: imported when used

    reader = {"jsonl": JsonlReader, "parquet": ParquetReader}[kind]
    folder, pattern = path, {"jsonl": "**/*.jsonl*", "parquet": "**/*.parquet"}[kind]
    if path.endswith(TABLE_FILE_SUFFIXES):  # one file: its folder, and its name as the pattern
        folder, pattern = path.rsplit("/", 1) if "/" in path else (".", path)
    return reader(folder, glob_pattern=pattern, adapter=TableColumns(text_key), text_key=text_key)


def wanted(record: Record, config: DataConfig) -> bool:
    """The language rule of `harvest.discover`, for records that did not come through it."""
    language = record.get("language")
    return bool(language) and (not config.languages or language in config.languages)


class Curate(Tally, PipelineStep):
    """Today's per-file stages (`PER_FILE_STAGES`), run lazily over the task's documents; what a
    rule drops is counted (`Tally`) and not passed on. Working fields (`_file`...) are removed
    from what is passed on; `_rank` is added for exact dedup's priority (`dedup.exact_priority`)."""

    type = "✂️ - FILTER"
    name = "infill curate"

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        records: Iterable[Record] = (r for r in map(to_record, data) if wanted(r, self.config))
        for stage in PER_FILE_STAGES:
            records = stage(records, self.config)
        for record in records:
            if is_removed(record):
                self.tally(record)
                continue
            kept = {k: v for k, v in record.items() if not k.startswith("_")}
            kept["_rank"] = rank
            yield to_document(kept)


class CountDrops(Tally, PipelineStep):
    """Runs a datatrove filter (`step`) and counts each document it drops under `rule`.

    Filters keep order and only drop, so a document missing between two kept ones was dropped;
    only the documents since the last kept one are held."""

    type = "🫂 - DEDUP"

    def __init__(self, step: PipelineStep, rule: str) -> None:
        self.name = f"{step.name} [{rule}]"
        super().__init__()
        self.step = step
        self.rule = rule

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        pending: deque[Document] = deque()

        def feed() -> Iterator[Document]:
            for doc in data:
                pending.append(doc)
                yield doc

        for kept in self.step.run(feed(), rank, world_size):
            while pending[0] is not kept:
                self.tally(drop(to_record(pending.popleft()), self.rule))
            pending.popleft()
            yield kept
        while pending:
            self.tally(drop(to_record(pending.popleft()), self.rule))


class AssignSplit(PipelineStep):
    """Sets `split` (`split.split_of`): a salted hash of the group name, so every node agrees."""

    type = "🔀 - SPLIT"
    name = "infill split"

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            split = split_of(doc.metadata.get("group") or doc.metadata["source"], self.config)
            doc.metadata["split"] = split
            self.stat_update(split)
            yield doc


class WriteShards(Tally, PipelineStep):
    """Writes kept documents to the shards that training reads (`shards.ShardWriter`: gzip JSONL,
    published by rename), one series per task (`{split}-{rank:05d}-{index:05d}.jsonl.gz`), and
    counts them for the report. A task that is run again rewrites its own shards."""

    type = "💽 - WRITER"
    name = "infill shards"

    def __init__(self, out_dir: str, shard_bytes: int) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.shard_bytes = shard_bytes

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with ShardWriter(self.out_dir, self.shard_bytes, part=rank) as writer:
            for doc in data:
                record = to_record(doc)
                writer.write(record)
                self.tally(record)
                yield doc
        for shard in writer.shards:
            self.stat_update(f'["shard", "{shard["file"]}", "{shard["split"]}", "records"]',
                             value=shard["records"])
            self.stat_update(f'["shard", "{shard["file"]}", "{shard["split"]}", "bytes"]',
                             value=shard["bytes"])


class RankReader(JsonlReader):
    """Reads back exactly the file that the same task wrote in stage 1 (`{rank:05d}.jsonl`), so
    the k-th document of task r is the same in every stage: dedup marks documents by that index.
    (datatrove's readers deal a folder's files out round-robin, which shifts when a task wrote no
    file.)"""

    name = "infill curated"

    def __init__(self, folder: str) -> None:
        super().__init__(folder, compression=None, add_file_path=False)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        name = f"{rank:05d}.jsonl"
        if self.data_folder.exists(name):
            yield from self.read_file(name)


def _total(value) -> int:
    """A counter's total from datatrove's stats JSON (a number, or a dict with "total")."""
    return int(value["total"] if isinstance(value, dict) else value)


class WriteReport(PipelineStep):
    """The last stage (one task): sums the counters of every step of every task of the earlier
    stages (`OUT/work/logs/*/stats/*.json`, one file per finished task) into the report, lists
    the shards, writes report.json / .md / .png, and deletes the intermediate data (logs stay)."""

    type = "📊 - REPORT"
    name = "infill report"

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        work = os.path.join(self.out_dir, "work")
        with open(os.path.join(work, "plan.json"), encoding="utf-8") as f:
            plan = json.load(f)
        report, shards = Report(), {}
        for path in sorted(glob.glob(os.path.join(work, "logs", "*", "stats", "*.json"))):
            with open(path, encoding="utf-8") as f:
                for step in json.load(f):
                    totals = {label: _total(v) for label, v in step["stats"].items()}
                    report.merge(totals)
                    for label, value in totals.items():
                        if label.startswith('["shard"'):
                            _, file, split, measure = json.loads(label)
                            shards.setdefault(file, {"file": file, "split": split})[measure] = value
        data = report.to_dict(
            sources=plan["plan"]["sources"], config=plan["plan"]["config"],
            executor=plan["plan"]["executor"], tasks=plan["plan"]["tasks"], workers=plan["workers"],
            elapsed_s=round(time.time() - plan["started"], 2),
            shards=[{"records": 0, "bytes": 0, **shards[k]} for k in sorted(shards)])
        write_report(data, self.out_dir)
        for folder in ("curated", "exact", "minhash"):
            shutil.rmtree(os.path.join(work, folder), ignore_errors=True)
        self.stat_update("files_kept", value=data["totals"]["files_kept"])
        return iter(())

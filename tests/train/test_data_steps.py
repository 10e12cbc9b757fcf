"""datatrove steps: contiguous task blocks, counted drops, table readers, bounded memory, shards."""
import json
import random
import tracemalloc

import pytest
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from train.data.config import DataConfig
from train.data.report import Report
from train.data.steps import CountDrops, Curate, rank_block, table_reader, to_document, to_record

WORDS = ["alpha", "beta", "gamma", "delta", "value", "index", "count", "items", "total", "node"]


@pytest.mark.parametrize("world_size", [1, 2, 3, 16])
def test_rank_blocks_cover_the_input_in_order(world_size):
    sizes = [random.Random(i).randint(1, 5000) for i in range(50)]
    blocks = [rank_block(sizes, rank, world_size) for rank in range(world_size)]
    assert [i for block in blocks for i in block] == list(range(50))
    if world_size <= 3:  # balanced by bytes, within one file
        shares = [sum(sizes[i] for i in block) for block in blocks]
        assert max(shares) - min(shares) <= 2 * max(sizes)


class DropOdd(PipelineStep):
    name = "drop odd"

    def run(self, data, rank=0, world_size=1):
        for doc in data:
            if int(doc.metadata["path"][1:]) % 2 == 0:
                yield doc


def _record(i: int, text: str = "x = 1\n") -> dict:
    return {"text": text, "path": f"f{i}", "language": "python", "source": "s", "version": "",
            "license": "MIT", "group": "s", "bytes": len(text)}


def test_count_drops_counts_what_a_filter_drops():
    step = CountDrops(DropOdd(), "dedup.near")
    kept = [to_record(d)["path"] for d in step.run(map(to_document, map(_record, range(7))))]
    assert kept == ["f0", "f2", "f4", "f6"]
    report = Report()
    report.merge({label: s.total for label, s in step.stats.stats.items()})
    assert report.to_dict()["removed"] == {"dedup.near": {"python": 3}}


def _rows():
    return [
        {"content": "def add(a, b):\n    return a + b\n", "path": "pkg/add.py", "repo_name": "owner/repo",
         "license": ["MIT"], "id": "1"},
        {"content": "x" * 2000 + "\n", "path": "pkg/long.py", "repo_name": "owner/repo", "license": ["MIT"],
         "id": "2"},
        {"content": "int main() { return 0; }\n", "path": "main.c", "repo_name": "other/gpl",
         "license": ["GPL-3.0"], "id": "3"},
        {"content": "not code\n", "path": "README.txt", "repo_name": "owner/repo", "license": ["MIT"], "id": "4"},
    ]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_table_rows_go_through_the_per_file_stages(tmp_path, kind):
    path = tmp_path / f"rows.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(_rows()), path)
    reader = table_reader(kind, str(path), text_key="content")
    curate = Curate(DataConfig())
    kept = [to_record(d) for d in curate.run(reader.run(None, 0, 1))]
    assert [(r["path"], r["source"], r["language"], r["license"]) for r in kept] == [
        ("pkg/add.py", "owner/repo", "python", "MIT")]
    report = Report()
    report.merge({label: s.total for label, s in curate.stats.stats.items()})
    assert report.to_dict()["removed"] == {"filter.max_line_length": {"python": 1},
                                           "license.not_allowed": {"c": 1}}
    (tmp_path / "notes.txt").write_text("not rows\n")  # a folder: only its .jsonl* / .parquet files
    folder = table_reader(kind, str(tmp_path), text_key="content")
    assert [d.metadata["path"] for d in folder.run(None, 0, 1)] == [r["path"] for r in _rows()]


def _text(seed: int, n_lines: int) -> str:
    rng = random.Random(seed)
    return "".join(f"{rng.choice(WORDS)}_{rng.randint(0, 10**6)} = {rng.choice(WORDS)}"
                   f"({rng.randint(0, 999)}, {rng.choice(WORDS)})\n" for _ in range(n_lines))


def _peak_bytes(n_files: int) -> int:
    curate = Curate(DataConfig())
    docs = (Document(text=(t := _text(i, 1000)), id=str(i), metadata={**_record(i, t), "bytes": len(t)})
            for i in range(n_files))
    tracemalloc.start()
    for _ in curate.run(docs):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_the_bytes_streamed():
    # 6 files vs 24 files of ~32 KB through the per-file stages of one task: the peak is set by the
    # file in flight (and the stages' caches), not by the bytes streamed.
    _peak_bytes(2)  # warm-up: the benchmark n-grams are built once per process
    small, large = _peak_bytes(6), _peak_bytes(24)
    streamed = 18 * len(_text(0, 1000))
    assert large - small < 0.25 * streamed, (small, large, streamed)


def test_shards_roll_over_and_a_failed_run_publishes_nothing(tmp_path):
    from train.data.shards import ShardWriter, read_shards, shard_paths

    rows = [{"text": "x" * 40, "path": f"{i}.py", "language": "python", "source": "s",
             "version": "", "license": "MIT", "group": "s", "split": "train"} for i in range(5)]
    with ShardWriter(str(tmp_path), shard_bytes=100) as writer:
        for row in rows:
            writer.write(row)
    assert [s["records"] for s in writer.shards] == [3, 2]
    assert [r["path"] for r in read_shards(str(tmp_path))] == [r["path"] for r in rows]

    failed = tmp_path / "failed"
    failed.mkdir()
    try:
        with ShardWriter(str(failed), shard_bytes=10**6) as writer:
            writer.write(rows[0])
            raise RuntimeError("crash")
    except RuntimeError:
        pass
    assert shard_paths(str(failed)) == [] and list(failed.iterdir()) == []

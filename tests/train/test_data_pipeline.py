"""Pipeline: streaming with bounded memory, same output for any number of workers."""
import random
import tracemalloc

from train.data import pipeline
from train.data.config import DataConfig
from train.data.pipeline import GLOBAL_STAGES, MAP_STAGES, map_parallel, run_stages

WORDS = ["alpha", "beta", "gamma", "delta", "value", "index", "count", "items", "total", "node"]


def _text(seed: int, n_lines: int) -> str:
    rng = random.Random(seed)
    return "".join(f"{rng.choice(WORDS)}_{rng.randint(0, 10**6)} = {rng.choice(WORDS)}"
                   f"({rng.randint(0, 999)}, {rng.choice(WORDS)})\n" for _ in range(n_lines))


def _records(n: int, n_lines: int = 40, consumed: list | None = None):
    """In-memory records (text set, as if read), generated lazily; `consumed` counts the pulls."""
    for i in range(n):
        if consumed is not None:
            consumed.append(i)
        text = _text(i % max(1, n // 2), n_lines)  # every file twice: dedup state stays small
        yield {"path": f"f{i}.py", "language": "python", "source": "synthetic", "version": "",
               "license": "MIT", "group": "synthetic", "bytes": len(text), "text": text}


def _stages():
    return MAP_STAGES + GLOBAL_STAGES


def test_map_parallel_pulls_a_bounded_window(monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK_FILES", 4)
    consumed: list = []
    config = DataConfig()
    out = map_parallel(_records(200, n_lines=3, consumed=consumed), config, workers=2)
    got = [next(out) for _ in range(10)]
    # Two workers: at most 2 * 2 chunks of 4 files in flight, plus the chunk being assembled.
    assert len(consumed) <= 10 + (2 * 2 + 1) * 4
    assert [r["path"] for r in got] == [f"f{i}.py" for i in range(10)]
    assert len(list(out)) == 190


def _peak_bytes(n_files: int) -> int:
    config = DataConfig(licenses=("MIT",))
    tracemalloc.start()
    for _ in run_stages(_records(n_files, n_lines=1000), config, _stages()):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_the_corpus():
    # 6 files vs 24 files of ~32 KB: the peak is set by one file in flight (and numpy temporaries)
    # plus the dedup index of the distinct files, not by the bytes streamed.
    _peak_bytes(2)  # warm-up: the benchmark n-grams are built once per process
    small, large = _peak_bytes(6), _peak_bytes(24)
    streamed = sum(r["bytes"] for r in _records(24, n_lines=1000)) - sum(
        r["bytes"] for r in _records(6, n_lines=1000))
    assert large - small < 0.25 * streamed, (small, large, streamed)


def test_workers_do_not_change_the_result(tmp_path):
    config = DataConfig(licenses=("MIT",), val_fraction=0.5)
    records = list(_records(60, n_lines=20))
    one = list(run_stages(records, config, _stages()))
    two = list(GLOBAL_STAGES[1](GLOBAL_STAGES[0](
        map_parallel(iter(records), config, workers=2), config), config))
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("_")} for r in rs]  # noqa: E731
    assert strip(one) == strip(two)
    assert sum("removed" in r for r in one) == 30  # each file appears twice


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

"""The loader: a resumable stream, the same with worker processes, fast enough for the trainer."""
import time

from train.config import apply_overrides
from train.loader import Loader, stdlib_corpus
from train.recipes import recipe


def _same(a, b):
    return all((x.tokens == y.tokens).all() and (x.loss == y.loss).all() and (x.segment == y.segment).all()
               for x, y in zip(a, b)) and len(a) == len(b)


def test_stream_resumes_from_any_position_and_workers_change_nothing(tiny_tokenizer):
    train, val = stdlib_corpus(8)
    assert train.shards[0] and val.shards[0]
    config = apply_overrides(recipe("tiny"), ["seq_len=128", "model.max_seq_len=128"])
    rows = Loader(train, tiny_tokenizer, config).take(120)  # more than one epoch of 7 modules? check below
    for cut in (1, 37, 90):
        again = Loader(train, tiny_tokenizer, config, position=rows[cut - 1].after).take(120 - cut)
        assert _same(again, rows[cut:])
    parallel = Loader(train, tiny_tokenizer, apply_overrides(config, ["num_workers=1"]))
    try:
        assert _same(parallel.take(40), rows[:40])
    finally:
        parallel.close()


def test_epochs_reshuffle_and_remask(tiny_tokenizer):
    train, _ = stdlib_corpus(3)
    config = apply_overrides(recipe("tiny"), ["seq_len=128", "model.max_seq_len=128"])
    loader = Loader(train, tiny_tokenizer, config)
    rows = []
    while loader.position["epoch"] < 2:
        rows.append(next(loader))
    first = [r for r in rows if r.after["epoch"] == 0]
    second = [r for r in rows if r.after["epoch"] == 1]
    assert first and second and not _same(first[:5], second[:5])


def test_loader_throughput_is_well_above_the_trainer(tiny_tokenizer):
    """The in-process loader alone (tiny objective mix) must far outrun training (measured in bench/train.py)."""
    train, _ = stdlib_corpus(8)
    config = apply_overrides(recipe("tiny"), [])
    loader = Loader(train, tiny_tokenizer, config)
    t0 = time.perf_counter()
    rows = loader.take(60)
    rate = len(rows) * config.seq_len / (time.perf_counter() - t0)
    assert rate > 5000, rate  # tokens/s; cpu-small trains at ~1-2K tokens/s on this machine

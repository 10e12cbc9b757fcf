"""The loader: a resumable stream, the same with worker processes, fast enough for the trainer."""
import itertools
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


def test_repo_packing_puts_a_package_in_one_segment_file_after_file(tiny_tokenizer):
    from train.loader import Corpus, record_order

    def rec(source, path, text):
        return {"text": text, "path": path, "source": source, "language": "python"}

    records = [rec("pkg_b", "pkg_b/z.py", "import os\nB_Z = 1\n"), rec("pkg_a", "pkg_a/y.py", "A_Y = 2\n"),
               rec("pkg_b", "pkg_b/a.py", "B_A = 3\n"), rec("pkg_a", "pkg_a/x.py", "A_X = 4\n")]
    order = record_order(records, "repo", 7, 0, 0)
    paths = [records[i]["path"] for i in order]
    assert sorted(paths[:2]) == paths[:2] and sorted(paths[2:]) == paths[2:]  # path order in a package
    assert {p.split("/")[0] for p in paths[:2]} != {p.split("/")[0] for p in paths[2:]}  # one package, then the other
    assert sorted(record_order(records, "file", 7, 0, 0)) == [0, 1, 2, 3]
    config = apply_overrides(recipe("tiny"), ["seq_len=256", "model.max_seq_len=256", "pack_by=repo",
                                              "objective.l2r_rate=1", "objective.causal_rate=0",
                                              "objective.spm_rate=0", "objective.psm_rate=0"])
    row = Loader(Corpus([records]), tiny_tokenizer, config).take(1)[0]
    tokens, segment = row.tokens.tolist(), row.segment.tolist()
    starts = [i for i, t in enumerate(tokens) if t == tiny_tokenizer.file_meta_id]
    assert len(starts) >= 4 and starts[0] == 0  # a header per file
    seg_of = [segment[i] for i in starts[:4]]
    assert seg_of[0] == seg_of[1] and seg_of[2] == seg_of[3] and seg_of[1] != seg_of[2]
    text = tiny_tokenizer.decode(tokens[:starts[2]])
    first, second = (records[i]["text"] for i in order[:2])
    assert text.index(first) < text.index(second)
    # file packing: every file its own segment
    plain = Loader(Corpus([records]), tiny_tokenizer, apply_overrides(config, ["pack_by=file"])).take(1)[0]
    assert len(set(plain.segment.tolist())) >= 4


def test_repo_packing_does_not_let_one_package_fill_the_stream():
    from train.loader import record_order

    big = [{"text": "x" * 3000, "path": f"big/m{i:03d}.py", "source": "big"} for i in range(60)]
    small = [{"text": "y" * 100, "path": f"s{j}/m.py", "source": f"s{j}"} for j in range(10)]
    records = big + small
    order = record_order(records, "repo", 7, 0, 0, chunk_kb=16)
    assert sorted(order) == list(range(len(records)))
    sources = [records[i]["source"] for i in order]
    longest = max(len(list(run)) for src, run in itertools.groupby(sources) if src == "big")
    assert longest < 60  # the big package is cut into chunks that other packages come between
    big_paths = [records[i]["path"] for i in order if records[i]["source"] == "big"]
    for k in range(0, 60, 5):  # inside a chunk (5 files of 3 KB = 15 KB <= 16 KB) files stay in path order
        chunk = big_paths[big_paths.index(f"big/m{k:03d}.py"):][:5]
        assert chunk == [f"big/m{k + n:03d}.py" for n in range(5)]
    assert record_order(records, "repo", 7, 0, 0, chunk_kb=10_000) != order  # one chunk per package
    whole = record_order(records, "repo", 7, 0, 0, chunk_kb=10_000)
    first = [records[i]["source"] for i in whole].index("big")
    assert [records[i]["source"] for i in whole[first:first + 60]] == ["big"] * 60

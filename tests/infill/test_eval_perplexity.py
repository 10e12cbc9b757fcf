"""Perplexity: bits per byte against an independent computation, windows, shards, languages."""
import copy
import gzip
import json
import math

import pytest
import torch

from infill import cli
from infill.engines.local import LocalEngine
from infill.evaluate import perplexity
from infill.evaluate.documents import iter_documents

CODE = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"


@pytest.fixture
def engine(tiny_model, tiny_tokenizer):
    return LocalEngine(copy.deepcopy(tiny_model), tiny_tokenizer)


def test_nll_matches_one_full_forward(engine, tiny_tokenizer):
    ids = [tiny_tokenizer.eos_id] + tiny_tokenizer.encode(CODE)
    with torch.no_grad():
        logprobs = torch.log_softmax(engine.model(torch.tensor([ids]))[0].float(), -1)
    ref = -sum(float(logprobs[i, ids[i + 1]]) for i in range(len(ids) - 1))
    logprob, tokens = engine.score_text(CODE)
    assert tokens == len(ids) - 1 and -logprob == pytest.approx(ref, rel=1e-5)


def test_windows_score_every_token_once(engine, tiny_tokenizer):
    text = CODE * 20
    full, n_full = engine.score_text(text)
    windowed, n_windowed = engine.score_text(text, window=64)
    assert n_full == n_windowed == len(tiny_tokenizer.encode(text))
    assert windowed == pytest.approx(full, rel=0.1) and windowed != full


def test_uniform_model_gives_log2_vocab_bits_per_token(engine, tmp_path, tiny_tokenizer):
    with torch.no_grad():
        engine.model.lm_head.weight.zero_()  # every logit 0: a uniform distribution
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.py").write_text(CODE)
    (tmp_path / "data" / "b.c").write_text("int main(void) { return 0; }\n")
    summary = perplexity.evaluate(engine, tmp_path / "data", tmp_path / "out", progress=False)
    vocab = engine.model.config.vocab_size
    assert summary["token_perplexity"] == pytest.approx(vocab, rel=1e-3)
    tokens, n_bytes = summary["tokens"], summary["bytes"]
    assert summary["bits_per_byte"] == pytest.approx(tokens * math.log2(vocab) / n_bytes, rel=1e-4)
    assert set(summary["languages"]) == {"python", "c"}
    assert len((tmp_path / "out" / "documents.jsonl").read_text().splitlines()) == 2


def test_shards_keep_held_out_records_only(tmp_path):
    rows = [{"text": "x = 1\n", "path": "a.py", "language": "python", "split": "train"},
            {"text": "y = 2\n", "path": "b.py", "language": "python", "split": "validation"},
            {"text": "int z;\n", "path": "c.c", "language": "c", "split": "validation"}]
    with gzip.open(tmp_path / "validation-00000.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    assert [d.path for d in iter_documents(tmp_path)] == ["b.py", "c.c"]
    assert [d.path for d in iter_documents(tmp_path, {"python"})] == ["b.py"]


def test_cli_perplexity_and_server_refusal(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "m.py").write_text(CODE)
    code = cli.main(["eval", "perplexity", "--model", str(tiny_checkpoint), "--data", str(tmp_path / "d"),
                     "--out", str(tmp_path / "o"), "--quiet"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["bits_per_byte"] > 0 and summary["documents"] == 1
    code = cli.main(["eval", "perplexity", "--model", "openai:http://127.0.0.1:9#qwen", "--data", str(tmp_path / "d"),
                     "--out", str(tmp_path / "o2"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "needs the model's logits" in err

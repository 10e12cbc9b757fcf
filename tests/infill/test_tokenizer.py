import pytest

from infill.engines.load import DEFAULT_MODEL_DIR
from infill.tokenizer import EOM, EOS, FIM_PREFIX, LLAMA_PRE, TOKENIZER_VERSION, CodeTokenizer, TokenizerError, mask_token

from support import STDLIB, stdlib_texts


def test_round_trips_the_whole_standard_library(tiny_tokenizer):
    files = sorted(f for f in STDLIB.rglob("*.py") if "site-packages" not in f.parts)
    assert len(files) > 500
    texts = [f.read_bytes().decode("utf-8", errors="replace") for f in files]
    bad = [str(f) for f, t, ids in zip(files, texts, tiny_tokenizer.encode_batch(texts))
           if tiny_tokenizer.decode(ids) != t]
    assert bad == []


@pytest.mark.parametrize("text", [
    "", "\n", "\r\n\r\n", "\t\tx = 1\r\n", "é😀 \u00a0\u2028 \x00\x7f", "a" * 5000,
    "def f():\n        return  {'k': [1,2]}  # comment\n\n\n", "<|endoftext|><|mask:0|>",
])
def test_exact_round_trip(tiny_tokenizer, text):
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(text)) == text


def test_no_token_crosses_a_newline(tiny_tokenizer):
    text = "".join(STDLIB.joinpath(name).read_text() for name in ("ast.py", "json/decoder.py"))
    for i in tiny_tokenizer.encode(text):
        piece = tiny_tokenizer.token_bytes[i]
        assert b"\n" not in piece or piece in (b"\n", b"\r\n"), piece


def test_indentation_is_one_token(tiny_tokenizer):
    # version 2 (llama.cpp's deepseek-coder split): the last space of the run goes with the word
    ids = tiny_tokenizer.encode("        return x\n")
    assert [tiny_tokenizer.token_bytes[i] for i in ids[:2]] == [b"       ", b" return"]


def test_old_tokenizers_keep_their_pre_split(tmp_path):
    """A version-1 tokenizer (the first default model's) loads and splits as it was trained to."""
    old = CodeTokenizer.train(stdlib_texts(), 1024, version=1)
    old.save(tmp_path)
    loaded = CodeTokenizer.load(tmp_path)
    assert (old.version, loaded.version) == (1, 1)
    ids = loaded.encode("        return my_var\r\n")
    assert loaded.token_bytes[ids[0]] == b"        "
    assert [p for p, _ in loaded.split("a_b1\r\n")] == ["a_b1", "\r\n"]
    assert CodeTokenizer.load(DEFAULT_MODEL_DIR).version == 2  # the shipped model's is llama.cpp's split


def test_current_version_is_llama_cpps(tiny_tokenizer):
    assert tiny_tokenizer.version == TOKENIZER_VERSION == 2 and LLAMA_PRE[2] == "deepseek-coder"
    assert [p for p, _ in tiny_tokenizer.split("a_b1\r\n")] == ["a", "_", "b", "1", "\r", "\n"]


def test_special_tokens_are_never_read_from_text(tiny_tokenizer):
    ids = tiny_tokenizer.encode(f"{EOS}{mask_token(0)}{EOM}{FIM_PREFIX}")
    assert not set(ids) & tiny_tokenizer.special_ids
    assert tiny_tokenizer.decode([tiny_tokenizer.eos_id]) == EOS
    assert tiny_tokenizer.n_masks == 32
    assert tiny_tokenizer.mask_id(31) == tiny_tokenizer.token_id("<|mask:31|>")
    with pytest.raises(ValueError):
        tiny_tokenizer.mask_id(32)


def test_save_load(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save(tmp_path)
    loaded = CodeTokenizer.load(tmp_path)
    text = STDLIB.joinpath("abc.py").read_text()
    assert loaded.encode(text) == tiny_tokenizer.encode(text)
    assert len(loaded) == len(tiny_tokenizer) == 1024


def test_bad_files(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        CodeTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        CodeTokenizer.load(tmp_path)


def test_vocab_too_small():
    with pytest.raises(ValueError, match="at least"):
        CodeTokenizer.train(["x"], 100)

"""Repository context in the engines' prompts: the budget, each family's format, the session cache."""
import random

import pytest

from infill import cli, formats
from infill.engines import GenerationConfig, InfillRequest, fit_context, load
from infill.engines import templates as fim
from infill.engines.base import prompt_budget
from infill.engines.hf import HFEngine
from infill.engines.local import LocalEngine

from hf_models import build

UTIL = "def frobnicate(widget, scale):\n    return widget * scale\n"
CONTEXT = (("pkg/util.py", UTIL), ("pkg/other.py", "LIMIT = 3\n"))


def words(lines):
    return [len(x.split()) for x in lines]


def test_fit_context_never_exceeds_its_budget():
    rng = random.Random(1)
    for _ in range(300):
        chunks = tuple((f"f{i}.py", " ".join("w" for _ in range(rng.randrange(0, 400))))
                       for i in range(rng.randrange(0, 12)))
        budget, cap = rng.randrange(1, 3000), rng.randrange(0, 2000)
        req = InfillRequest("x", context=chunks, context_tokens=cap)
        kept, used = fit_context(req, budget, words)
        assert used <= min(cap, budget // 2)
        assert used == sum(n + 8 for n in words([f"{p}\n{t}" for p, t in kept]))
        assert [c for c in chunks if c in kept] == kept  # best first, order kept


def test_fit_context_keeps_whole_chunks_best_first():
    req = InfillRequest("x", context=(("a.py", "one two"), ("b.py", "x " * 100), ("c.py", "three")))
    kept, _ = fit_context(InfillRequest("x", context=req.context, context_tokens=30), 1000, words)
    assert [p for p, _ in kept] == ["a.py", "c.py"]  # b.py does not fit, the next one still does
    assert fit_context(InfillRequest("x", context=req.context, context_tokens=0), 1000, words) == ([], 0)


def test_local_prompt_carries_the_context_first(tiny_checkpoint):
    engine = LocalEngine.from_dir(tiny_checkpoint, device="cpu")
    tok = engine.tokenizer
    plain = InfillRequest("x = frobnicate(", "\n", GenerationConfig(max_tokens=8), ext=".py")
    with_context = InfillRequest("x = frobnicate(", "\n", GenerationConfig(max_tokens=8), ext=".py",
                                 context=CONTEXT)
    base, _ = engine.build_prompt(plain)
    prompt, _ = engine.build_prompt(with_context)
    head = formats.context_prompt(tok, list(CONTEXT[::-1]))
    assert prompt == head + base  # the best chunk last, nearest the current file
    assert head[0] == tok.file_meta_id and head.count(tok.eos_id) == 2
    assert UTIL in tok.decode(prompt) and UTIL not in tok.decode(base)
    result = engine.infill(with_context)
    assert result.extra["context_files"] == ["pkg/util.py", "pkg/other.py"]
    assert result.extra["context_tokens"] == len(head) and result.prompt_tokens == len(prompt)


def test_local_context_shares_the_budget(tiny_checkpoint):
    engine = LocalEngine.from_dir(tiny_checkpoint, device="cpu")
    big = tuple((f"m{i}.py", "value = compute(value)\n" * 2) for i in range(200))
    req = InfillRequest("y = 1\n" * 2000, "", GenerationConfig(max_tokens=16), context=big, context_tokens=100_000)
    prompt, _ = engine.build_prompt(req)
    budget = prompt_budget(engine.model.config.max_seq_len, req)
    result = engine.infill(req)
    assert 0 < result.extra["context_tokens"] <= budget // 2
    assert len(prompt) + 16 <= engine.model.config.max_seq_len


def test_session_cache_reuses_the_prefix_with_context(tiny_checkpoint):
    engine = LocalEngine.from_dir(tiny_checkpoint, device="cpu")
    prefix = "def run(widget):\n    return frobnicate("
    config = GenerationConfig(max_tokens=6)
    first = engine.infill(InfillRequest(prefix, "\n", config, session="doc", ext=".py", context=CONTEXT))
    assert first.cached_tokens == 0 and first.extra["context_tokens"] > 0
    for typed in ("w", "wi", "wid"):
        got = engine.infill(InfillRequest(prefix + typed, "\n", config, session="doc", ext=".py", context=CONTEXT))
        assert got.cached_tokens >= got.prompt_tokens - 3
        assert got.cached_tokens > got.extra["context_tokens"]


@pytest.mark.parametrize("family, marks", [
    ("qwen", ["<|file_sep|>pkg/other.py\nLIMIT = 3\n<|file_sep|>pkg/util.py\ndef frobnicate",
              "<|file_sep|>pkg/main.py\n<|fim_prefix|>"]),
    ("starcoder", ["<file_sep>pkg/other.py\nLIMIT = 3\n<file_sep>pkg/util.py\ndef frobnicate",
                   "<file_sep>pkg/main.py\n<fim_prefix>"]),
    ("deepseek", ["# pkg/other.py\nLIMIT = 3\n# pkg/util.py\ndef frobnicate", "# pkg/main.py\n<｜fim▁begin｜>"]),
])
def test_hf_families_render_their_repository_format(tmp_path, family, marks):
    engine = HFEngine.from_pretrained(str(build(tmp_path / family, family)), device="cpu")
    assert engine.repo_ok
    req = InfillRequest("x = frobnicate(", "\n", GenerationConfig(max_tokens=4), context=CONTEXT,
                        path="pkg/main.py")
    text = engine.tokenizer.decode(engine.build_prompt(req), skip_special_tokens=False)
    for mark in marks:
        assert mark in text
    result = engine.infill(req)
    assert result.extra["context_files"] == ["pkg/util.py", "pkg/other.py"] and result.extra["context_tokens"] > 0
    # a keystroke later the cache still holds everything before the cursor
    engine.infill(InfillRequest("x = frobnicate(", "\n", GenerationConfig(max_tokens=4), context=CONTEXT,
                                path="pkg/main.py", session="s"))
    again = engine.infill(InfillRequest("x = frobnicate(w", "\n", GenerationConfig(max_tokens=4), context=CONTEXT,
                                        path="pkg/main.py", session="s"))
    assert again.cached_tokens > again.extra["context_tokens"]  # PSM: up to the end of the old prefix


def test_qwen_repo_name_and_missing_tokens(tmp_path):
    t = fim.get("qwen")
    pieces = t.context_pieces([("a.py", "A = 1")], "b.py", "proj")
    assert "".join(p for p, _ in pieces) == "<|repo_name|>proj\n<|file_sep|>a.py\nA = 1\n<|file_sep|>b.py\n"
    engine = HFEngine.from_pretrained(str(build(tmp_path / "sc", "santacoder")), device="cpu")
    assert engine.template.repo == "comment" and engine.repo_ok  # comments need no tokens
    assert "# a.py\nA = 1\n" in engine.template.render("x", "", context=[("a.py", "A = 1")])


def test_infill_export_agrees_with_local_on_context(tmp_path, tiny_checkpoint, capsys):
    assert cli.main(["export", "--hf", str(tmp_path / "hf"), "--model", str(tiny_checkpoint)]) == 0
    hf = load.load_engine(str(tmp_path / "hf"), device="cpu")
    local = load.load_engine(str(tiny_checkpoint), device="cpu")
    req = InfillRequest("x = frobnicate(", "\n", GenerationConfig(max_tokens=6), ext=".py", context=CONTEXT)
    assert hf.repo_ok and hf.build_prompt(req) == local.build_prompt(req)[0]
    assert hf.infill(req).text == local.infill(req).text


def test_openai_prompt_renders_context():
    from infill.engines.openai import OpenAIEngine

    engine = OpenAIEngine("http://127.0.0.1:9/v1")
    prompt = engine.build_prompt(InfillRequest("x = ", "\n", ext=".py", context=CONTEXT))
    assert prompt.startswith("<|file|> ext=.py\nLIMIT = 3\n<|endoftext|><|file|> ext=.py\n" + UTIL)
    small = engine.build_prompt(InfillRequest("x = ", "\n", ext=".py", context=CONTEXT, context_tokens=20))
    assert "frobnicate" not in small and "LIMIT" in small


def test_openai_request_carries_the_context_and_reports_it():
    from openai_stub import Stub

    with Stub(reply="x") as stub:
        engine = load.load_engine(f"openai:{stub.url}#qwen")
        result = engine.infill(InfillRequest("y = frobnicate(", "\n", GenerationConfig(max_tokens=4), context=CONTEXT,
                                             path="pkg/main.py", repo="proj"))
        [body] = stub.completions()
        assert body["prompt"] == ("<|repo_name|>proj\n<|file_sep|>pkg/other.py\nLIMIT = 3\n<|file_sep|>pkg/util.py\n"
                                  + UTIL + "<|file_sep|>pkg/main.py\n<|fim_prefix|>y = frobnicate(<|fim_suffix|>\n"
                                  "<|fim_middle|>")
        assert result.extra["context_files"] == ["pkg/util.py", "pkg/other.py"] and result.extra["context_tokens"] > 0

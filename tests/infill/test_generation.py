import pytest
import torch

from infill.engines import InfillRequest
from infill.engines.local import LocalEngine
from infill.generation import GenerationConfig, generate, sample, score
from infill.model import KVCache

from support import STDLIB

SOURCE = STDLIB.joinpath("textwrap.py").read_text()


def _prompt(tok, n=60):
    return tok.encode(SOURCE)[:n]


def _greedy_no_cache(model, prompt, steps):
    """Independent reference: a full forward over the whole sequence at every step."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def test_greedy_with_cache_equals_without(tiny_model, tiny_tokenizer):
    prompt = _prompt(tiny_tokenizer)
    out = generate(tiny_model, prompt, GenerationConfig(max_tokens=12))
    assert out[0].tokens == _greedy_no_cache(tiny_model, prompt, 12)
    assert out[0].finish_reason == "length"


def test_logprobs_match_score(tiny_model, tiny_tokenizer):
    prompt = _prompt(tiny_tokenizer)
    out = generate(tiny_model, prompt, GenerationConfig(max_tokens=6, temperature=1.0, n=3, seed=0))
    assert len(out) == 3
    scored = score(tiny_model, prompt, [c.tokens for c in out])
    for c, s in zip(out, scored):
        assert c.logprob == pytest.approx(s, abs=1e-3)


def test_seeded_sampling_is_reproducible(tiny_model, tiny_tokenizer):
    prompt = _prompt(tiny_tokenizer)
    cfg = GenerationConfig(max_tokens=8, temperature=1.0, top_p=0.9, seed=123, n=2)
    assert [c.tokens for c in generate(tiny_model, prompt, cfg)] == [c.tokens for c in generate(tiny_model, prompt, cfg)]


def test_sample_filters():
    logits = torch.tensor([[0.0, 5.0, 4.9, -2.0]])
    greedy = GenerationConfig(temperature=0)
    assert sample(logits, greedy)[0].item() == 1
    g = torch.Generator().manual_seed(0)
    picks = {sample(logits, GenerationConfig(temperature=5.0, top_k=2), g)[0].item() for _ in range(50)}
    assert picks == {1, 2}
    picks = {sample(logits, GenerationConfig(temperature=1.0, top_p=0.5), g)[0].item() for _ in range(50)}
    assert picks == {1}  # the top token alone already reaches p
    allowed = torch.tensor([True, False, False, True])
    assert sample(logits, greedy, allowed=allowed)[0].item() == 0
    with pytest.raises(ValueError):
        GenerationConfig(top_p=0)


def test_stop_ids_and_rule(tiny_model, tiny_tokenizer):
    prompt = _prompt(tiny_tokenizer)
    ref = generate(tiny_model, prompt, GenerationConfig(max_tokens=10))[0].tokens
    stopped = generate(tiny_model, prompt, GenerationConfig(max_tokens=10, stop_ids=frozenset({ref[3]})))[0]
    assert stopped.tokens == ref[:ref.index(ref[3])] and stopped.finish_reason == "stop"
    ruled = generate(tiny_model, prompt, GenerationConfig(max_tokens=10), stop_rule=lambda t: len(t) == 2)[0]
    assert ruled.tokens == ref[:2] and ruled.finish_reason == "stop_rule"


def test_time_budget(tiny_model, tiny_tokenizer):
    out = generate(tiny_model, _prompt(tiny_tokenizer), GenerationConfig(max_tokens=200, time_budget_s=0.0))[0]
    assert out.finish_reason == "time" and len(out.tokens) == 1


@pytest.fixture
def engine(tiny_model, tiny_tokenizer):
    return LocalEngine(tiny_model, tiny_tokenizer)


def test_session_cache_reuses_prefix_and_changes_nothing(engine):
    prefix, suffix = SOURCE[:3000], SOURCE[3000:4000]
    plain = [engine.infill(InfillRequest(prefix + extra, suffix,
                                         GenerationConfig(max_tokens=8))) for extra in ("", "d", "de")]
    first = engine.infill(InfillRequest(prefix, suffix, GenerationConfig(max_tokens=8), session="doc"))
    assert first.cached_tokens == 0
    for extra, expected in zip(("", "d", "de"), plain):
        got = engine.infill(InfillRequest(prefix + extra, suffix, GenerationConfig(max_tokens=8), session="doc"))
        assert got.text == expected.text
        assert got.cached_tokens >= got.prompt_tokens - 3


def test_session_memory_is_bounded(tiny_model, tiny_tokenizer):
    engine = LocalEngine(tiny_model, tiny_tokenizer, cache_mb=0.2)
    for i in range(6):
        engine.infill(InfillRequest(SOURCE[:2000], "", GenerationConfig(max_tokens=4), session=f"doc{i}"))
    assert 1 <= len(engine.sessions) < 6
    assert sum(s.cache.nbytes() for s in engine.sessions.values()) <= 0.2 * 2**20 or len(engine.sessions) == 1
    assert "doc5" in engine.sessions  # the most recent survives


def test_healing_gives_a_trailing_space_to_the_next_word(engine, tiny_tokenizer):
    """On a blank indented line (and after `x = `) the space before the next word is healed alone: in
    training `"        x"` is 7 spaces + `" x"`, so a heal on all 8 spaces could only indent further."""
    for prefix, kept in (("def f(a):\n    if a:\n        ", "        "[:-1]), ("def f(a):\n    x = ", " =")):
        whole = tiny_tokenizer.encode(prefix)
        assert len(tiny_tokenizer.token_bytes[whole[-1]]) > 1 and tiny_tokenizer.token_bytes[whole[-1]].endswith(b" ")
        prompt, heal = engine.build_prompt(InfillRequest(prefix, "\n"))
        assert heal == b" "
        assert tiny_tokenizer.decode(prompt).endswith(prefix[:-1]) and tiny_tokenizer.decode(prompt).endswith(kept)
        mask = engine._heal_mask(heal)
        assert any(tiny_tokenizer.token_bytes[i] == b" x" for i in mask.nonzero().flatten().tolist())


def test_token_healing(engine, tiny_tokenizer):
    prefix = "def wrap(text, width=70, **kwargs):\n    w = TextWrapper(width=width, **kwargs)\n    return w.wr"
    prompt, heal = engine.build_prompt(InfillRequest(prefix, "\n"))
    assert heal and prefix.encode().endswith(heal)
    assert tiny_tokenizer.decode(prompt).endswith(prefix[:-len(heal)])
    result = engine.infill(InfillRequest(prefix, "\n", GenerationConfig(max_tokens=5)))
    unhealed = engine.infill(InfillRequest(prefix, "\n", GenerationConfig(max_tokens=5), heal=False))
    assert result.candidates[0].tokens == 5 and unhealed.text != result.text or True
    # the first generated token was forced to start with the healed bytes, which the text then omits
    mask = engine._heal_mask(heal)
    assert mask.any() and all(tiny_tokenizer.token_bytes[i].startswith(heal) for i in mask.nonzero().flatten().tolist())


def test_stop_strings_and_n_candidates(engine):
    base = engine.infill(InfillRequest(SOURCE[:500], SOURCE[500:900], GenerationConfig(max_tokens=12)))
    assert base.text
    cut = base.text[len(base.text) // 2:][:2]
    if cut:
        stopped = engine.infill(InfillRequest(SOURCE[:500], SOURCE[500:900], GenerationConfig(max_tokens=12),
                                              stop=(cut,)))
        assert cut not in stopped.text and base.text.startswith(stopped.text)
    many = engine.infill(InfillRequest(SOURCE[:500], SOURCE[500:900],
                                       GenerationConfig(max_tokens=6, n=4, temperature=1.0, seed=1), session="s"))
    logprobs = [c.logprob for c in many.candidates]
    assert logprobs == sorted(logprobs, reverse=True) and len({c.text for c in many.candidates}) == len(logprobs)


def test_prompt_budget_trims_at_lines(engine):
    long_prefix = SOURCE * 3
    prompt, _ = engine.build_prompt(InfillRequest(long_prefix, SOURCE, GenerationConfig(max_tokens=64)))
    assert len(prompt) <= engine.model.config.max_seq_len - 64
    with pytest.raises(ValueError, match="leaves no room"):
        engine.build_prompt(InfillRequest("x", "", GenerationConfig(max_tokens=10_000)))


def test_lookup_draft():
    from infill.generation import lookup_draft

    history = [1, 2, 3, 4, 5, 9, 2, 3, 4]
    assert lookup_draft(history, 2) == [5, 9]
    assert lookup_draft([7, 8, 1, 2, 5, 6, 1, 2], 3) == [5, 6, 1]  # falls back to a 2-gram
    assert lookup_draft([1, 2, 3], 4) == [] and lookup_draft(history, 0) == []


@pytest.mark.parametrize("start", [0, 500, 1500])
def test_speculative_greedy_equals_plain_greedy(tiny_model, tiny_tokenizer, start):
    """Prompt lookup only ever accepts the model's own greedy choice: same tokens, same stop."""
    prompt = tiny_tokenizer.encode(SOURCE[start:start + 1500])[:200]
    for max_tokens in (1, 7, 40):
        plain = generate(tiny_model, prompt, GenerationConfig(max_tokens=max_tokens, lookahead=0))[0]
        fast = generate(tiny_model, prompt, GenerationConfig(max_tokens=max_tokens, lookahead=8))[0]
        assert fast.tokens == plain.tokens and fast.finish_reason == plain.finish_reason
        assert fast.logprob == pytest.approx(plain.logprob, abs=1e-3)
    stop = frozenset({plain.tokens[20]})
    plain = generate(tiny_model, prompt, GenerationConfig(max_tokens=40, lookahead=0, stop_ids=stop))[0]
    fast = generate(tiny_model, prompt, GenerationConfig(max_tokens=40, lookahead=8, stop_ids=stop))[0]
    assert fast.tokens == plain.tokens and fast.finish_reason == plain.finish_reason == "stop"


def test_speculation_accepts_drafts(tiny_model):
    """A random model loops; prompt lookup must then verify several tokens per forward pass."""
    calls = []
    original = tiny_model.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    prompt = [5, 6, 7, 8] * 10
    tiny_model.forward = counting
    try:
        out = generate(tiny_model, prompt, GenerationConfig(max_tokens=60))[0]
    finally:
        del tiny_model.forward
    assert len(out.tokens) == 60 and len(calls) < 40


def test_an_engine_is_freed_once_dropped(tiny_model, tiny_tokenizer):
    """The heal masks live on the engine (an lru_cache on the method kept every engine, model included)."""
    import copy
    import gc
    import weakref

    engine = LocalEngine(copy.deepcopy(tiny_model), tiny_tokenizer)
    prompt, heal = engine.build_prompt(InfillRequest("def add(a, b):\n    return a", "\n"))
    assert heal  # the cursor token was backed off: a mask was built
    engine.infill(InfillRequest("def add(a, b):\n    return a", "\n", GenerationConfig(max_tokens=2)))
    assert heal in engine._heal_masks
    ref = weakref.ref(engine)
    del engine
    gc.collect()
    assert ref() is None


def _boost(token: int, every: int = 3):
    """A hook that moves most of the mass to `token` after each `every`-th generated token (a stand-in
    for a cache model), else returns the model's own distribution."""
    def next_dist(ids: list[int], logprobs: torch.Tensor) -> torch.Tensor:
        assert logprobs.shape == (logprobs.shape[0],) and logprobs.dtype == torch.float32
        if ids and len(ids) % every == 0:
            return torch.log(0.2 * logprobs.exp() + 0.8 * torch.nn.functional.one_hot(
                torch.tensor(token), logprobs.shape[0]).float())
        return logprobs
    return next_dist


@torch.no_grad()
def _greedy_mixed_ref(model, prompt, steps, next_dist, allowed=None):
    """Independent reference for the hook: a full forward per step, the hook, the mask, argmax."""
    seq, logprob = list(prompt), 0.0
    for i in range(steps):
        lp = next_dist(seq[len(prompt):], torch.log_softmax(model(torch.tensor([seq]))[0, -1].float(), -1))
        if i == 0 and allowed is not None:
            lp = torch.log_softmax(lp.masked_fill(~allowed, float("-inf")), -1)
        seq.append(int(lp.argmax()))
        logprob += float(lp[seq[-1]])
    return seq[len(prompt):], logprob


def test_next_dist_hook_is_what_greedy_picks_from(tiny_model, tiny_tokenizer):
    prompt = _prompt(tiny_tokenizer)
    hook = _boost(17)
    plain = generate(tiny_model, prompt, GenerationConfig(max_tokens=12, lookahead=0))[0]
    mixed = generate(tiny_model, prompt, GenerationConfig(max_tokens=12, lookahead=0), next_dist=hook)[0]
    want, logprob = _greedy_mixed_ref(tiny_model, prompt, 12, hook)
    assert mixed.tokens == want != plain.tokens and mixed.tokens[3] == 17
    assert mixed.logprob == pytest.approx(logprob, abs=1e-3)  # the mixed distribution's, not the model's
    # the healing mask applies after the hook: a boosted token outside it is never first
    allowed = torch.zeros(tiny_model.config.vocab_size, dtype=torch.bool)
    allowed[[40, 41, 42]] = True
    first = generate(tiny_model, prompt, GenerationConfig(max_tokens=4, lookahead=0), first_allowed=allowed,
                     next_dist=lambda ids, lp: _boost(17, every=1)(ids + [0], lp))[0]
    assert first.tokens[0] in (40, 41, 42) and first.tokens[1:] == [17, 17, 17]
    want, logprob = _greedy_mixed_ref(tiny_model, prompt, 4, lambda ids, lp: _boost(17, every=1)(ids + [0], lp),
                                      allowed)
    assert first.tokens == want and first.logprob == pytest.approx(logprob, abs=1e-3)


@pytest.mark.parametrize("prompt", [[5, 6, 7, 8] * 10, None])
def test_drafts_verify_against_the_hooks_distribution(tiny_model, tiny_tokenizer, prompt):
    """With a hook that changes greedy choices, prompt-lookup drafts still give exactly the output of
    plain greedy decoding (both through the hook), and drafts are still accepted."""
    prompt = prompt or tiny_tokenizer.encode(SOURCE[:1500])[:200]
    calls = []
    original = tiny_model.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    for hook in (_boost(6, every=4), _boost(23, every=5)):
        plain = generate(tiny_model, prompt, GenerationConfig(max_tokens=60, lookahead=0), next_dist=hook)[0]
        tiny_model.forward = counting
        calls.clear()
        try:
            fast = generate(tiny_model, prompt, GenerationConfig(max_tokens=60, lookahead=8), next_dist=hook)[0]
        finally:
            del tiny_model.forward
        assert fast.tokens == plain.tokens and fast.finish_reason == plain.finish_reason
        assert fast.logprob == pytest.approx(plain.logprob, abs=1e-3)
        assert plain.tokens != generate(tiny_model, prompt, GenerationConfig(max_tokens=60, lookahead=0))[0].tokens
        assert len(calls) < 60  # drafts were accepted: fewer forward passes than tokens


def test_a_plain_callable_is_a_forward_and_n_rows_need_expand(tiny_model, tiny_tokenizer):
    from infill.generation import model_forward, stream

    prompt = _prompt(tiny_tokenizer)
    seam = model_forward(tiny_model, max_len=100)
    out: list = []
    for _ in stream(lambda ids, pos: seam(ids, pos), prompt, GenerationConfig(max_tokens=5), result=out):
        pass
    assert out[0].tokens == generate(tiny_model, prompt, GenerationConfig(max_tokens=5))[0].tokens
    with pytest.raises(ValueError, match="expand"):
        list(stream(lambda ids, pos: seam(ids, pos), prompt, GenerationConfig(max_tokens=5, n=2)))
    with pytest.raises(ValueError, match="one-row"):
        model_forward(tiny_model, KVCache(tiny_model.config, 2, 100))

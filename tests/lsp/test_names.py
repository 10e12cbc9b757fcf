"""Name suggestions on the tiny model: valid, new, ranked by the InCoder likelihood, and renames that
edit only the variable's occurrences."""
import math

from infill import formats
from infill.generation import score
from lsp import scopes
from infill.engines import GenerationConfig, InfillRequest
from lsp.names import MAX_TOKENS, SAMPLES, _pieces, _stop_at, is_valid_name, rank, suggest, unavailable

SRC = '''\
def total(values):
    acc = 0
    for v in values:
        acc += v
    return acc


def other(acc):
    return acc.real
'''


def test_suggestions_are_valid_new_names_ranked_by_likelihood(tiny_engine):
    offset = SRC.index("acc")
    got = suggest(SRC, offset, tiny_engine, k=3)
    assert len(got) <= 3
    assert [s.logprob for s in got] == sorted((s.logprob for s in got), reverse=True)
    taken = scopes.names_in(SRC)
    for s in got:
        assert is_valid_name(s.name) and s.name not in taken and math.isfinite(s.logprob)


def test_rank_scores_every_masked_occurrence(tiny_engine):
    symbol = scopes.symbol_at(SRC, SRC.index("acc"))
    assert len(symbol.spans) == 3  # not the `acc` of other()
    pieces = _pieces(SRC, symbol)
    got = rank(tiny_engine, pieces, ["total_sum", "x"])
    tok = tiny_engine.tokenizer
    # the reference: the full InCoder sequence with the name in all three spans, scored from <M0> on
    kept = formats.encode_incoder(tok, pieces, ["total_sum"] * 3, ext=".py").ids
    prompt = formats.encode_incoder(tok, pieces, [None] * 3, ext=".py").ids
    assert kept[:len(prompt)] == prompt
    want = score(tiny_engine.model, prompt, [kept[len(prompt):]])[0]
    assert math.isclose(got["total_sum"], want, rel_tol=1e-4)
    assert got["x"] != got["total_sum"]


def test_too_many_occurrences_fall_back_to_one_hole_then_to_sampled_logprobs(tiny_engine):
    text = "def f(n):\n" + "    n = n + 1\n" * 40 + "    return n\n"
    symbol = scopes.symbol_at(text, text.index("n"))
    pieces = _pieces(text, symbol)
    assert len(pieces) - 1 > tiny_engine.max_holes
    one_hole = tiny_engine.score(pieces[0], "_".join(pieces[1:]), "count", ext=".py", end=False)
    assert rank(tiny_engine, pieces, ["count"]) == {"count": one_hole}
    assert all(is_valid_name(s.name) for s in suggest(text, text.index("n"), tiny_engine))
    sampler = Limited(tiny_engine, {"infill", "sampled_logprobs"})
    assert rank(sampler, pieces, ["count"]) is None and unavailable(sampler) is None
    got = suggest(SRC, SRC.index("acc"), sampler, k=8)
    result = tiny_engine.infill(sampled_request(SRC, scopes.symbol_at(SRC, SRC.index("acc"))))
    by_sample: dict[str, float] = {}
    for c in result.candidates:
        by_sample[c.text.strip()] = max(by_sample.get(c.text.strip(), float("-inf")), c.logprob)
    assert got and all(math.isclose(s.logprob, by_sample[s.name]) for s in got)
    assert "no echo" in unavailable(Limited(tiny_engine, {"infill"}))


class Limited:
    """An engine that offers only some of another's capabilities (a server without echo or logprobs)."""

    def __init__(self, engine, capabilities):
        self.engine, self.capabilities = engine, frozenset(capabilities)
        self.unavailable = {"score": "no echo"}
        self.max_holes = 0

    def stream_infill(self, req):
        return self.engine.stream_infill(req)

    def infill(self, req):
        return self.engine.infill(req)


def sampled_request(text, symbol):
    """The request `suggest_steps` samples names with (seed 0)."""
    pieces = _pieces(text, symbol)
    config = GenerationConfig(max_tokens=MAX_TOKENS, temperature=0.8, seed=0, n=SAMPLES)
    return InfillRequest(pieces[0], "_".join(pieces[1:]), config, stop_at=_stop_at, ext=".py")


def test_no_suggestions_off_a_variable(tiny_engine):
    assert suggest(SRC, SRC.index("real"), tiny_engine) == []

"""Name suggestions on the tiny model: valid, new, ranked by the InCoder likelihood, and renames that
edit only the variable's occurrences."""
import math

from infill import formats
from infill.generation import score
from lsp import scopes
from lsp.names import _pieces, is_valid_name, rank, suggest

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


def test_too_many_occurrences_fall_back_to_sampled_logprobs(tiny_engine):
    text = "def f(n):\n" + "    n = n + 1\n" * 40 + "    return n\n"
    symbol = scopes.symbol_at(text, text.index("n"))
    assert rank(tiny_engine, _pieces(text, symbol), ["count"]) is None
    assert all(is_valid_name(s.name) for s in suggest(text, text.index("n"), tiny_engine))


def test_no_suggestions_off_a_variable(tiny_engine):
    assert suggest(SRC, SRC.index("real"), tiny_engine) == []

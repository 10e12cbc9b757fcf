"""The default model, exported with `infill export --hf` and served by the HF engine, gives the local
engine's completion, name suggestions and type hints (same weights; greedy, and the same seeds where
names are sampled)."""
import math

import pytest

from infill import cli
from infill.engines import load_engine
from infill.engines.hf import HFEngine
from infill.engines.load import DEFAULT_MODEL_DIR
from infill.engines.local import LocalEngine
from lsp import names, scopes
from lsp.completion import complete
from lsp.options import ServerOptions
from lsp.types import infer, probability, slot_prompt, type_slots

SOURCE = '''\
def moving_average(values, window=3):
    out = []
    for i in range(len(values) - window + 1):
        chunk = values[i:i + window]
        out.append(sum(chunk) / window)
    return out


def greet(name):
    return "Hello, " + name
'''


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("this install has no default model")
    out = tmp_path_factory.mktemp("default") / "hf"
    assert cli.main(["export", "--hf", str(out), "--model", str(DEFAULT_MODEL_DIR)]) == 0
    local, hf = load_engine(str(DEFAULT_MODEL_DIR), device="cpu"), load_engine(str(out), device="cpu")
    assert isinstance(local, LocalEngine) and isinstance(hf, HFEngine)
    return local, hf


def test_same_completions(engines):
    local, hf = engines
    options = ServerOptions(max_tokens=24, time_budget_ms=60_000)  # no wall-clock cut on a busy machine
    for at in (SOURCE.index("range(") + 6, SOURCE.index('"Hello, "') + 10):
        want, _ = complete(SOURCE, at, local, options, language="python", ext=".py")
        got, _ = complete(SOURCE, at, hf, options, language="python", ext=".py")
        assert got == want


def test_same_type_hints(engines):
    local, hf = engines
    slots = type_slots(SOURCE)
    assert len(slots) == 5
    for slot in (slots[0], slots[-1]):  # a parameter and a return
        want, got = infer(SOURCE, slot, local), infer(SOURCE, slot, hf)
        assert (got is None) == (want is None)  # this small model writes no parseable type here (0% on types)
        if want is not None:
            assert got.annotation == want.annotation
            assert math.isclose(got.probability, want.probability, rel_tol=1e-3, abs_tol=1e-6)
        # the probability a hint shows, for the types an editor would see
        prefix, suffix = slot_prompt(SOURCE, slot)
        for annotation in ("int", "list[float]"):
            assert math.isclose(probability(hf, prefix, suffix, annotation),
                                probability(local, prefix, suffix, annotation), rel_tol=1e-3)


def test_same_name_suggestions(engines):
    local, hf = engines
    for name in ("chunk",):
        at = SOURCE.index(name)
        want, got = names.suggest(SOURCE, at, local, k=3), names.suggest(SOURCE, at, hf, k=3)
        assert [s.name for s in got] == [s.name for s in want]
        assert all(math.isclose(g.logprob, w.logprob, rel_tol=1e-3) for g, w in zip(got, want))
    assert scopes.symbol_at(SOURCE, SOURCE.index("chunk")) is not None

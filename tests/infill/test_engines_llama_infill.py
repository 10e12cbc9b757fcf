"""LlamaInfillEngine (`openai:URL#llama-infill`): llama.cpp's native /infill (llama.vim's protocol) against a loopback stub."""
import pytest

from infill.engines import CannotScore, GenerationConfig, InfillRequest, load, run_to_end
from infill.engines import templates as fim
from infill.engines.llama_infill import LlamaInfillEngine
from infill.engines.openai import EngineError, OpenAIEngine
from openai_stub import Stub


def test_request_fields_and_streamed_answer():
    with Stub(reply="    return a + b\n\nprint(1)", chunk=2) as stub:
        engine = load.load_engine(f"openai:{stub.url}#llama-infill")
        assert isinstance(engine, LlamaInfillEngine) and engine.template.native == "/infill"
        result = engine.infill(InfillRequest("def add(a, b):\n<|fim_middle|>", "\nx = add(1, 2)\n",
                                             GenerationConfig(max_tokens=32, temperature=0.0, top_k=5, seed=3,
                                                              time_budget_s=2.0),
                                             stop=("\n\n",)))
        assert result.text == "    return a + b"
        [body] = stub.infills()
        assert not stub.completions()  # the OpenAI endpoint is not used
        # the text goes to the server as it is: llama.cpp reads no special tokens from input_prefix
        assert body["input_prefix"] == "def add(a, b):\n<|fim_middle|>"
        assert body["input_suffix"] == "\nx = add(1, 2)\n"
        assert body["input_extra"] == [] and body["prompt"] == ""
        assert body["n_predict"] == 32 and body["top_k"] == 5 and body["seed"] == 3 and body["temperature"] == 0.0
        assert body["stream"] is True and body["stop"] == ["\n\n"] and body["t_max_predict_ms"] == 2000
        assert body["cache_prompt"] is False
        assert result.prompt_tokens == len(body["input_prefix"]) + len(body["input_suffix"]) + 3


def test_session_asks_for_the_prompt_cache():
    with Stub(reply="x = 1") as stub:
        engine = LlamaInfillEngine(stub.url)
        req = InfillRequest("a" * 40, "b", GenerationConfig(max_tokens=8), session="file:///a.py")
        first, second = engine.infill(req), engine.infill(req)
        assert [b["cache_prompt"] for b in stub.infills()] == [True, True]
        assert first.cached_tokens == 0 and second.cached_tokens == second.prompt_tokens - 1 > 0


def test_limit_and_length():
    with Stub(reply="abcdefgh", chunk=1) as stub:
        result = LlamaInfillEngine(stub.url).infill(InfillRequest("p", config=GenerationConfig(max_tokens=3)))
        assert result.text == "abc" and result.candidates[0].finish_reason == "length"
        assert result.candidates[0].tokens == 3


def test_closing_the_stream_cancels_and_stop_rule():
    with Stub(reply="a" * 400, chunk=1, delay=0.01) as stub:
        engine = LlamaInfillEngine(stub.url)
        result = engine.infill(InfillRequest("p", config=GenerationConfig(max_tokens=400),
                                             stop_at=lambda t: 4 if len(t) >= 4 else None))
        assert result.text == "aaaa" and result.candidates[0].finish_reason == "stop_rule"
        gen = engine.stream_infill(InfillRequest("p", config=GenerationConfig(max_tokens=400)))
        next(gen)
        gen.close()
        assert stub.disconnected.wait(10)


def test_n_candidates_are_n_requests():
    with Stub(reply="xy") as stub:
        result = LlamaInfillEngine(stub.url).infill(
            InfillRequest("p", config=GenerationConfig(n=3, temperature=1.0, seed=10)))
        assert [c.text for c in result.candidates] == ["xy"]
        assert [b["seed"] for b in stub.infills()] == [10, 11, 12]


def test_cannot_score_and_says_why():
    with Stub() as stub:
        engine = LlamaInfillEngine(stub.url)
        assert engine.capabilities == frozenset({"infill"})
        assert "/infill" in engine.unavailable["score"]
        with pytest.raises(CannotScore, match="/infill"):
            engine.score("a", "b", "c")
        assert stub.infills() == [] and stub.completions() == []  # nothing asked of the server


def test_errors_are_one_line():
    with Stub(status=503) as stub:
        engine = LlamaInfillEngine(stub.url)
        with pytest.raises(EngineError, match="HTTP 503: model not loaded"):
            engine.infill(InfillRequest("p"))
    with pytest.raises(ValueError, match="built by the server"):
        fim.get("llama-infill").render("p", "s")
    with pytest.raises(ValueError, match="openai:URL#llama-infill"):  # the completions engine cannot speak it
        OpenAIEngine("http://127.0.0.1:9", template="llama-infill")
    with pytest.raises(ValueError, match="takes llama-infill"):
        LlamaInfillEngine("http://127.0.0.1:9", template="qwen")


def test_stream_is_a_generator_to_the_end():
    with Stub(reply="abc", chunk=1) as stub:
        gen = LlamaInfillEngine(stub.url).stream_infill(InfillRequest("p"))
        assert run_to_end(gen).text == "abc"


def test_an_echo_that_disagrees_with_generation_gives_no_score():
    """A server whose echoed logprobs are not those it generates with (llama-cpp-python 0.3.36's are
    one position late) must not score; it can still rank sampled candidates."""
    with Stub(reply="x") as stub:
        stub.echoed = lambda prompt: ([None] + [-1.0] * (len(prompt) - 1), list(range(len(prompt))))
        engine = OpenAIEngine(stub.url, template="qwen")
        assert engine.capabilities == frozenset({"infill", "sampled_logprobs"})
        assert "disagree" in engine.unavailable["score"] and "-1.000 vs -0.500" in engine.unavailable["score"]
        with pytest.raises(CannotScore, match="disagree"):
            engine.score("a", "b", "c")


def test_repository_context_goes_in_as_input_extra():
    """Context chunks are llama.vim's `input_extra` entries, within `context_tokens`, and reported."""
    chunks = (("pkg/util.py", "def helper(x):\n    return x\n"), ("pkg/big.py", "y = 1\n" * 400))
    with Stub(reply="helper(1)") as stub:
        engine = LlamaInfillEngine(stub.url)
        result = engine.infill(InfillRequest("z = ", "\n", GenerationConfig(max_tokens=8),
                                             context=chunks, context_tokens=40))
        [body] = stub.infills()
        # the big chunk (~800 tokens at three characters a token) does not fit 40 tokens; the small one does
        assert body["input_extra"] == [{"filename": "pkg/util.py", "text": "def helper(x):\n    return x\n"}]
        assert result.extra["context_files"] == ["pkg/util.py"] and result.extra["context_tokens"] > 0

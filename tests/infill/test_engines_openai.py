"""OpenAIEngine against a loopback stub server (127.0.0.1 only, bounded, stops itself)."""
import math
import threading
import time

import pytest

from infill.engines import Engine, GenerationConfig, InfillRequest, load
from infill.engines import CannotScore
from infill.engines.openai import EngineError, Interrupted, OpenAIEngine
from openai_stub import Stub


def test_request_prompt_stops_and_result():
    with Stub() as stub:
        engine = load.load_engine(f"openai:{stub.url}#starcoder")
        assert isinstance(engine, OpenAIEngine) and isinstance(engine, Engine)
        result = engine.infill(InfillRequest("def add(a, b):\n<fim_middle>", "\n",
                                             GenerationConfig(max_tokens=16, temperature=0.2, top_p=0.9, seed=7),
                                             stop=("\n\n",)))
        assert result.text == "    return a + b"
        assert stub.requests[0][:2] == ("GET", "/v1/models")
        [body] = stub.completions()
        assert {p for _, p, _ in stub.requests[1:]} == {"/v1/completions"}
        assert body["prompt"] == "<fim_prefix>def add(a, b):\n<fim_suffix>\n<fim_middle>"  # user's sentinel removed
        assert body["model"] == "stub-model" and body["stream"] is True and body["seed"] == 7
        assert body["max_tokens"] == 16 and body["top_p"] == 0.9 and body["temperature"] == 0.2
        assert "\n\n" in body["stop"] and "<|endoftext|>" in body["stop"]


def test_base_url_with_v1_and_default_template():
    with Stub(reply="x") as stub:
        engine = OpenAIEngine(stub.url + "/v1/")
        assert engine.template.name == "infill-spm"
        engine.infill(InfillRequest(prefix="p", suffix="s"))
        assert stub.requests[-1][1] == "/v1/completions"
        assert stub.completions()[-1]["prompt"] == "<|fim_prefix|><|fim_suffix|>s<|fim_middle|>p"


def test_stop_rule_and_cancel_close_the_connection():
    with Stub(reply="a" * 400, chunk=1, delay=0.05) as stub:
        engine = OpenAIEngine(stub.url, template="qwen")
        started = time.monotonic()
        result = engine.infill(InfillRequest("p", config=GenerationConfig(max_tokens=400),
                                             stop_at=lambda t: 5 if len(t) >= 5 else None))
        assert result.text == "aaaaa" and result.candidates[0].finish_reason == "stop_rule"
        assert time.monotonic() - started < 10  # not the 400 chunks' 20 s: the stream was closed early
        gen = engine.stream_infill(InfillRequest("p", config=GenerationConfig(max_tokens=400)))
        next(gen)
        gen.close()
        assert stub.disconnected.wait(5)


def test_n_candidates():
    with Stub(reply="xy") as stub:
        result = OpenAIEngine(stub.url, template="qwen").infill(InfillRequest("p",
                                                                              config=GenerationConfig(n=3, temperature=1.0)))
        assert [c.text for c in result.candidates] == ["xy"]  # identical candidates merged
        assert stub.completions()[-1]["n"] == 3


def test_errors_are_one_line():
    with Stub(status=503) as stub:
        with pytest.raises(EngineError, match="HTTP 503: model not loaded"):
            OpenAIEngine(stub.url, template="qwen").infill(InfillRequest(prefix="p"))
    with Stub() as stub:
        url = stub.url
    with pytest.raises(EngineError, match="cannot reach"):
        OpenAIEngine(url, template="qwen", model="m").infill(InfillRequest(prefix="p"))
    with pytest.raises(ValueError, match="http"):
        OpenAIEngine("ftp://127.0.0.1/")


def test_score_from_echoed_logprobs_and_capabilities():
    with Stub(reply="x") as stub:
        engine = OpenAIEngine(stub.url, template="qwen")
        assert engine.capabilities == {"infill", "score", "sampled_logprobs"}
        prompt = engine.build_prompt(InfillRequest("def f(", "):\n"))
        # the stub gives every echoed character -0.5: the middle "a, b" and the end token are scored, nothing else
        assert engine.score("def f(", "):\n", "a, b") == -0.5 * (4 + len("<|endoftext|>"))
        assert engine.score("def f(", "):\n", "a, b", end=False) == -2.0
        body = stub.requests[-1][2]
        assert body["echo"] is True and body["prompt"] == prompt + "a, b"
        result = engine.infill(InfillRequest("p", config=GenerationConfig(max_tokens=8)))
        assert result.candidates[0].logprob == -0.5 * 1 and stub.completions()[-1]["logprobs"] == 1
        with pytest.raises(CannotScore, match="one hole"):
            engine.score_holes(["a", "b"], [["x"]])


def test_server_without_echo_ranks_by_sampled_logprobs():
    with Stub(reply="abcdef", chunk=2, echo=False) as stub:
        engine = OpenAIEngine(stub.url, template="qwen")
        assert engine.capabilities == {"infill", "sampled_logprobs"}
        assert "echo" in engine.unavailable["score"]
        with pytest.raises(CannotScore):
            engine.score("a", "b", "c")
        best = engine.infill(InfillRequest("p", config=GenerationConfig(max_tokens=8))).candidates[0]
        assert math.isclose(best.logprob, -3.0) and best.tokens == 3


def test_server_without_logprobs_can_only_infill():
    with Stub(reply="abc", logprobs=False) as stub:
        engine = OpenAIEngine(stub.url, template="qwen")
        assert engine.capabilities == {"infill"}
        assert engine.unavailable["sampled_logprobs"] == "the server returns no logprobs"
        assert engine.infill(InfillRequest("p")).text == "abc"
        assert "logprobs" not in stub.completions()[-1]


def test_interrupt_from_another_thread_ends_a_hung_read():
    """A server that hangs mid-stream: `interrupt()` ends the blocked step at once, not at the 60 s
    read timeout, and the engine serves the next request."""
    with Stub(reply="    return a + b\n", chunk=2) as stub:
        engine = OpenAIEngine(stub.url, template="qwen", timeout_s=60)
        engine.capabilities  # the probes, before the server hangs
        stub.hang = 1
        gen = engine.stream_infill(InfillRequest("p", config=GenerationConfig(max_tokens=16)))
        next(gen)  # the first chunk; the server now hangs
        timer = threading.Timer(0.5, engine.interrupt)
        started = time.monotonic()
        timer.start()
        with pytest.raises(Interrupted, match="interrupted"):
            next(gen)
        assert time.monotonic() - started < 10  # generous: the hang is 60 s
        timer.join()
        stub.released.set()
        assert engine.infill(InfillRequest("p", config=GenerationConfig(max_tokens=16))).text == "    return a + b\n"
        # between reads, the next read of the same stream is cancelled; outside a stream, nothing is
        gen = engine.stream_infill(InfillRequest("p", config=GenerationConfig(max_tokens=16)))
        next(gen)
        engine.interrupt()
        with pytest.raises(Interrupted):
            next(gen)
        engine.interrupt()
        assert engine.infill(InfillRequest("p", config=GenerationConfig(max_tokens=16))).text == "    return a + b\n"
        engine.close()


AFTER_A_SPACE = [  # prefixes that end in a space: the local engine heals that space alone
    ("def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return ", "\n"),
    ("import os\n\n\ndef home():\n    path = ", "\n    return path\n"),
    ("def area(r):\n    pi = 3.14159\n    result = ", "\n    return result\n"),
    ("class Point:\n    def __init__(self, x, y):\n        self.x = ", "\n"),
    ("def greet(name):\n    message = ", "\n    print(message)\n"),
    ("for i in range(10):\n    if i % 2 == 0:\n        ", "\n"),
]


def test_completions_after_a_space_equal_the_local_engines(tmp_path, capsys):
    """Issue 28: through llama.cpp, completions after a space differed from the local engine's, which
    heals that space. Against a server that follows llama.cpp's `grammar` (a stub backed by the exported
    default model), the engine heals as the local engine does and gives its greedy completions; against
    one that ignores it, it sends the local engine's unhealed prompt and says that healing is off."""
    from dataclasses import replace

    from infill import cli
    from openai_stub import HFModel

    assert cli.main(["export", "--hf", str(tmp_path / "hf")]) == 0, capsys.readouterr().err
    local = load.load_engine(None, device="cpu")
    model = HFModel(tmp_path / "hf")
    requests = [InfillRequest(p, s, GenerationConfig(max_tokens=12), ext=".py") for p, s in AFTER_A_SPACE]
    with Stub(model=model) as stub:
        remote = OpenAIEngine(stub.url)
        assert "heal" in remote.capabilities and "heal" not in remote.unavailable
        got = [remote.infill(req).text for req in requests]
        assert got == [local.infill(req).text for req in requests]
        body = stub.completions()[-1]
        assert body["prompt"] == remote.build_prompt(requests[-1])[:-1] and body["grammar"].startswith('root ::= " "')
    with Stub(model=model, grammar=False) as stub:
        remote = OpenAIEngine(stub.url)
        assert "heal" not in remote.capabilities and "unhealed" in remote.unavailable["heal"]
        got = [remote.infill(req).text for req in requests]
        assert got == [local.infill(replace(req, heal=False)).text for req in requests]
        assert "grammar" not in stub.completions()[-1]

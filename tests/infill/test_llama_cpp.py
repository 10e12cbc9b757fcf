"""Against a real llama.cpp: llama-cpp-python built from source by scripts/llama_cpp.sh (slow; skipped
when it is not installed).

- The GGUF tokenizer of a version-2 tokenizer gives infill's ids on the standard library.
- llama-cpp-python's OpenAI-compatible server on 127.0.0.1, given the exported default model, gives
  the local engine's greedy completions through `openai:URL`; closing a stream cancels it; a
  session's second request reuses the prompt; score works or the engine says why not.
  This server tokenizes with the model's own tokenizer.json (llama-cpp-python's
  `hf_pretrained_model_name_or_path`), which version-1 tokenizers (the first default model's) needed
  and version-2 ones (the default model's now) do not.
"""
import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.slow
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not built (scripts/llama_cpp.sh)")

from infill.checkpoint import export_hf  # noqa: E402
from infill.engines import CannotScore, GenerationConfig, InfillRequest  # noqa: E402
from infill.engines.load import DEFAULT_MODEL_DIR  # noqa: E402
from infill.engines.local import LocalEngine  # noqa: E402
from infill.engines.openai import OpenAIEngine  # noqa: E402
from infill.gguf_export import export_gguf  # noqa: E402

from support import STDLIB  # noqa: E402


def test_tokenizer_equality_on_the_standard_library(tmp_path, tiny_checkpoint, tiny_tokenizer):
    path, warnings = export_gguf(tiny_checkpoint, tmp_path / "tiny.gguf")
    assert warnings == []
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    files = sorted(f for f in STDLIB.rglob("*.py") if "site-packages" not in f.parts)
    assert len(files) > 500
    bad, total = [], 0
    for f in files:
        text = f.read_bytes().decode("utf-8", errors="replace")
        ours = tiny_tokenizer.encode(text)
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        total += len(ours)
        if ours != theirs:
            bad.append(str(f.relative_to(STDLIB)))
    assert bad == [], f"{len(bad)} of {len(files)} files tokenize differently, e.g. {bad[:5]}"
    assert total > 1_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """llama-cpp-python's server on the exported default model; (url, log file path)."""
    out = tmp_path_factory.mktemp("llama")
    gguf_path, _ = export_gguf(DEFAULT_MODEL_DIR, out / "default.gguf")
    hf = export_hf(DEFAULT_MODEL_DIR, out / "hf")
    port = _free_port()
    log = open(out / "server.log", "w")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "512", "--n_threads", "2", "--logits_all", "True",
           "--hf_pretrained_model_name_or_path", str(hf), "--verbose", "True"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_PROXY": "127.0.0.1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, (out / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/v1/models", timeout=5, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start")
        yield url, out / "server.log"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _prompts(n=20):
    """n (prefix, suffix) cuts of standard-library functions, at the start of a body line."""
    out = []
    for name in ("textwrap.py", "shlex.py", "bisect.py", "heapq.py", "fnmatch.py", "colorsys.py"):
        lines = STDLIB.joinpath(name).read_text().splitlines(keepends=True)
        for i in range(30, len(lines) - 10, 37):
            if lines[i].startswith("        ") and lines[i].strip():
                indent = len(lines[i]) - len(lines[i].lstrip())
                out.append(("".join(lines[max(0, i - 25):i]) + lines[i][:indent], "".join(lines[i + 1:i + 8])))
            if len(out) == n:
                return out
    return out


def test_openai_engine_matches_the_local_engine(server):
    url, _ = server
    local = LocalEngine.from_dir(DEFAULT_MODEL_DIR, device="cpu")
    remote = OpenAIEngine(url)
    prompts = _prompts()
    assert len(prompts) == 20
    differ = []
    for prefix, suffix in prompts:
        make = lambda: InfillRequest(prefix, suffix, GenerationConfig(max_tokens=24, temperature=0.0),  # noqa: E731
                                     ext=".py", heal=False)
        a, b = local.infill(make()).text, remote.infill(make()).text
        if a != b:
            differ.append((a, b))
    assert differ == []
    assert any(len(a) > 5 for a in (local.infill(InfillRequest(p, s, ext=".py", heal=False)).text for p, s in prompts))


def test_closing_the_stream_cancels_generation(server):
    url, log = server
    engine = OpenAIEngine(url, template="qwen")  # qwen's sentinels are plain text to this model: it goes on
    before = log.read_text().count("Disconnected from client")
    gen = engine.stream_infill(InfillRequest("def f(x):\n", config=GenerationConfig(max_tokens=400)))
    next(gen)
    gen.close()
    deadline = time.monotonic() + 60
    while log.read_text().count("Disconnected from client") == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log.read_text().count("Disconnected from client") > before


def test_a_session_reuses_the_prompt(server):
    url, log = server
    engine = OpenAIEngine(url)
    prefix, suffix = _prompts()[0]
    req = InfillRequest(prefix, suffix, GenerationConfig(max_tokens=4), ext=".py", session="file:///a.py")
    engine.infill(req)
    engine.infill(InfillRequest(prefix + "x", suffix, GenerationConfig(max_tokens=4), ext=".py",
                                session="file:///a.py"))
    hits = [int(n) for n in re.findall(r"(\d+) prefix-match hit", log.read_text())]
    assert hits and hits[-1] > 20


def test_score_works_or_the_engine_says_it_cannot(server):
    """llama-cpp-python 0.3.36 echoes each prompt token with the log-probability of the distribution
    after it (one row late), so the engine's probe must find that and refuse to score; a server that
    echoes correctly must give the local engine's scores."""
    url, _ = server
    local = LocalEngine.from_dir(DEFAULT_MODEL_DIR, device="cpu")
    remote = OpenAIEngine(url)
    prefix, suffix = _prompts()[1]
    if "score" in remote.capabilities:
        for middle in ("return x\n", "pass\n"):
            assert remote.score(prefix, suffix, middle, ext=".py") == pytest.approx(
                local.score(prefix, suffix, middle, ext=".py"), abs=1e-2)
    else:
        assert "disagree" in remote.unavailable["score"]
        assert "sampled_logprobs" in remote.capabilities
        with pytest.raises(CannotScore, match="disagree"):
            remote.score(prefix, suffix, "pass\n", ext=".py")

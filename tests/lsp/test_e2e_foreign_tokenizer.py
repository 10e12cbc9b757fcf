"""A Hugging Face model whose tokenizer.json splits with a regex that backtracks (`(a+)+b`), served
over stdio: 25 `a`s in a document make the regex engine panic (pyo3's PanicException, a
BaseException). Before issue 28 the panic escaped the handler guard: no answer, and every later
completion failed the same way. Now that request is answered empty and the others are served."""
import asyncio
import json

import pytest
import pytest_asyncio
from hf_models import build

from infill.engines import load_engine
from lsp.completion import complete
from lsp.options import ServerOptions, update_options

pytestmark = pytest.mark.asyncio(loop_scope="module")
INIT = {"maxTokens": 6, "timeBudgetMs": 60000}
BAD, GOOD = "file:///e2e/bad.py", "file:///e2e/good.py"
BAD_TEXT = "x = '" + "a" * 25 + "'\n"
GOOD_TEXT = "def add(a, b):\n    return \n"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory, lsp):
    d = build(tmp_path_factory.mktemp("hf-regex") / "m", "starcoder")
    data = json.loads((d / "tokenizer.json").read_text())
    evil = {"type": "Split", "pattern": {"Regex": "(a+)+b"}, "behavior": "Isolated", "invert": False}
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [evil, data["pre_tokenizer"]]}
    (d / "tokenizer.json").write_text(json.dumps(data))
    client = await lsp.start_client("--model", str(d), "--device", "cpu", init_options=INIT)
    yield client, load_engine(str(d), device="cpu")
    await lsp.stop_client(client)


async def test_a_panicking_tokenizer_costs_its_request_alone(served, lsp):
    client, engine = served
    assert client.statuses[-1].state == "ready"
    lsp.open_doc(client, BAD, BAD_TEXT)
    lsp.open_doc(client, GOOD, GOOD_TEXT)
    for _ in range(2):  # the bad document, twice: answered empty each time
        bad = await asyncio.wait_for(lsp.inline(client, BAD, 0, 30), 120)
        assert list(bad.items) == []
        options, _ = update_options(ServerOptions(), INIT)
        want, _ = complete(GOOD_TEXT, GOOD_TEXT.index("\n", 16), engine, options, language="python", ext=".py")
        got = await asyncio.wait_for(lsp.inline(client, GOOD, 1, 11), 120)
        assert [item.insert_text for item in got.items] == ([want.text] if want is not None else [])
    assert client.statuses[-1].state == "ready"

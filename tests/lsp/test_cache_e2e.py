"""The cache model end to end: `return t` at the end of `mean()` through a real infill-lsp with the
built-in model. (A name from another file, supplied by the cache: tests/lsp/test_context_e2e.py.)"""
from __future__ import annotations

import pytest

MEAN = "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return t"


@pytest.mark.asyncio(loop_scope="function")
async def test_return_t_completes_total_with_the_built_in_model(lsp):
    """The issue's `mean()`: typing `return t` three lines below `total` offers `otal`, through a real
    server with its defaults and the built-in model (no --model)."""
    client = await lsp.start_client("--device", "cpu", init_options={"timeBudgetMs": 60000})
    try:
        assert client.statuses[-1].state == "ready" and client.statuses[-1].cache is True
        uri = "file:///tmp/infill-cache-e2e/mean.py"
        lsp.open_doc(client, uri, MEAN)
        answer = await lsp.inline(client, uri, 4, len("    return t"))
        assert answer.items and answer.items[0].insert_text.startswith("otal"), answer
    finally:
        await lsp.stop_client(client)

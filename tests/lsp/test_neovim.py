"""A real editor: headless Neovim (Debian's 0.7.2) starts infill-lsp with `vim.lsp.start_client`, opens a
Python file and asks for `textDocument/completion` with `buf_request_sync`. Skipped without `nvim`
(CI installs the Debian package `neovim`)."""
import json
import shutil
import subprocess
import sys

import pytest

from lsp.completion import as_completion_item, complete
from lsp.options import ServerOptions

NVIM = shutil.which("nvim")
DOC = "import os\n\n\ndef main(argv):\n    for i in range(\n"
LINE, COL = 4, len("    for i in range(")

LUA = r"""
local out = vim.fn.getenv("INFILL_OUT")
local id = vim.lsp.start_client({
  cmd = { vim.fn.getenv("INFILL_PY"), "-m", "lsp", "--model", vim.fn.getenv("INFILL_CKPT"), "--device", "cpu" },
  init_options = { maxTokens = 24, timeBudgetMs = 60000 },
  handlers = { ["infill/status"] = function(_, params) vim.g.infill_state = params.state end },
})
vim.lsp.buf_attach_client(0, id)
vim.wait(60000, function() return vim.g.infill_state == "ready" end, 50)
local res = vim.lsp.buf_request_sync(0, "textDocument/completion", {
  textDocument = { uri = vim.uri_from_bufnr(0) },
  position = { line = %d, character = %d },
}, 60000)
local items = {}
for _, r in pairs(res or {}) do
  for _, item in ipairs((r.result or {}).items or {}) do table.insert(items, item.textEdit.newText) end
end
vim.fn.writefile({ vim.fn.json_encode({ state = vim.g.infill_state, items = items }) }, out)
vim.lsp.stop_client(id)
vim.cmd("qa!")
"""


@pytest.mark.skipif(NVIM is None, reason="needs nvim (Debian package neovim)")
def test_neovim_gets_the_tiny_models_completion(tmp_path, tiny_checkpoint, tiny_engine):
    source = tmp_path / "demo.py"
    source.write_text(DOC)
    script = tmp_path / "ask.lua"
    script.write_text(LUA % (LINE, COL))
    out = tmp_path / "out.json"
    env = {"INFILL_OUT": str(out), "INFILL_PY": sys.executable, "INFILL_CKPT": str(tiny_checkpoint),
           "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([NVIM, "--headless", "--clean", str(source), "-c", f"luafile {script}"], env=env,
                   timeout=120, check=True, capture_output=True)
    got = json.loads(out.read_text())
    edit, _ = complete(DOC, len(DOC) - 1, tiny_engine, ServerOptions(max_tokens=24, time_budget_ms=60000),
                       language="python", ext=".py")
    _, whole = as_completion_item(DOC[:-1], edit)
    assert got == {"state": "ready", "items": [whole.text]}

"""Neovim reports acceptance with the lines docs/lsp.md gives (read from the docs here, so the docs
are what runs): headless Neovim (Debian's 0.7.2) asks infill-lsp for a completion, puts it in the
completion menu as its omnifunc does, and <C-y> takes it; the `CompleteDone` autocmd sends
`infill/didAccept`, and the record appears. (Headless Neovim draws no menu, so `CompleteChanged`
does not fire: the acceptance stands for the show, as the server does for any client.) Skipped
without `nvim` (CI installs the Debian package `neovim`)."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NVIM = shutil.which("nvim")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "lsp.md"
DOC = "import os\n\n\ndef main(argv):\n    for i in range(\n"
LINE, COL = 4, len("    for i in range(")

LUA = r"""
local id = vim.lsp.start_client({
  cmd = { vim.fn.getenv("INFILL_PY"), "-m", "lsp", "--model", vim.fn.getenv("INFILL_CKPT"), "--device", "cpu" },
  init_options = { maxTokens = 24, timeBudgetMs = 60000, telemetry = "local",
                   telemetryDir = vim.fn.getenv("INFILL_RECORDS") },
  handlers = { ["infill/status"] = function(_, params) vim.g.infill_state = params.state end },
})
vim.lsp.buf_attach_client(0, id)
%(snippet)s
vim.wait(60000, function() return vim.g.infill_state == "ready" end, 50)
local res = vim.lsp.buf_request_sync(0, "textDocument/completion", {
  textDocument = { uri = vim.uri_from_bufnr(0) }, position = { line = %(line)d, character = %(col)d } }, 60000)
local result
for _, r in pairs(res or {}) do result = r.result end
-- what omnifunc does with the answer
_G.infill_items = vim.lsp.util.text_document_completion_list_to_complete_items(result, "")
_G.infill_start = result.items[1].textEdit.range.start.character + 1
function _G.infill_complete() vim.fn.complete(_G.infill_start, _G.infill_items) return "" end
vim.cmd("inoremap <F5> <C-R>=v:lua.infill_complete()<CR>")
vim.api.nvim_win_set_cursor(0, { %(line)d + 1, %(col)d })
vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes("a<F5><C-y><Esc>", true, false, true), "xt", false)
vim.wait(10000, function() return #vim.fn.glob(vim.fn.getenv("INFILL_RECORDS") .. "/*.jsonl") > 0 end, 50)
vim.cmd("write")
vim.lsp.stop_client(id)
vim.cmd("qa!")
"""


def docs_snippet() -> str:
    """The Lua lines of docs/lsp.md's "Reporting acceptance from an editor", Neovim item."""
    found = re.search(r"```lua\n(  local function infill_arg.*?)  ```", DOCS.read_text(), re.S)
    assert found, "docs/lsp.md lost its Neovim lines"
    return "\n".join(line[2:] for line in found.group(1).splitlines())


@pytest.mark.skipif(NVIM is None, reason="needs nvim (Debian package neovim)")
def test_neovim_reports_an_accepted_completion(tmp_path, tiny_checkpoint):
    source = tmp_path / "demo.py"
    source.write_text(DOC)
    script = tmp_path / "accept.lua"
    script.write_text(LUA % {"snippet": docs_snippet(), "line": LINE, "col": COL})
    records = tmp_path / "records"
    env = {"INFILL_PY": sys.executable, "INFILL_CKPT": str(tiny_checkpoint), "INFILL_RECORDS": str(records),
           "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([NVIM, "--headless", "--clean", str(source), "-c", f"luafile {script}"], env=env,
                   timeout=120, check=True, capture_output=True)
    got = [json.loads(line) for f in sorted(records.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert [(r["event"], r.get("kind")) for r in got] == [("show", None), ("accept", "full")]
    accept = got[1]
    assert accept["acceptedLength"] == accept["length"] > 0
    assert source.read_text() != DOC  # the completion is in the file

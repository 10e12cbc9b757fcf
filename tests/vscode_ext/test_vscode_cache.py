"""The cache model in a real VS Code: code-server with the built extension at its defaults (no
infill.model, so the server loads the built-in model; the cache on), typing `return t` at the end of
`mean()` shows ghost text that begins with `otal`, the name three lines up. The language-server half of
this is tests/lsp/test_cache_e2e.py. A screenshot of the ghost text goes to
vscode-ext/e2e/artifacts/cache-ghost.png (the extension README's images/screenshot.png is a copy).
Needs what scripts/vscode-setup.sh installs (see test_vscode_e2e.py, whose helpers this uses); skips
without it, fails when CI=true."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from vscode_ext.test_vscode_e2e import ARTIFACTS, USER_SETTINGS, tools, workbench  # noqa: F401 (tools: fixture)

# On disk without its last line's text (no final newline, so Ctrl+End lands after its indent).
BEFORE = "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    "
TYPED = "return t"
GHOST = ".ghost-text-decoration, .ghost-text-decoration-preview, .ghost-text"


@pytest.mark.timeout(600)
def test_vscode_return_t_shows_otal_with_the_built_in_model(tools, tmp_path):
    from playwright.sync_api import expect

    ws, user = tmp_path / "ws", tmp_path / "user"
    (ws / ".vscode").mkdir(parents=True)
    (user / "User").mkdir(parents=True)
    (ws / "mean.py").write_text(BEFORE)
    # The extension's defaults but for where infill-lsp is and a time budget that a loaded CI machine
    # cannot run out of (the default 2 s would cut the answer short there, not change its start).
    (ws / ".vscode" / "settings.json").write_text(json.dumps({
        "infill.server.command": str(Path(sys.executable).parent / "infill-lsp"), "infill.timeBudgetMs": 60000},
        indent=2))
    (user / "User" / "settings.json").write_text(json.dumps(USER_SETTINGS, indent=2))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with workbench(tmp_path, ws, "mean.py", "cache-failure") as (page, editor):
        expect(editor.locator(".view-lines")).to_contain_text("def mean")
        # ready with a model: "infill: <model> · <device>"
        expect(page.locator(".statusbar-item", has_text=re.compile(r"infill: \S+ · "))).to_be_visible()

        editor.locator(".view-lines").click()
        page.keyboard.press("Control+End")
        page.keyboard.type(TYPED, delay=30)
        expect(editor.locator(GHOST).first).to_be_visible()
        shown = page.wait_for_function(
            """sel => [...document.querySelectorAll(sel)].map(e => e.textContent).join('')
                      .replace(/\\u00a0/g, ' ')""", arg=GHOST).json_value()
        page.screenshot(path=str(ARTIFACTS / "cache-ghost.png"))
        assert shown.startswith("otal"), shown

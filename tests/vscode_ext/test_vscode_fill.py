"""A real VS Code (code-server, the built extension, the default model) runs "Infill: Fill Holes with
the Model": the refactor preview appears, and applying it changes the holes and nothing else, exactly as
the server's own functions fill them (computed here). A screenshot of the preview goes to
vscode-ext/e2e/artifacts/fill-preview.png. Needs what scripts/vscode-setup.sh installs (see
test_vscode_e2e.py, whose helpers this uses); skips without it, fails when CI=true. The default model
(1.3M parameters, shipped in the package) rather than the random test checkpoint: a random model with
InCoder mask tokens closes its fills at once, and an empty fill leaves its hole as written."""
from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vscode_ext.test_vscode_e2e import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, CODE_SERVER, NODE_BIN, TIMEOUT_MS, USER_SETTINGS,
                             VSIX, _command, _free_port, _wait_file, _wait_http, tools)  # noqa: F401 (fixture)

from infill.engines import run_to_end
from lsp import holes
from lsp.fill import fill_steps

SKETCH = ("def mean(xs):\n    \"\"\"The mean of xs.\"\"\"\n    ...\n    for x in xs:\n        pass  # TODO\n"
          "    return total / len(xs)\n")
MAX_TOKENS = 8


@pytest.mark.timeout(600)
def test_vscode_fill_holes_through_the_refactor_preview(tools, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from infill.engines.load import DEFAULT_MODEL_DIR
    from infill.engines.local import LocalEngine

    model = os.environ.get("INFILL_E2E_MODEL") or str(DEFAULT_MODEL_DIR)
    engine = LocalEngine.from_dir(model, device="cpu")
    found = holes.find_holes(SKETCH, SKETCH.index("..."), language="python")
    changes, _ = run_to_end(fill_steps(SKETCH, found, engine, max_tokens=MAX_TOKENS, ext=".py"))
    assert len(changes) == 2, "the model leaves a hole blank here: change SKETCH"
    filled = holes.apply(SKETCH, changes)
    hole_lines = {SKETCH[:h.start].count("\n") for h in found.holes}

    ws, user, exts, home = (tmp_path / d for d in ("ws", "user", "exts", "home"))
    (ws / ".vscode").mkdir(parents=True)
    (user / "User").mkdir(parents=True)
    home.mkdir()
    source = ws / "sketch.py"
    source.write_text(SKETCH)
    (ws / ".vscode" / "settings.json").write_text(json.dumps({
        "infill.server.command": str(Path(sys.executable).parent / "infill-lsp"), "infill.model": model,
        "infill.maxTokens": MAX_TOKENS, "infill.timeBudgetMs": 60000, "infill.device": "cpu",
        "infill.completion": False, "infill.typeHints": False}, indent=2))
    (user / "User" / "settings.json").write_text(json.dumps(USER_SETTINGS, indent=2))
    env = {"PATH": f"{NODE_BIN}:/usr/bin:/bin", "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share"), "EXTENSIONS_GALLERY": "{}", "LANG": "C.UTF-8"}
    dirs = ["--user-data-dir", str(user), "--extensions-dir", str(exts)]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(CODE_SERVER), *dirs, "--install-extension", str(VSIX)], env=env, check=True,
                   timeout=180, capture_output=True)
    port, log = _free_port(), tmp_path / "code-server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(CODE_SERVER), "--auth", "none", "--bind-addr", f"127.0.0.1:{port}", *dirs,
                                 "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
                                 "--disable-getting-started-override", str(ws)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            try:
                page.goto(f"http://127.0.0.1:{port}/?folder={ws}")
                page.locator(".monaco-workbench").wait_for(state="visible")
                page.keyboard.press("Control+P")
                page.locator(".quick-input-widget input").fill("sketch.py")
                page.locator(".quick-input-list .monaco-list-row", has_text="sketch.py").first.click()
                editor = page.locator(".editor-instance .monaco-editor").first
                expect(editor.locator(".view-lines")).to_contain_text("def mean")
                # completion is off in this workspace: "off" is what a loaded model says then
                expect(page.locator(".statusbar-item", has_text="infill: off")).to_be_visible()

                page.keyboard.press("Control+P")
                page.locator(".quick-input-widget input").fill(":3:5")
                expect(page.locator(".quick-input-widget")).to_contain_text("line 3")
                page.keyboard.press("Enter")
                expect(page.locator(".statusbar-item", has_text="Ln 3, Col 5")).to_be_visible()
                _command(page, "Infill: Fill Holes with the Model")

                apply = page.locator(".monaco-button", has_text="Apply").first
                expect(apply).to_be_visible()  # the refactor preview, before anything changed
                preview = page.locator(".bulk-edit-panel")
                boxes = preview.locator(".edit-checkbox")
                expect(boxes).to_have_count(1 + len(changes))  # the file, then each fill
                assert source.read_text() == SKETCH
                # edits that need confirmation come unticked: the file's box ticks every fill
                boxes.first.click()
                expect(preview.locator(".edit-checkbox[aria-checked=true]")).to_have_count(1 + len(changes))
                time.sleep(0.5)  # let the preview's tree render for the screenshot (nothing waits on it)
                page.screenshot(path=str(ARTIFACTS / "fill-preview.png"))
                apply.click()
                page.keyboard.press("Control+S")
                _wait_file(source, filled)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "fill-failure.png"))
                (ARTIFACTS / "fill-failure.html").write_text(page.content())
                raise
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    changed = {i for op, i1, i2, _, _ in difflib.SequenceMatcher(
        a=SKETCH.splitlines(), b=filled.splitlines()).get_opcodes() if op != "equal" for i in range(i1, i2)}
    assert changed == hole_lines  # the holes' lines, and only them

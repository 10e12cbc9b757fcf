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
import sys
import time
from pathlib import Path

import pytest
from vscode_ext.test_vscode_e2e import (ARTIFACTS, USER_SETTINGS, _command, _wait_file, tools,  # noqa: F401 (fixture)
                                        workbench)

from infill.engines import run_to_end
from lsp import holes
from lsp.fill import fill_steps

SKETCH = ("def mean(xs):\n    \"\"\"The mean of xs.\"\"\"\n    ...\n    for x in xs:\n        pass  # TODO\n"
          "    return total / len(xs)\n")
MAX_TOKENS = 8


@pytest.mark.timeout(600)
def test_vscode_fill_holes_through_the_refactor_preview(tools, tmp_path):
    from playwright.sync_api import expect

    from infill.engines.load import DEFAULT_MODEL_DIR
    from infill.engines.local import LocalEngine

    model = os.environ.get("INFILL_E2E_MODEL") or str(DEFAULT_MODEL_DIR)
    engine = LocalEngine.from_dir(model, device="cpu")
    found = holes.find_holes(SKETCH, SKETCH.index("..."), language="python")
    changes, _ = run_to_end(fill_steps(SKETCH, found, engine, max_tokens=MAX_TOKENS, ext=".py"))
    assert len(changes) == 2, "the model leaves a hole blank here: change SKETCH"
    filled = holes.apply(SKETCH, changes)
    hole_lines = {SKETCH[:h.start].count("\n") for h in found.holes}

    ws, user = tmp_path / "ws", tmp_path / "user"
    (ws / ".vscode").mkdir(parents=True)
    (user / "User").mkdir(parents=True)
    source = ws / "sketch.py"
    source.write_text(SKETCH)
    (ws / ".vscode" / "settings.json").write_text(json.dumps({
        "infill.server.command": str(Path(sys.executable).parent / "infill-lsp"), "infill.model": model,
        "infill.maxTokens": MAX_TOKENS, "infill.timeBudgetMs": 60000, "infill.device": "cpu",
        "infill.completion": False, "infill.typeHints": False}, indent=2))
    (user / "User" / "settings.json").write_text(json.dumps(USER_SETTINGS, indent=2))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with workbench(tmp_path, ws, "sketch.py", "fill-failure") as (page, editor):
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
    changed = {i for op, i1, i2, _, _ in difflib.SequenceMatcher(
        a=SKETCH.splitlines(), b=filled.splitlines()).get_opcodes() if op != "equal" for i in range(i1, i2)}
    assert changed == hole_lines  # the holes' lines, and only them

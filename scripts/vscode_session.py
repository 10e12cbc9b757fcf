"""A real editing session for the acceptance records: code-server with the built extension and the
built-in model, a person simulated by Playwright who types a file character by character and takes a
suggestion (Tab) when its text is exactly what they were about to type, then `infill report`.

    .venv/bin/python scripts/vscode_session.py [--source lsp/positions.py] [--chars 2500]
                                               [--delay-ms 70] [--linger-s 320] [--out DIR]

The typist: types `--chars` characters of `--source` into a new file (`editor.autoIndent` off, so the
indentation typed is the file's); pauses 0.4 s after each line and each space as a person does; when a
suggestion is on screen (the extension reported it: its `show` record, with `telemetryText` on for
this session only) and the rest of the file starts with it, presses Tab. A file that drifts from the
source (a stray key) is put right by deleting back to the common prefix. After typing, the session
stays open `--linger-s` seconds so the 30 s / 2 min / 5 min retention checks run, then the records
are summarised with `infill report --since all --dir <records>` (and `--out <out>/report`).
Needs what scripts/vscode-setup.sh installs (the same as tests/vscode_ext).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from vscode_ext.test_vscode_e2e import (  # noqa: E402
    CHROMIUM, CHROMIUM_ARGS, USER_SETTINGS, _missing, _records, start_code_server, stop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO / "lsp" / "positions.py")
    parser.add_argument("--chars", type=int, default=2500, help="how much of the source to type")
    parser.add_argument("--delay-ms", type=int, default=70, help="between two keys")
    parser.add_argument("--linger-s", type=float, default=320, help="session kept open after typing")
    parser.add_argument("--out", type=Path, default=REPO / "vscode-ext" / "e2e" / "artifacts" / "session")
    args = parser.parse_args()
    if missing := _missing():
        print("needs " + ", ".join(missing), file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    target = args.source.read_text()[:args.chars]
    out = args.out.resolve()
    ws, user, records = out / "ws", out / "user", out / "records"
    for d in (ws / ".vscode", user / "User"):
        d.mkdir(parents=True, exist_ok=True)
    source = ws / ("typed" + args.source.suffix)
    source.write_text("")
    venv_bin = Path(sys.executable).parent
    (ws / ".vscode" / "settings.json").write_text(json.dumps({
        "infill.server.command": str(venv_bin / "infill-lsp"), "infill.device": "cpu",
        "infill.telemetry": "local", "infill.telemetryText": True, "infill.telemetryDir": str(records)}, indent=2))
    (user / "User" / "settings.json").write_text(json.dumps({**USER_SETTINGS, "editor.autoIndent": "none",
                                                             "editor.autoClosingQuotes": "never",
                                                             "files.autoSave": "off"}, indent=2))
    stats = {"typed": 0, "tabs": 0, "accepted_chars": 0, "repairs": 0}
    started = time.monotonic()
    proc, port = start_code_server(out, ws)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/?folder={ws}")
            page.locator(".monaco-workbench").wait_for(state="visible")
            page.keyboard.press("Control+P")
            page.locator(".quick-input-widget input").fill(source.name)
            page.locator(".quick-input-list .monaco-list-row", has_text=source.name).first.click()
            page.locator(".statusbar-item", has_text=re.compile(r"infill: .+ · cpu")).wait_for(state="visible")
            editor = page.locator(".editor-instance .monaco-editor").first
            editor.locator(".view-lines").click()
            ghost = editor.locator(".ghost-text-decoration, .ghost-text-decoration-preview, .ghost-text")
            pos, seen = 0, 0
            while pos < len(target):
                ch = target[pos]
                page.keyboard.press("Enter") if ch == "\n" else page.keyboard.type(ch)
                pos += 1
                stats["typed"] += 1
                page.wait_for_timeout(args.delay_ms)
                if ch in " \n(.":
                    page.wait_for_timeout(400)  # a person's pause: suggestions show up here
                shows = [r for r in (_records(records) if records.is_dir() else []) if r["event"] == "show"]
                fresh, seen = shows[seen:], len(shows)
                last = fresh[-1] if fresh else None
                if last and last.get("text") and target.startswith(last["text"], pos) and ghost.count() \
                        and ghost.first.is_visible():
                    page.keyboard.press("Tab")
                    pos += len(last["text"])
                    stats["tabs"] += 1
                    stats["accepted_chars"] += len(last["text"])
                    page.wait_for_timeout(300)
                if ch == "\n" or pos >= len(target):
                    page.keyboard.press("Control+S")
                    page.wait_for_timeout(200)
                    have = source.read_text()
                    if have != target[:pos]:  # a stray key or a different acceptance: put it right
                        common = len(os.path.commonprefix([have, target[:pos]]))
                        page.keyboard.press("Control+End")
                        for _ in range(len(have) - common):
                            page.keyboard.press("Backspace")
                        pos = common
                        stats["repairs"] += 1
            stats["typing_s"] = round(time.monotonic() - started, 1)
            print(f"typed: {stats}", flush=True)
            page.keyboard.press("Control+S")
            page.wait_for_timeout(args.linger_s * 1000)  # the retention checks run in the server meanwhile
            browser.close()
    finally:
        stop(proc)
    stats["session_s"] = round(time.monotonic() - started, 1)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"session: {stats}")
    return subprocess.call([str(venv_bin / "infill"), "report", "--since", "all", "--dir", str(records),
                            "--out", str(out / "report")])


if __name__ == "__main__":
    sys.exit(main())

import json
import subprocess
import sys

import pytest

from infill import cli
from infill.text import split_at
from infill.engines import load


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "demo.py"
    path.write_text("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    \n")
    return path


@pytest.fixture(autouse=True)
def no_default_model(monkeypatch, tmp_path):
    monkeypatch.delenv("INFILL_MODEL", raising=False)
    monkeypatch.setattr(load, "DEFAULT_MODEL_DIR", tmp_path / "no-default")


def run(args, capsys):
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_complete_json(source, tiny_checkpoint, capsys):
    code, out, err = run(["complete", f"{source}:6:5", "--model", str(tiny_checkpoint), "--json",
                          "--max-tokens", "5"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"middle", "tokens", "latency_ms"} and 0 < data["tokens"] <= 5


def test_complete_uses_env_model(source, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("INFILL_MODEL", str(tiny_checkpoint))
    code, out, err = run(["complete", f"{source}:2:12", "--max-tokens", "3"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("loc, message", [
    ("{src}", "expected FILE:LINE:COL"),
    ("{src}:0:1", "1-based"),
    ("{src}:99:1", "line 99 is past the end"),
    ("{src}:1:40", "column 40 is past the end of line 1"),
    ("{src}x:1:1", "no such file"),
])
def test_complete_bad_location(source, tiny_checkpoint, capsys, loc, message):
    code, out, err = run(["complete", loc.format(src=source), "--model", str(tiny_checkpoint)], capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_no_model_says_what_to_pass(source, capsys):
    code, _, err = run(["complete", f"{source}:1:1"], capsys)
    assert code == 2 and "pass --model DIR" in err and err.count("\n") == 1


def test_bad_model_dir(source, tmp_path, capsys):
    code, _, err = run(["complete", f"{source}:1:1", "--model", str(tmp_path)], capsys)
    assert code == 2 and "config.json: missing" in err


def test_binary_file(tmp_path, tiny_checkpoint, capsys):
    path = tmp_path / "blob.py"
    path.write_bytes(b"\xff\xfe\x00")
    code, _, err = run(["complete", f"{path}:1:1", "--model", str(tiny_checkpoint)], capsys)
    assert code == 2 and "not a UTF-8 text file" in err


def test_export(tmp_path, tiny_checkpoint, capsys):
    code, _, err = run(["export", "--hf", str(tmp_path / "hf"), "--model", str(tiny_checkpoint)], capsys)
    assert code == 0, err
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in (tmp_path / "hf").iterdir()}
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(["export", "--hf", str(blocker / "sub"), "--model", str(tiny_checkpoint)], capsys)
    assert code == 2 and err.startswith("infill: error:") and err.count("\n") == 1


def test_export_checkpoint_dtype(tmp_path, tiny_checkpoint, capsys):
    code, _, err = run(["export", "--checkpoint", str(tmp_path / "bf16"), "--dtype", "bfloat16",
                        "--model", str(tiny_checkpoint)], capsys)
    assert code == 0, err
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "bf16").iterdir()}
    for args, why in ((["export", "--model", str(tiny_checkpoint)], "give one of --hf"),
                      (["export", "--hf", "a", "--checkpoint", "b", "--model", str(tiny_checkpoint)], "give one of"),
                      (["export", "--hf", "a", "--dtype", "bfloat16", "--model", str(tiny_checkpoint)], "--dtype applies")):
        code, _, err = run(args, capsys)
        assert code == 2 and why in err and err.count("\n") == 1


def test_split_at():
    text = "ab\ncd\n"
    assert split_at(text, 1, 1) == ("", text)
    assert split_at(text, 2, 3) == ("ab\ncd", "\n")
    assert split_at(text, 3, 1) == (text, "")
    assert split_at("héllo", 1, 3) == ("hé", "llo")


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "infill.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("complete", "export", "data"):
        assert command in out
    out = subprocess.run([sys.executable, "-m", "infill.cli", "complete", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--max-tokens" in out and "--json" in out

"""`infill train` and `infill train plot`: user errors are one line and exit 2; plot writes a PNG."""
import json

import pytest

from infill.cli import main


@pytest.mark.parametrize("argv, message", [
    (["train", "--out", "x"], "--recipe"),
    (["train", "--recipe", "tiny"], "--out"),
    (["train", "--recipe", "tiny", "--out", "{tmp}/r", "--set", "steps=zero"], "steps"),
    (["train", "--recipe", "tiny", "--out", "{tmp}/r", "--set", "bogus=1"], "bogus"),
    (["train", "--recipe", "tiny", "--out", "{tmp}/r", "--data", "{tmp}/missing"], "missing"),
    (["train", "--recipe", "tiny", "--out", "{tmp}/r", "--set", "tokenizer={tmp}/none.json"], "none.json"),
    (["train", "plot", "{tmp}"], "log"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_unknown_recipe_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--recipe", "nope", "--out", "x"])
    assert exc.value.code == 2


def test_tiny_recipe_trains_without_data_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--recipe", "tiny", "--out", str(out), "--quiet", "--set", "steps=6", "--set", "eval_every=3",
            "--set", "stdlib_modules=8", "--set", "eval_infill=1", "--set", "batch_tokens=1024", "--set", "micro_batch=4",
            "--set", "eval_max_tokens=8"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert main(["train", "plot", str(out)]) == 0
    png = out / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.strip() == str(png)
    assert main(["train", "plot", str(out), "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").stat().st_size > 1000

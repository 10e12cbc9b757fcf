"""HumanEval-infilling: pass@k, scoring given samples (canonical, empty), and a model run end to end."""
import json
import math

import pytest

from infill import cli
from infill.benchmarks import SPLITS, load_humaneval_infilling
from infill.evaluate import humaneval
from infill.evaluate.sandbox import SandboxConfig


def pass_at_k_ref(n, c, k):
    return 1.0 if n - c < k else 1 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n, c, k", [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (20, 0, 10), (200, 17, 100),
                                     (5, 5, 5)])
def test_pass_at_k_matches_the_combinatorial_formula(n, c, k):
    assert humaneval.pass_at_k(n, c, k) == pytest.approx(pass_at_k_ref(n, c, k), abs=1e-12)


def test_pass_at_k_rejects_bad_counts():
    with pytest.raises(ValueError):
        humaneval.pass_at_k(3, 4, 1)


def subset(split, every):
    return load_humaneval_infilling(split)[::every]


def write_samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("split, every", [("single-line", 60), ("multi-line", 400), ("random-span", 110),
                                          ("random-span-light", 12)])
def test_canonical_solutions_score_100(tmp_path, capsys, split, every):
    tasks = subset(split, every)
    path = tmp_path / "canonical.jsonl"
    write_samples(path, [{"task_id": t["task_id"], "completion": t["canonical_solution"]} for t in tasks])
    code = cli.main(["eval", "score", "--samples", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    summary = json.loads(out[-1])
    assert summary["pass@1"] == 1.0 and summary["tasks"] == len(tasks) and summary["split"] == split
    rows = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == len(tasks) and all(r["status"] == "passed" for r in rows)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["pass@1"] == 1.0


def test_empty_completions_score_about_zero(tmp_path):
    tasks = subset("single-line", 40)
    pairs = [(t, [""]) for t in tasks]
    summary = humaneval.score(pairs, None, progress=False, workers=2)
    assert summary["pass@1"] <= 0.1


def test_pass_at_k_over_mixed_samples(tmp_path):
    """Two samples per task, one right and one wrong: pass@1 is 0.5 exactly, and identical samples run once."""
    tasks = subset("random-span-light", 40)
    pairs = [(t, [t["canonical_solution"], "    raise ValueError('no')\n"]) for t in tasks]
    summary = humaneval.score(pairs, tmp_path, progress=False)
    assert summary["pass@1"] == pytest.approx(0.5) and summary["samples"] == 2 * len(tasks)
    assert "pass@10" not in summary


def test_malicious_samples_leave_the_harness_alive(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    task = load_humaneval_infilling("single-line")[0]
    bad = [
        "    import os\n    while True: os.fork()\n",
        "    while True: pass\n",
        f"    open({str(home / 'x')!r}, 'w').write('x'); open(__import__('os').path.expanduser('~/y'), 'w')\n",
        "    import os, signal; os.kill(os.getppid(), signal.SIGKILL)\n",
    ]
    summary = humaneval.score([(task, bad)], tmp_path / "out", sandbox=SandboxConfig(timeout_s=1.5), progress=False,
                              workers=2)
    assert summary["pass@1"] == 0.0 and summary["samples"] == 4
    assert list(home.iterdir()) == []


def test_score_says_unknown_task_in_one_line(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    write_samples(path, [{"task_id": "SingleLineInfilling/HumanEval/999/L9", "completion": ""}])
    code = cli.main(["eval", "score", "--samples", str(path), "--split", "single-line", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "not in the single-line split" in err and err.count("\n") == 1


def test_single_line_postprocess_keeps_one_line():
    assert humaneval.postprocess("single-line", "    return x\n    y = 2\n") == "    return x\n"
    assert humaneval.postprocess("single-line", "    return x") == "    return x\n"
    assert humaneval.postprocess("multi-line", "a\nb") == "a\nb"


def test_model_run_end_to_end(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "run"
    code = cli.main(["eval", "humaneval-infilling", "--split", "single-line", "--model", str(tiny_checkpoint),
                     "--limit", "4", "--max-tokens", "16", "--out", str(out), "--quiet"])
    stdout = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    summary = json.loads(stdout[-1])
    assert summary["tasks"] == 4 and 0.0 <= summary["pass@1"] <= 1.0 and summary["engine"] == "LocalEngine"
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [t["task_id"] for t in load_humaneval_infilling("single-line")[:4]]
    assert all(r["completion"].endswith("\n") and r["completion"].count("\n") == 1 for r in rows)
    # the recorded completions rescore to the same verdicts
    rescored = humaneval.score(humaneval.read_samples(out / "samples.jsonl", "single-line"), None, progress=False)
    assert rescored["pass@1"] == summary["pass@1"]


def test_l2r_format_prompts_with_the_prefix_alone(tmp_path, tiny_checkpoint, capsys):
    from infill.engines import GenerationConfig, InfillRequest
    from infill.engines.local import LocalEngine

    out = tmp_path / "l2r"
    code = cli.main(["eval", "humaneval-infilling", "--format", "l2r", "--model", str(tiny_checkpoint),
                     "--limit", "2", "--max-tokens", "8", "--out", str(out), "--quiet"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["format"] == "l2r"
    engine = LocalEngine.from_dir(tiny_checkpoint)
    engine.format = "l2r"
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    for task, row in zip(load_humaneval_infilling("single-line")[:2], rows):
        with_suffix = InfillRequest(prefix=task["prompt"], suffix=task["suffix"], ext=".py")
        assert engine.build_prompt(with_suffix) == engine.build_prompt(InfillRequest(prefix=task["prompt"], ext=".py"))
        alone = engine.infill(InfillRequest(task["prompt"], config=GenerationConfig(max_tokens=8), stop=("\n",),
                                            ext=".py")).text
        assert row["completion"] == humaneval.postprocess("single-line", alone)


def test_format_is_for_infill_checkpoints_only(tmp_path, capsys, monkeypatch):
    from infill.engines import load

    class Other:  # any engine that is not a LocalEngine
        name, device = "other", "cpu"

    monkeypatch.setattr(load, "load_engine", lambda *a, **k: Other())
    code = cli.main(["eval", "humaneval-infilling", "--format", "l2r", "--model", "x", "--out", str(tmp_path),
                     "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--format applies to infill checkpoints" in err


def test_sampling_gives_pass_at_k_keys(tmp_path, tiny_checkpoint, capsys):
    code = cli.main(["eval", "humaneval-infilling", "--split", "random-span-light", "--model", str(tiny_checkpoint),
                     "--limit", "1", "--samples", "2", "--temperature", "0.8", "--max-tokens", "8",
                     "--out", str(tmp_path), "--quiet"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["samples"] == 2 and "pass@1" in summary


def test_splits_are_the_four_standard_files():
    assert list(SPLITS) == ["single-line", "multi-line", "random-span", "random-span-light"]


def test_eval_without_a_command_prints_help(capsys):
    assert cli.main(["eval"]) == 2
    assert "humaneval-infilling" in capsys.readouterr().out


def test_middle_bpb_scores_the_canonical_middle(tmp_path, tiny_checkpoint, capsys):
    import torch

    from infill import formats
    from infill.engines.local import LocalEngine
    from infill.generation import score

    code = cli.main(["eval", "middle-bpb", "--model", str(tiny_checkpoint), "--limit", "3", "--out", str(tmp_path / "m"),
                     "--quiet"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["eval"] == "middle-bpb" and summary["tasks"] == 3 and summary["format"] == "spm"
    rows = [json.loads(x) for x in (tmp_path / "m" / "tasks.jsonl").read_text().splitlines()]
    # by hand for the first task: the SPM prompt, then the middle's own tokens
    task = load_humaneval_infilling("single-line")[0]
    engine = LocalEngine.from_dir(tiny_checkpoint)
    prompt = formats.infill_prompt(engine.tokenizer, "spm", task["prompt"], task["suffix"], ext=".py")
    with torch.no_grad():
        [lp] = score(engine.model, prompt, [engine.tokenizer.encode(task["canonical_solution"])])
    assert rows[0]["bits"] == pytest.approx(-lp / math.log(2), rel=1e-4)
    assert summary["bits_per_byte"] == pytest.approx(sum(r["bits"] for r in rows) / sum(r["bytes"] for r in rows),
                                                     rel=1e-3)
    # the prefix-only format never sees the suffix, and gives another figure
    code = cli.main(["eval", "middle-bpb", "--format", "l2r", "--model", str(tiny_checkpoint), "--limit", "3",
                     "--out", str(tmp_path / "l"), "--quiet"])
    l2r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and l2r["format"] == "l2r" and l2r["bits_per_byte"] != summary["bits_per_byte"]

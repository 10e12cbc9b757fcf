"""Pipeline: resume after a kill, Slurm job scripts (not submitted), Ray on this machine."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.data.config import DataConfig
from train.data.harvest import local_source
from train.data.pipeline import ClusterConfig, build, stages
from train.data.shards import read_shards

from .test_data_cli import OLD_PIPELINE_REMOVED, tree  # noqa: F401  (the fixture corpus)

REPO = Path(__file__).resolve().parents[2]


def _argv(tree, out):
    return [sys.executable, "-m", "infill.cli", "data", "build", str(tree / "src" / "mitlib"),
            str(tree / "src" / "gpllib"), "--out", str(out), "--workers", "2", "--tasks", "2",
            "--val-fraction", "0", "--quiet"]


def _corpus(out: Path) -> tuple[list[dict], dict]:
    report = json.loads((out / "report.json").read_text())
    for key in ("elapsed_s", "sources"):
        report.pop(key)
    return list(read_shards(str(out))), report


def test_a_killed_build_resumes_and_equals_an_uninterrupted_one(tree):  # noqa: F811
    """Also: the number of tasks does not change the corpus."""
    whole, killed = tree / "whole", tree / "killed"
    assert subprocess.run(_argv(tree, whole), cwd=REPO, timeout=600).returncode == 0

    proc = subprocess.Popen(_argv(tree, killed), cwd=REPO, start_new_session=True)
    first = killed / "work" / "logs" / "1-curate" / "completions"
    deadline = time.monotonic() + 300
    while not (first.is_dir() and len(list(first.iterdir())) == 2):  # stage 1 done: kill in stage 2+
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "report.json").exists()
    marks = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}

    assert subprocess.run(_argv(tree, killed), cwd=REPO, timeout=600).returncode == 0
    # The finished tasks were not run again, and the result is the uninterrupted build's.
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == marks
    rows, report = _corpus(killed)
    assert (rows, report) == _corpus(whole)
    assert report["removed"] == OLD_PIPELINE_REMOVED
    assert not (killed / "work" / "curated").exists()  # intermediate data deleted, logs kept

    # Another number of tasks cuts the input elsewhere: the same rows, in the same order.
    three = tree / "three"
    argv = _argv(tree, three)
    argv[argv.index("--tasks") + 1] = "3"
    assert subprocess.run(argv, cwd=REPO, timeout=600).returncode == 0
    rows3, report3 = _corpus(three)
    assert rows3 == rows and report3["removed"] == report["removed"] and report3["kept"] == report["kept"]


SBATCH = """#!/bin/sh
# Records each submission (arguments, then the script) and answers as sbatch does.
n=$(ls "$SBATCH_LOG" | wc -l)
id=$((1000 + n))
{ echo "$@"; cat "$(eval echo \\${$#})"; } > "$SBATCH_LOG/$id"
echo "Submitted batch job $id"
"""


def test_slurm_job_scripts_chain_the_stages(tree, tmp_path, monkeypatch):  # noqa: F811
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    log.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(log))
    out = tmp_path / "corpus"
    sources = [local_source(str(tree / "src" / "mitlib"))]
    cluster = ClusterConfig(partition="cpu", time="01:00:00", env_command="source /opt/venv/bin/activate")
    assert build(sources, str(out), DataConfig(), executor="slurm", tasks=4, workers=3, cluster=cluster) is None

    jobs = [(log / name).read_text() for name in sorted(os.listdir(log))]
    work = [j for j in jobs if "launch_pickled_pipeline" in j]
    merges = [j for j in jobs if "merge_stats" in j]
    names = [name for name, _, _ in stages(None, str(out), DataConfig(), 4)]
    assert len(work) == len(merges) == len(names) == 7
    ids = [str(1000 + jobs.index(j)) for j in work]
    for i, (job, name, (_, _, tasks)) in enumerate(zip(work, names, stages(None, str(out), DataConfig(), 4))):
        args, script = job.split("\n", 1)
        # One array job per stage: as many array tasks as the stage has tasks, at most 3 at once,
        # each stage after the one before it has finished.
        assert f"#SBATCH --array=0-{tasks - 1}%3" in script
        assert "#SBATCH --partition=cpu" in script and "#SBATCH --time=01:00:00" in script
        assert f"#SBATCH --job-name=infill-{name}" in script
        assert "source /opt/venv/bin/activate" in script
        assert script.count("launch_pickled_pipeline") == 1
        assert str(out / "work" / "logs" / name / "executor.pik") in script
        assert (f"--dependency=afterok:{ids[i - 1]}" in args) == (i > 0)
    assert [t for _, _, t in stages(None, str(out), DataConfig(), 4)] == [4, 1, 4, 25, 1, 4, 1]
    assert not (out / "report.json").exists()


@pytest.mark.slow
def test_ray_on_this_machine_builds_the_same_corpus(tree):  # noqa: F811
    ray = pytest.importorskip("ray")
    sources = [local_source(str(tree / "src" / d)) for d in ("mitlib", "gpllib")]
    config = DataConfig(val_fraction=0)
    build(sources, str(tree / "local"), config, tasks=2, workers=2, progress=False)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        build(sources, str(tree / "ray"), config, executor="ray", tasks=2, workers=2, progress=False)
    finally:
        ray.shutdown()
    local, ray_built = _corpus(tree / "local"), _corpus(tree / "ray")
    for report in (local[1], ray_built[1]):
        report.pop("executor")
    assert ray_built == local
    shutil.rmtree(tree / "ray")

"""Hostile samples (tests/hostile.py) score 0 and change nothing outside the sandbox; canonical
solutions still score 1.0; fallback mode scores nothing unless asked, and then says so everywhere."""
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from hostile import ATTACKS, TASK, Machine, completion, machine_attacks, memory_bomb
from support import leftover, require_sandbox

from infill import cli
from infill.benchmarks import SPLITS, load_humaneval_infilling
from infill.evaluate import humaneval, sandbox
from infill.evaluate.sandbox import SandboxConfig, SandboxError, SandboxUnavailable, run_program

FAST = SandboxConfig(timeout_s=2.0)


@pytest.fixture(scope="module")
def task():
    return next(t for t in load_humaneval_infilling("single-line") if t["task_id"] == TASK)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    home, outside = tmp_path / "home", tmp_path / "outside"
    home.mkdir(mode=0o777)
    outside.mkdir(mode=0o777)
    monkeypatch.setenv("HOME", str(home))
    m = Machine(home, outside)
    yield m
    m.clean()


def test_the_task_passes_with_its_canonical_middle(task):
    require_sandbox()
    assert run_program(humaneval.program(task, task["canonical_solution"]), FAST).passed
    assert not run_program(humaneval.program(task, "    return None\n"), FAST).passed


@pytest.mark.parametrize("name", [*ATTACKS, "write into $HOME, ~/.bashrc and every mount",
                                  "connect to a host Unix socket", "read the benchmark files for the answer"])
def test_hostile_sample_scores_zero_and_changes_nothing(name, task, machine):
    require_sandbox()
    code = {**ATTACKS, **machine_attacks(machine)}[name]
    tag = f"infill-hostile-{uuid.uuid4().hex}"
    result = run_program(humaneval.program(task, completion(code)), SandboxConfig(timeout_s=3.0), tag=tag)
    assert result.status in ("failed", "timeout") and result.sandboxed, result
    assert machine.changed() == []
    deadline = time.monotonic() + 30
    while leftover(tag) and time.monotonic() < deadline:  # reaping can lag on a loaded machine
        time.sleep(0.1)
    assert leftover(tag) == []
    assert run_program("pass\n", FAST).passed  # the harness still works


def test_the_attacks_are_real_without_the_audit_hook(task, monkeypatch):
    """With the hook taken out of the wrapper, the frame walk finds the secret and passes: the attack
    is a real one, and the hook is what stops it."""
    require_sandbox()
    assert "    sys.addaudithook(hook)\n" in sandbox._BOOT
    monkeypatch.setattr(sandbox, "_BOOT", sandbox._BOOT.replace("    sys.addaudithook(hook)\n", ""))
    result = run_program(humaneval.program(task, completion(ATTACKS["frame walk to the wrapper's locals"])), FAST)
    assert result.passed


def test_memory_bomb_across_forked_children_is_held_per_sample():
    """Six children of 100 MB each: 600 MB without a per-sample limit (the control run), at most the
    200 MB of the sample's cgroup with one, although each child alone is under its rlimit."""
    require_sandbox()
    free = run_program(memory_bomb(6, 100), SandboxConfig(timeout_s=30, memory_mb=1024))
    assert free.memory_peak_bytes is not None and free.memory_peak_bytes > 550 * 2**20
    held = run_program(memory_bomb(6, 100), SandboxConfig(timeout_s=30, memory_mb=200))
    assert held.memory_peak_bytes is not None and held.memory_peak_bytes <= 200 * 2**20
    assert not held.passed and not free.passed  # both end in os._exit(0), which never passes


def test_the_sample_sees_only_its_program_and_the_runtime(tmp_path):
    require_sandbox()
    src = r"""
import os
seen = []
for root, dirs, files in os.walk("/"):
    if root == "/proc":
        dirs[:] = []
        continue
    seen += [os.path.join(root, f) for f in files]
bad = [p for p in seen if "infill" in p.lower() or "humaneval" in p.lower() or p.endswith(".jsonl.gz")]
assert not bad, bad[:5]
assert os.listdir("/sandbox") == ["program.py"], os.listdir("/sandbox")
assert os.listdir("/tmp") == [], os.listdir("/tmp")
assert not os.path.exists(REPO) and not os.path.exists(HOSTTMP)
assert set(os.listdir("/")) <= {"usr", "lib", "lib64", "root", "sandbox", "proc", "tmp", "home", "opt"}, os.listdir("/")
pids = [p for p in os.listdir("/proc") if p.isdigit()]
assert len(pids) <= 3, pids  # bwrap and the interpreter: the sample's own PID namespace
for root, dirs, files in os.walk("/"):
    if root == "/proc":
        dirs[:] = []
    ro = bool(os.statvfs(root).f_flag & os.ST_RDONLY)
    assert ro == (root != "/tmp" and not root.startswith("/tmp/")), root
"""
    src = f"REPO = {str(Path(__file__).resolve().parents[2])!r}\nHOSTTMP = {str(tmp_path)!r}\n" + src
    result = run_program(src, SandboxConfig(timeout_s=20))
    assert result.passed, result.detail


def test_no_network():
    require_sandbox()
    src = ("import socket\nassert [n for _, n in socket.if_nameindex()] == ['lo']\ns = socket.socket()\n"
           "s.settimeout(1)\ntry:\n    s.connect(('1.1.1.1', 80))\nexcept OSError:\n    pass\nelse:\n"
           "    raise AssertionError('connected')\n")
    assert run_program(src, FAST).passed


def test_a_mount_that_fails_stops_the_run(monkeypatch, tmp_path):
    require_sandbox()
    real = sandbox._bwrap_args
    monkeypatch.setattr(sandbox, "_bwrap_args", lambda *a: real(*a)[:1] + ["--ro-bind", str(tmp_path / "nope"),
                                                                          "/x"] + real(*a)[1:])
    with pytest.raises(SandboxError, match="could not be set up"):
        run_program("pass\n", FAST)


def test_a_writable_mount_stops_the_run(monkeypatch, tmp_path):
    require_sandbox()
    real = sandbox._bwrap_args
    monkeypatch.setattr(sandbox, "_bwrap_args",
                        lambda *a: _insert_before_remount(real(*a), ["--bind", str(tmp_path), "/w"]))
    with pytest.raises(SandboxError, match="mount /w is writable"):
        run_program("pass\n", FAST)
    assert list(tmp_path.iterdir()) == []


def _insert_before_remount(args: list[str], extra: list[str]) -> list[str]:
    i = args.index("--remount-ro", args.index("/tmp"))  # the root's remount comes after /tmp
    return args[:i] + extra + args[i:]


# -------------------------------------------------------------------------------- fallback and unsafe

@pytest.fixture
def no_sandbox(monkeypatch):
    unavailable = {**sandbox.protections(), "mode": "unavailable", "reason": "forced by the test"}
    monkeypatch.setattr(sandbox, "protections", lambda: unavailable)
    monkeypatch.setattr(humaneval, "protections", lambda: unavailable)


def _samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fallback_scores_nothing_without_the_flag(no_sandbox, tmp_path, capsys, task):
    with pytest.raises(SandboxUnavailable, match="forced by the test"):
        run_program("pass\n", FAST)
    path = _samples(tmp_path / "s.jsonl", [{"task_id": TASK, "completion": task["canonical_solution"]}])
    code = cli.main(["eval", "score", "--samples", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--unsafe-no-sandbox" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "summary.json").exists()


def test_unsafe_mode_marks_every_figure(no_sandbox, tmp_path, capsys, task):
    rows = [{"task_id": TASK, "completion": task["canonical_solution"]},
            {"task_id": TASK, "completion": completion(ATTACKS["os._exit(0)"])}]
    path = _samples(tmp_path / "s.jsonl", rows)
    code = cli.main(["eval", "score", "--samples", str(path), "--out", str(tmp_path / "run"), "--quiet",
                     "--unsafe-no-sandbox"])
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["unsandboxed"] is True and "UNSANDBOXED" in summary["warning"]
    assert summary["pass@1"] == 0.5  # the verdict still holds there: os._exit(0) is no pass
    lines = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines] == ["passed", "failed"] and all(r["sandboxed"] is False for r in lines)
    assert cli.main(["eval", "report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")]) == 0
    table = [x for x in (tmp_path / "rep" / "report.md").read_text().splitlines() if "measured here" in x and x.startswith("|")]
    assert table and all("UNSANDBOXED" in x for x in table)


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("line, message", [
    ({"task_id": TASK, "completion": 3}, ":2: completion must be a string"),
    ({"task_id": TASK, "completion": None}, ":2: completion must be a string"),
    ({"task_id": "SingleLineInfilling/HumanEval/999/L9", "completion": ""}, ":2: task"),
    ({"task_id": ["x"], "completion": ""}, ":2: task"),
    ([1, 2], ":2: expected a JSON object"),
    ("{not json", ":2: expected a JSON object"),
])
def test_bad_sample_lines_are_one_line_errors_naming_the_line(tmp_path, capsys, line, message):
    path = tmp_path / "s.jsonl"
    first = json.dumps({"task_id": TASK, "completion": "    return 0.5\n"})
    path.write_text(first + "\n" + (line if isinstance(line, str) else json.dumps(line)) + "\n")
    code = cli.main(["eval", "score", "--samples", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{path}{message}" in err, err


def test_a_bad_first_line_is_named_when_guessing_the_split(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    path.write_text("\n[1]\n")
    assert cli.main(["eval", "score", "--samples", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------- canonical: slow

@pytest.mark.slow
@pytest.mark.parametrize("split", list(SPLITS))
def test_every_canonical_solution_scores_100(split):
    """Every task's canonical program passes; tasks whose program is the same text (the same problem
    cut elsewhere: 287 programs for 1,033 single-line tasks) are run once."""
    require_sandbox()
    tasks = load_humaneval_infilling(split)
    unique = {humaneval.program(t, t["canonical_solution"]): t for t in tasks}
    summary = humaneval.score([(t, [t["canonical_solution"]]) for t in unique.values()], None,
                              workers=os.cpu_count() or 2, progress=False)
    assert summary["pass@1"] == 1.0 and summary["tasks"] == len(unique), summary["statuses"]


def test_ci_fails_rather_than_skips_without_a_sandbox(no_sandbox, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="forced by the test"):
        require_sandbox()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_sandbox()


def test_the_main_thread_signal_block_is_what_stops_the_gc_callback_attack(task, monkeypatch):
    """A gc callback that the main thread runs (woken by SIGINT, it collects while raising) reaches
    the wrapper's frame through a signal handler; with the main thread's signals left alone it passes."""
    require_sandbox()
    block = ("    sigmask, unblocked = signal.pthread_sigmask, "
             "signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())\n")
    ignore = "    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    assert block in sandbox._BOOT and ignore in sandbox._BOOT
    # "left alone" whatever the test process passed down (a mask and an ignored SIGINT survive exec)
    weak = sandbox._BOOT.replace(block, "    sigmask, unblocked = (lambda *a: None), None\n"
                                        "    signal.pthread_sigmask(signal.SIG_SETMASK, set())\n").replace(
        ignore, "    signal.signal(signal.SIGINT, signal.default_int_handler)\n")
    attack = completion(ATTACKS["a gc callback run on the wrapper's main thread, then a signal-handler frame"])
    assert not run_program(humaneval.program(task, attack), FAST).passed
    monkeypatch.setattr(sandbox, "_BOOT", weak)
    # the attack races a timer against the interpreter: on a loaded machine one try can miss or run
    # past FAST's 2 s, so the weakened wrapper gets a roomy timeout and three tries to be beaten
    roomy = SandboxConfig(timeout_s=30.0)
    assert any(run_program(humaneval.program(task, attack), roomy).passed for _ in range(3))

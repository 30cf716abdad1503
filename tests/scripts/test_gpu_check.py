"""scripts/gpu_check.py, the check a lent GPU machine runs: its dry run on the simulated GPU end to end (so that on
a real GPU the only unknown is the GPU), and the rules that make it fit a lease: a stage limited to the time left,
one that does not fit skipped with the seconds left, a command past its limit killed, and at most 8 files."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import gpu_check  # noqa: E402  (scripts/ is not a package: its entry points import their neighbours so)
import gpu_check_stages  # noqa: E402
from gpu_check_stages import NotRun, Stage  # noqa: E402


@pytest.mark.slow
def test_the_dry_run_runs_every_stage_on_the_simulated_gpu(tmp_path):
    """Every stage ran or said why not, the whole in the budget, at most 8 files back, and a log with every stage."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(SCRIPTS.parent))
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--budget-s", "240"], env=env, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = json.loads((out / gpu_check.SUMMARY).read_text())
    assert summary["device"] == "simgpu" and summary["dry_run"] and summary["passed"]
    stages = {s["stage"]: s for s in summary["stages"]}
    assert list(stages) == [s.name for s in gpu_check_stages.STAGES]
    for s in stages.values():
        assert s["status"] in ("passed", "skipped") and s["result"].strip(), s
        assert s["status"] != "passed" or s["exit"] == 0
    # What needs real hardware says so; everything else really ran on the simulated GPU.
    assert {n for n, s in stages.items() if s["status"] == "skipped"} == {"fuzz", "memcheck"}
    assert all(stages[n]["result"].startswith(gpu_check_stages.SIMULATED) for n in ("fuzz", "memcheck"))
    assert "not on the simulated GPU" in stages["environment"]["result"]
    assert "resumed" in stages["train"]["result"] and "DIFFERS" not in stages["train"]["result"]
    assert "every dtype ok" in stages["nccl"]["result"]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == summary["files"] and len(files) <= gpu_check.MAX_FILES
    assert set(files) == {gpu_check.LOG, gpu_check.SUMMARY, gpu_check_stages.BENCH_JSON,
                          gpu_check_stages.TRAIN_METRICS}
    log = (out / gpu_check.LOG).read_text()
    assert all(f"===== {name} " in log for name in stages)
    assert summary["wall_s"] <= 240 and wall < 240
    assert "stage        status" in done.stdout  # the table


@pytest.fixture
def check(tmp_path):
    with open(tmp_path / "log", "w", encoding="utf-8") as log:
        yield gpu_check.Check("simgpu", True, tmp_path, tmp_path, log)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by whoever adopted it, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_stage_that_does_not_fit_is_skipped_with_the_seconds_left(check):
    ran = []
    stages = [Stage("first", 10, 1, lambda check: (ran.append("first") or 0, "ok")),
              Stage("big", 100, 50, lambda check: (ran.append("big") or 0, "ok")),
              Stage("last", 10, 1, lambda check: (ran.append("last") or 0, "ok"))]
    results = gpu_check.run_stages(stages, check, budget_s=20, echo=lambda line: None)
    assert ran == ["first", "last"]
    big = results[1]
    assert big.status == "skipped" and big.exit is None
    left = int(big.result.split("skipped: ")[1].split(" s left")[0])
    assert 20 - gpu_check.MARGIN_S - 2 <= left <= 20 - gpu_check.MARGIN_S  # less the margin and what "first" took


def test_a_command_past_its_stage_limit_is_stopped_and_the_next_stage_runs(check):
    """A stage's command gets min(cap, time left); past it the command and what it started are killed, even what
    ignores SIGTERM."""
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    sleeper = [sys.executable, "-c", "import subprocess, sys, time; print('child', subprocess.Popen("
               f"[sys.executable, '-c', {stubborn!r}]).pid, flush=True); time.sleep(60)"]
    children = []

    def slow(check):
        ran = check.run(*sleeper)
        children.append(int(ran.output.split("child ")[1].split()[0]))
        return ran.exit, "slept"

    def raises(check):
        raise RuntimeError("planted")

    def not_here(check):
        raise NotRun("no such tool here")

    stages = [Stage("slow", 2, 1, slow), Stage("raises", 5, 1, raises), Stage("absent", 5, 1, not_here),
              Stage("after", 5, 1, lambda check: (check.run(sys.executable, "-c", "print('hi')").exit, "ran"))]
    start = time.monotonic()
    results = gpu_check.run_stages(stages, check, budget_s=60, echo=lambda line: None)
    assert time.monotonic() - start < 15 and not alive(children[0])
    assert [(r.status, r.exit) for r in results] == [("timed out", 124), ("failed", None), ("skipped", None),
                                                     ("passed", 0)]
    assert "RuntimeError: planted" in results[1].result and results[2].result == "no such tool here"
    assert results[0].seconds < 10


@pytest.mark.parametrize("already, code", [(5, 0), (7, 1)])
def test_more_than_8_files_in_the_out_folder_fails_the_check(tmp_path, monkeypatch, capsys, already, code):
    """The log and the summary with ``already`` files: 7 and 9 files. A machine gives back 8, so 9 is an error."""
    monkeypatch.setattr(gpu_check_stages, "STAGES", [Stage("one", 5, 1, lambda check: (0, "ok"))])
    for i in range(already):
        (tmp_path / f"extra{i}.txt").write_text("x")
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--budget-s", "30"]) == code
    summary = json.loads((tmp_path / gpu_check.SUMMARY).read_text())
    assert len(summary["files"]) == already + 2
    assert ("more than the 8 a lent machine gives back" in capsys.readouterr().err) == bool(code)


def test_pytest_line_is_pytests_closing_count():
    output = "....\nFAILED tests/x.py::t - boom\n==== 1 failed, 207 passed, 3 skipped in 80.1s ====\n"
    assert gpu_check_stages.pytest_line(output) == "1 failed, 207 passed, 3 skipped in 80.1s"
    assert gpu_check_stages.pytest_line("Traceback ...") == "pytest printed no count"
    stopped = "$ python -m pytest -q -m gpu tests\n....F.s.. [ 10%]\n..E\n(stopped: past the stage's limit of 9 s)\n"
    assert gpu_check_stages.pytest_line(stopped) == "no count printed; so far 9 passed, 1 failed, 1 errors, 1 skipped"


def test_only_runs_the_named_stages_and_refuses_an_unknown_one(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(gpu_check_stages, "STAGES", [Stage(n, 5, 1, lambda check, n=n: (ran.append(n) or 0, "ok"))
                                                     for n in ("a", "b", "c")])
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--budget-s", "30", "--only", "c,a"]) == 0
    assert ran == ["a", "c"]  # in the stages' order
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run", "--out", str(tmp_path), "--only", "a,z"])
    assert "unknown stages ['z']" in capsys.readouterr().err


CLEAN = "========= COMPUTE-SANITIZER\nkernels: 52 loaded in float32; every op ran\n========= ERROR SUMMARY: 0 errors\n"
OVERRUN = ("========= Invalid __global__ read of size 4 bytes\n=========     at softmax_warp+0x1f0\n"
           "========= ERROR SUMMARY: 2 errors\n")
REFUSED = "========= COMPUTE-SANITIZER\n========= Error: Device not supported\n"


@pytest.mark.parametrize("output, code, status, said", [
    (CLEAN, 0, ("passed", 0), "memcheck: 0 errors (pools off); kernels: 52 loaded"),
    (OVERRUN, 9, ("failed", 9), "memcheck: 2 errors"),
    (REFUSED, 1, ("skipped", None), "compute-sanitizer refused to run it: ========= Error: Device not supported"),
    ("Segmentation fault\n", 139, ("skipped", None), "compute-sanitizer refused to run it: no error summary"),
    (CLEAN.replace("every op ran", "2 FAILURES"), 1, ("failed", 1), "memcheck: 0 errors, but the kernel program"),
    (CLEAN, 124, ("timed out", 124), "memcheck ran out of time")])
def test_memcheck_fails_on_errors_and_says_when_the_sanitizer_refuses(check, output, code, status, said):
    """What memcheck found fails the check; a sanitizer that refuses the device (some hosts) or dies is said."""
    stage = Stage("memcheck", 5, 1, lambda c: gpu_check_stages.judge_memcheck(gpu_check.Ran(code, output, 1.0)))
    result, = gpu_check.run_stages([stage], check, budget_s=30, echo=lambda line: None)
    assert (result.status, result.exit) == status and result.result.startswith(said), result

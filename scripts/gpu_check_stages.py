"""The stages of scripts/gpu_check.py, most valuable first: what a lent GPU must show before anything else is
worth its time. Each is ``run(check) -> (exit status, one-line result)`` with ``check.run(...)`` for its commands
(limited to the stage's time) and raises NotRun where it does not apply here (the reason is its result).

``cap_s`` is the most a stage may take, ``min_s`` the least that makes it worth starting.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
SIMULATED = "not on the simulated GPU"
BENCH_JSON, TRAIN_METRICS = "bench.json", "train_metrics.json"


class NotRun(Exception):
    """A stage that does not apply here (the simulated GPU, a tool that is absent or refuses): the reason."""


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    cap_s: int
    min_s: int
    run: Callable


def pytest_line(output: str) -> str:
    """pytest's closing count ("207 passed, 3 skipped in 80.1s"); where it was stopped before printing one, what
    its progress dots say so far."""
    counts = re.compile(r"\b\d+ (passed|failed|skipped|errors?|deselected|xfailed|xpassed|tests? collected)\b")
    found = [line.strip(" =") for line in output.splitlines() if counts.search(line)]
    if found:
        return found[-1]
    progress = "".join(m[1] for m in re.finditer(r"^([.sFExX]+)\s*(?:\[\s*\d+%\])?$", output, re.M))
    if not progress:
        return "pytest printed no count"
    seen = {"passed": ".", "failed": "F", "errors": "E", "skipped": "s"}
    return "no count printed; so far " + ", ".join(f"{progress.count(c)} {w}" for w, c in seen.items())


def pytest(check, *args):
    return check.run(check.python, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *args)


def environment(check):
    """The machine: nvidia-smi where there is one, the versions, CuPy's configuration, gpunet's own view."""
    gpu = SIMULATED
    if not check.dry_run:
        if shutil.which("nvidia-smi"):
            check.run("nvidia-smi")
            query = check.run("nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader")
            said = query.output.strip().splitlines()
            gpu = said[0] if query.exit == 0 and said else f"nvidia-smi failed (exit {query.exit})"
        else:
            gpu = "no nvidia-smi on PATH"
    versions = check.run(check.python, "-c", VERSIONS, "show" if not check.dry_run else "")
    info = check.run(check.python, "-m", "gpunet", "info")
    found = dict(re.findall(r"^(\w[\w-]*) (\S+)$", versions.output, re.M))
    line = (f"nvidia-smi: {gpu}; python {found.get('python', '?')}, numpy {found.get('numpy', '?')}, cupy "
            f"{found.get('cupy', '?')}, torch {found.get('torch', '?')}; gpunet info exit {info.exit}")
    return max(versions.exit, info.exit), line


VERSIONS = """
import importlib, platform, sys
print("python", platform.python_version())
for name in ("numpy", "cupy", "torch", "mpi4py", "pytest", "hypothesis"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "absent")
        print("   ", type(exc).__name__, exc)
if sys.argv[1:] == ["show"]:
    try:
        import cupy
        cupy.show_config()
    except Exception as exc:
        print("cupy.show_config() failed:", type(exc).__name__, exc)
"""


def kernels(check):
    """Every kernel compiles and loads in every dtype, every row op runs with the CPU's NaN/inf pattern, and the
    parity tests judge each value against the CPU (on the simulated GPU: a fast subset of each)."""
    small = ["--dtypes", "float32", "--max-cols", "1000"] if check.dry_run else []
    program = check.run(check.python, "scripts/gpu_check_kernels.py", "--device", check.device, *small)
    selection = ["-k", "simgpu and test_activations"] if check.dry_run else ["-m", "gpu"]
    parity = pytest(check, "tests/ops/test_parity.py", *selection)
    last = program.output.strip().splitlines()[-1] if program.output.strip() else "no output"
    return program.exit or parity.exit, f"{last}; test_parity: {pytest_line(parity.output)}"


def gpu_tests(check):
    """The gpu-marked tests (the stand-in's conformance tests among them) but test_parity: the kernels stage ran it."""
    ran = pytest(check, "-m", "gpu", "tests", "--ignore", "tests/ops/test_parity.py")
    return ran.exit, pytest_line(ran.output) + (" (no GPU here: every gpu test skips)" if check.dry_run else "")


def train(check):
    """MNIST (spiral on the simulated GPU) for an epoch on the device, resumed for a second, and the checkpoint
    evaluated on the CPU: the same accuracy, to a sample or 0.1% of the test set."""
    run_dir, dataset = check.work / "run", "spiral" if check.dry_run else "mnist"
    common = [check.python, "-m", "gpunet", "train", "--dataset", dataset, "--device", check.device,
              "--no-progress", "--out", run_dir]
    first = check.run(*common, "--epochs", "1")
    if first.exit:
        return first.exit, f"train failed (exit {first.exit})"
    again = check.run(*common, "--epochs", "2", "--resume")
    if again.exit:
        return again.exit, f"resume failed (exit {again.exit})"
    shutil.copy(run_dir / "metrics.json", check.out / TRAIN_METRICS)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epochs = [entry["epoch"] for entry in metrics["history"]]
    ev = check.run(check.python, "-m", "gpunet", "eval", "--device", "cpu", run_dir / "checkpoint.npz")
    found = re.search(r"test accuracy ([\d.]+)% \((\d+) samples\)", ev.output)
    if ev.exit or not found:
        return ev.exit or 1, f"eval on cpu failed (exit {ev.exit})"
    trained, on_cpu, samples = 100 * metrics["test_accuracy"], float(found[1]), int(found[2])
    agree = abs(trained - on_cpu) <= max(100 / samples, 0.1) + 1e-9
    resumed = "resumed from" in again.output and epochs == [1, 2]
    line = (f"{dataset} on {metrics['device']}: epochs {epochs}, {'resumed' if resumed else 'NOT resumed'}, "
            f"test accuracy {trained:.2f}%, on cpu {on_cpu:.2f}%{'' if agree else ' (DIFFERS)'}")
    return 0 if agree and resumed else 1, line


def nccl(check):
    """One MPI rank, the GPU communicator (NCCL), a sum and a broadcast of each dtype (scripts/gpu_check_nccl.py)."""
    beside = Path(check.python).parent / "mpiexec"
    mpiexec = str(beside) if beside.is_file() else shutil.which("mpiexec")
    if mpiexec is None:
        raise NotRun("no mpiexec (pip install 'gpunet[mpi]'): the communicator needs MPI to start")
    ran = check.run(mpiexec, "-n", "1", check.python, "-m", "mpi4py", "scripts/gpu_check_nccl.py",
                    "--device", check.device)
    last = [line for line in ran.output.splitlines() if line.startswith(("nccl:", "FAILED"))]
    return ran.exit, last[-1] if last else f"exit {ran.exit}, no result line"


def bench(check):
    """The bench, quick, one round; on the simulated GPU (which has no speed) the CPU's row ops, to prove the
    command and its JSON."""
    where = ["--devices", "cpu", "--skip-training", "--threads", "1"] if check.dry_run else \
        ["--devices", check.device.split(":")[0]]
    ran = check.run(check.python, "scripts/bench", "--quick", "--rounds", "1", "--json", check.out / BENCH_JSON,
                    *where)
    path = check.out / BENCH_JSON
    sections = json.loads(path.read_text()) if path.is_file() else {}
    rows = ", ".join(f"{len(v)} {k} rows" for k, v in sections.items() if isinstance(v, list)) or "no rows"
    note = " (dry run: the bench times cpu and cuda only, so the CPU's)" if check.dry_run else ""
    return ran.exit, f"{BENCH_JSON}: {rows}{note}"


def fuzz(check):
    """The fuzzer's "cpu" group, which compares the cuda form too where a GPU is present (tests/helpers.HAS_GPU)."""
    selection = ["tests/ops/test_fuzz.py", "-k", "test_fuzz and cpu"]
    if check.dry_run:
        ran = pytest(check, "--collect-only", *selection)
        if ran.exit:
            return ran.exit, f"collecting the fuzzer failed: {pytest_line(ran.output)}"
        raise NotRun(f"{SIMULATED}: its cuda form needs a GPU that probe_cuda finds ({pytest_line(ran.output)})")
    ran = pytest(check, "-x", *selection)
    return ran.exit, pytest_line(ran.output)


def memcheck(check):
    """compute-sanitizer's memcheck over the kernel program with CuPy's pools off (inside a pooled block an overrun
    is invisible to it). A sanitizer that is absent or refuses the device is said, not failed."""
    if check.dry_run:
        raise NotRun(SIMULATED)
    tool = shutil.which("compute-sanitizer") or next(
        (str(p) for p in (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "compute-sanitizer",
                          Path("/usr/local/cuda/bin/compute-sanitizer")) if p.is_file()), None)
    if tool is None:
        raise NotRun("no compute-sanitizer on PATH, in $CUDA_HOME/bin or /usr/local/cuda/bin")
    ran = check.run(tool, "--tool", "memcheck", "--error-exitcode", "9", "--leak-check", "no", check.python,
                    "scripts/gpu_check_kernels.py", "--device", check.device, "--no-pool", "--dtypes", "float32")
    return judge_memcheck(ran)


def judge_memcheck(ran):
    """Errors memcheck found fail the stage; a sanitizer that could not run the program (it said "Error:", or
    printed no summary) is said, not failed; a program that failed under it fails the stage."""
    if ran.timed_out:
        return 124, "memcheck ran out of time"
    summary = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) errors?", ran.output)]
    if summary and summary[-1]:
        return ran.exit or 1, f"memcheck: {summary[-1]} errors (pools off; the log names them)"
    refused = [line for line in ran.output.splitlines() if line.startswith("=========") and "Error:" in line]
    if refused or not summary:
        said = refused[0] if refused else f"no error summary, exit {ran.exit}"
        raise NotRun(f"compute-sanitizer refused to run it: {said}")
    if ran.exit:
        return ran.exit, f"memcheck: 0 errors, but the kernel program failed under it (exit {ran.exit})"
    last = [line for line in ran.output.splitlines() if line.startswith("kernels:")]
    return 0, f"memcheck: 0 errors (pools off); {last[-1] if last else 'the kernel program ran'}"


STAGES = [
    Stage("environment", 30, 5, environment),
    Stage("kernels", 100, 20, kernels),
    Stage("gpu-tests", 150, 30, gpu_tests),
    Stage("train", 90, 30, train),
    Stage("nccl", 45, 10, nccl),
    Stage("bench", 90, 30, bench),
    Stage("fuzz", 120, 30, fuzz),
    Stage("memcheck", 120, 30, memcheck),
]


def scratch():
    """A folder outside the out folder for what must not come back (the run's checkpoint, the tests' files)."""
    return tempfile.TemporaryDirectory(prefix="gpu_check-")


def commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    return None

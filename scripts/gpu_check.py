#!/usr/bin/env python3
"""Check gpunet on a lent GPU machine in one command that fits its lease: at most --budget-s seconds (5 minutes by
default: a lease gives 15 minutes in all, 10 per command, the machine's start takes 1-2, and a rerun must fit) and
at most 8 files under the out folder (what such a machine gives back).

    python scripts/gpu_check.py [--device cuda] [--budget-s 300] [--out DIR]    # DIR defaults to $OUT
    python scripts/gpu_check.py --only fuzz,memcheck                             # a rerun of some stages
    python scripts/gpu_check.py --dry-run --out /tmp/check                      # the same on the simulated GPU

Stages run in order of value (scripts/gpu_check_stages.py), each limited to the smaller of its own cap and the time
left; one that cannot have its minimum says "skipped: N s left", and one failing does not stop the others. Every
command's output goes to one log with a header per stage (gpu_check.log); the stages' exit status, seconds and
one-line result go to summary.json and to the table printed at the end. The bench writes bench.json and the
training stage copies its run's metrics.json: four files in all. ``--dry-run`` runs every stage on the simulated
GPU (device ``simgpu``) with tiny shapes, and says of the stages that need the hardware that they are not run on
it; CI runs it (tests/scripts/test_gpu_check.py), so that on a real GPU the only unknown is the GPU.

Exit status: 0 when no stage failed or ran out of time, 1 otherwise, 2 for a bad argument.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import gpu_check_stages  # beside this file: scripts/ is sys.path[0]
from gpu_check_stages import NotRun

MAX_FILES = 8            # a lent machine gives back at most this many files from $OUT
LOG, SUMMARY = "gpu_check.log", "summary.json"
KILL_GRACE_S = 5.0       # after SIGTERM, before SIGKILL, for a command past its limit
MARGIN_S = KILL_GRACE_S + 2.0  # kept back from the budget: the last command's kill, then the summary
TAIL_LINES = 12          # of each stage's output, printed as it ends
ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Ran:
    """One command's end: its exit status (124 when it ran out of time) and everything it printed."""
    exit: int
    output: str
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.exit == 124


@dataclasses.dataclass
class Result:
    stage: str
    status: str              # passed, failed, timed out, skipped
    exit: int | None
    seconds: float
    result: str              # one line


class Check:
    """What a stage gets: the device, the out and scratch folders, and ``run`` for its commands, each limited to
    what is left of the stage's time; everything they print goes to the combined log."""

    def __init__(self, device: str, dry_run: bool, out: Path, work: Path, log):
        self.device, self.dry_run, self.out, self.work, self.log = device, dry_run, out, work, log
        self.python = sys.executable
        self.deadline = float("inf")
        self.env = dict(os.environ, PYTHONUNBUFFERED="1",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.env.setdefault("GPUNET_CACHE", "/tmp/gpunet-cache")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def note(self, text: str) -> None:
        self.log.write(text.rstrip("\n") + "\n")
        self.log.flush()

    def size(self) -> int:
        """How many bytes the log holds: where what comes next begins."""
        self.log.flush()
        return os.fstat(self.log.fileno()).st_size

    def since(self, begin: int) -> str:
        """What the log got after byte ``begin``."""
        self.log.flush()
        with open(self.log.name, "rb") as f:
            f.seek(begin)
            return f.read().decode("utf-8", errors="replace")

    def run(self, *command, env: dict | None = None) -> Ran:
        """``command`` from the repository root, killed (its whole process group) at the stage's deadline."""
        command = [str(c) for c in command]
        self.note(f"$ {shlex.join(command)}")
        start, begin = time.monotonic(), self.size()
        limit = self.left()
        if limit <= 0:
            self.note("(not started: no time left)")
            return Ran(124, "", 0.0)
        proc = subprocess.Popen(command, cwd=ROOT, env={**self.env, **(env or {})}, stdout=self.log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            code = 124
            stop(proc)
            self.note(f"(stopped: past the stage's limit of {limit:.0f} s)")
        seconds = time.monotonic() - start
        output = self.since(begin)
        self.note(f"(exit {code}, {seconds:.1f} s)")
        return Ran(code, output, seconds)


def stop(proc: subprocess.Popen) -> None:
    """End a command and everything it started (its own session): SIGTERM, so that it can say where it was, then
    SIGKILL to whatever of the group is left once the command ended or the grace is over."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_stages(stages, check: Check, budget_s: float, echo=print) -> list[Result]:
    """Each stage in order, limited to min(its cap, the time left); skipped where less than its minimum is left."""
    end = time.monotonic() + budget_s - MARGIN_S
    results = []
    for stage in stages:
        left = end - time.monotonic()
        check.note(f"\n===== {stage.name} (cap {stage.cap_s} s, {left:.0f} s left) =====")
        if left < stage.min_s:
            result = Result(stage.name, "skipped", None, 0.0, f"skipped: {max(left, 0):.0f} s left "
                            f"(needs {stage.min_s} s)")
        else:
            check.deadline = time.monotonic() + min(stage.cap_s, left)
            start, begin = time.monotonic(), check.size()
            try:
                code, line = stage.run(check)
                status = "passed" if code == 0 else "timed out" if code == 124 else "failed"
                result = Result(stage.name, status, code, 0.0, line)
            except NotRun as why:
                result = Result(stage.name, "skipped", None, 0.0, str(why))
            except Exception as exc:  # noqa: BLE001 - a broken stage is reported, and the others still run
                result = Result(stage.name, "failed", None, 0.0, f"the stage raised {type(exc).__name__}: {exc}")
            result.seconds = round(time.monotonic() - start, 1)
            for line in check.since(begin).splitlines()[-TAIL_LINES:]:
                echo(f"   {line}")
        check.note(f"----- {stage.name}: {result.status}, {result.seconds} s: {result.result}")
        echo(f"== {stage.name}: {result.status}, {result.seconds} s: {result.result}")
        results.append(result)
    return results


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def table(results: list[Result]) -> str:
    rows = [f"{'stage':12} {'status':10} {'exit':>4} {'seconds':>7}  result"]
    for r in results:
        rows.append(f"{r.stage:12} {r.status:10} {'-' if r.exit is None else r.exit:>4} {r.seconds:7.1f}  {r.result}")
    return "\n".join(rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="the GPU to check (default: cuda; simgpu with --dry-run)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="seconds for the whole check (default 300)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for the log and summary "
                        "(default: $OUT)")
    parser.add_argument("--dry-run", action="store_true",
                        help="the simulated GPU (simgpu), tiny shapes; stages that need hardware say so")
    names = [stage.name for stage in gpu_check_stages.STAGES]
    parser.add_argument("--only", default=None, metavar="STAGES",
                        help=f"comma-separated stages to run, in their order (a rerun of those a first run had no "
                        f"time for): {','.join(names)}")
    args = parser.parse_args(argv)
    args.only = names if args.only is None else [n.strip() for n in args.only.split(",")]
    if set(args.only) - set(names):
        parser.error(f"--only: unknown stages {sorted(set(args.only) - set(names))}; the stages: {', '.join(names)}")
    if not args.out:
        parser.error("--out is needed where $OUT is not set")
    if args.budget_s <= MARGIN_S:
        parser.error(f"--budget-s must exceed {MARGIN_S:g}")
    args.device = args.device or ("simgpu" if args.dry_run else "cuda")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(out / LOG, "w", encoding="utf-8") as log, gpu_check_stages.scratch() as work:
        check = Check(args.device, args.dry_run, out, Path(work), log)
        check.note(f"gpu_check on {args.device}{' (dry run)' if args.dry_run else ''}, budget {args.budget_s:g} s")
        stages = [stage for stage in gpu_check_stages.STAGES if stage.name in args.only]
        results = run_stages(stages, check, args.budget_s)
    failed = [r.stage for r in results if r.status in ("failed", "timed out")]
    summary = {"device": args.device, "dry_run": args.dry_run, "budget_s": args.budget_s,
               "wall_s": round(time.monotonic() - started, 1), "commit": gpu_check_stages.commit(),
               "passed": not failed, "stages": [dataclasses.asdict(r) for r in results]}
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    files = files_under(out)
    summary["files"] = files
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{table(results)}\n\n{len(files)} files in {out}: {', '.join(files)}; "
          f"{summary['wall_s']} s of {args.budget_s:g}")
    if len(files) > MAX_FILES:
        print(f"gpu_check: error: {len(files)} files in {out}, more than the {MAX_FILES} a lent machine gives back",
              file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line: the flags every section shares, each section's own, then either one worker's measurement
(``--worker SECTION``, JSON on the last line) or the run: the machine header, the wanted sections in order, the
JSON file."""
import argparse
import json
import os
import sys
from pathlib import Path

from . import SECTIONS, __doc__ as DESCRIPTION
from .core import Bench
from .report import machine_header


def parser():
    usage = DESCRIPTION.split("\n\nThe package:")[0]  # what a user needs; the rest is for a section's author
    p = argparse.ArgumentParser(prog="python scripts/bench", description=usage,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default="bench.json")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=5,
                   help="runs of each side's workers, alternating the order; the tables give medians over them")
    p.add_argument("--devices", default="cpu,cuda", help="comma-separated devices to bench, of those present "
                   "(simgpu: the simulated GPU, a slow dry run whose host syncs are counted; only by name)")
    p.add_argument("--worker", choices=[s.NAME for s in SECTIONS if hasattr(s, "worker")], help=argparse.SUPPRESS)
    p.add_argument("--framework", choices=("gpunet", "torch", "cupy-naive"), help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    for section in SECTIONS:
        section.add_arguments(p)
    return p


def run_worker(args) -> int:
    """This process is one section's worker: measure, print the rows as JSON (rank 0 alone under MPI)."""
    if args.framework == "torch":
        import torch
        torch.set_num_threads(args.threads)
    rows = next(s for s in SECTIONS if s.NAME == args.worker).worker(args)
    if rows is not None:
        print(json.dumps(rows))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.worker:
        return run_worker(args)
    sections = [s for s in SECTIONS if s.wanted(args)]
    sections = [s for s in sections if getattr(s, "ALONE", False)][:1] or sections
    results = {"machine": machine_header("".join(f" {a}" for a in argv))}
    bench = Bench(args, results)
    ok = True
    for section in sections:
        ok = section.run(args, bench) and ok
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    return 0 if ok else 1

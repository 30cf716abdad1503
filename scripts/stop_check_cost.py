#!/usr/bin/env python3
"""What the step boundary's stop check costs a step on MPI ranks (docs/distributed.md, "Signals"): a loop of
allreduces of 784-512-512-10's gradient (2.68 MB, as DataParallel's step does) with nothing more, with
``stop.requested(comm)`` after each (the non-blocking agreement gpunet uses), and with a blocking allreduce of
the two flags instead; the three alternate in blocks of ``--steps`` steps, over ``--rounds`` rounds.

    mpiexec -n 2 python -m mpi4py scripts/stop_check_cost.py [--rounds 21] [--steps 100]
"""
import argparse
import statistics
import time

import numpy as np

from gpunet.distributed import stop, world

MODES = ("none", "non-blocking check", "blocking check")


def block(comm, grad, mode: str, steps: int) -> float:
    """Seconds a step, over ``steps`` steps between two barriers."""
    comm.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        comm.allreduce_sum(grad)
        if mode == "non-blocking check":
            stop.requested(comm)
        elif mode == "blocking check":
            comm.allreduce_sum(np.zeros(2, np.int64))
    comm.barrier()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    comm = world()
    grad = np.zeros(669_707, np.float32)  # the gradient and the loss slot
    times = {mode: [] for mode in MODES}
    with stop.SignalPolicy(grace=60):
        for mode in MODES:  # warm-up
            block(comm, grad, mode, args.steps)
        for _ in range(args.rounds):
            for mode in MODES:
                times[mode].append(block(comm, grad, mode, args.steps))
    if comm.rank == 0:
        for name, summary in (("median", statistics.median), ("min", min)):
            base = summary(times["none"])
            print(f"{name} over {args.rounds} rounds, {comm.size} ranks: " + ", ".join(
                f"{mode} {summary(times[mode]) * 1e6:.0f} us a step ({(summary(times[mode]) - base) * 1e6:+.0f})"
                for mode in MODES))


if __name__ == "__main__":
    main()

"""Section (c), ``--nproc N``: data parallelism on the CPU. 784-512-512-10 ReLU with Adam at global batches 128
and 1024, one process on all host threads against N ranks of ``mpiexec -n N python -m mpi4py`` with cores // N
threads each (the environment ``gpunet train --nproc N`` gives its ranks), samples/s over a fixed number of steps
after a warm-up, and the allreduce's seconds per step and share of a step as DataParallel records them. It runs
alone: ``--nproc`` benches nothing else."""
import argparse
import itertools
import statistics
import time

import gpunet
from gpunet import nn, optim
from gpunet.data import Batches, load_mnist
from gpunet.distributed import Communicator, DataParallel, rank_environment, world
from gpunet.trainer import Trainer

from .core import run_worker
from .step import loss_module, require_labels
from .timing import alternating_rounds, median_runs

NAME = "distributed"
ALONE = True
DP_NETWORK = ("784-512-512-10 relu", [784, 512, 512, 10], "relu")
DP_BATCHES = (128, 1024)
DP_STEPS = 100  # timed steps at the largest batch; a smaller batch runs proportionally more, the same samples
DP_WARMUP = 10
DP_ALONE_REPEATS = 20


def add_arguments(parser):
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="data parallelism only: 1 process against N MPI ranks on the CPU (table (c))")
    parser.add_argument("--steps", type=int, default=DP_STEPS,
                        help=f"--nproc: timed steps at batch {max(DP_BATCHES)} (as many samples at the smaller "
                             f"batch); default {DP_STEPS}")
    parser.add_argument("--warmup", type=int, default=DP_WARMUP, help="--nproc: untimed steps first")
    parser.add_argument("--batches", type=lambda v: [int(b) for b in v.split(",")], default=list(DP_BATCHES),
                        help="--nproc: comma-separated global batches (default 128,1024)")
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)


def wanted(args) -> bool:
    return bool(args.nproc)


def run(args, bench) -> bool:
    """Rounds alternating the order (1 process then the ranks, then the other way round), medians over them."""
    bench.results["settings"] = {"nproc": args.nproc, "rounds": args.rounds, "steps": args.steps,
                                 "warmup": args.warmup, "batches": args.batches, "optimizer": "adam",
                                 "device": "cpu"}
    runs = alternating_rounds(args.rounds, [1, args.nproc], lambda nproc: run_dp_worker(args, nproc))
    rows = bench.rows(NAME)
    print_distributed(args.nproc, median_dp(runs[1]), median_dp(runs[args.nproc]), rows)
    return bool(rows)


def run_dp_worker(args, nproc):
    """One measurement in fresh processes: 1 process (no MPI) or ``mpiexec -n nproc``, with the threads of each
    given out as ``gpunet train --nproc`` gives them (``gpunet.distributed.rank_environment``). Rank 0's rows, or
    None."""
    argv = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batches", ",".join(map(str, args.batches))]
    return run_worker(NAME, argv + (["--distributed"] if nproc > 1 else []), f"{nproc}-process data-parallel",
                      env=rank_environment(nproc), nproc=nproc)


def worker(args):
    return dp_worker(args.batches, args.steps, args.warmup, args.distributed)


def dp_steps(batch, steps):
    """Timed steps at global batch ``batch``: ``steps`` at the largest of DP_BATCHES, as many samples at others."""
    return max(1, steps * max(DP_BATCHES) // batch)


def dp_worker(batches, steps, warmup, distributed):
    """One process, or (``distributed``) one rank of an MPI job, training DP_NETWORK with Adam on MNIST at each
    global batch: ``warmup`` steps, then the timed ones between two barriers. The single process runs the step of
    ``gpunet train``, a rank the step of ``gpunet train --distributed`` (its slice of the global batch, then
    DataParallel's allreduce). Rank 0 returns one row per batch, the others None."""
    comm = world() if distributed else Communicator()
    dev = gpunet.device("cpu")
    x, y, _, _ = load_mnist()
    name, sizes, activation = DP_NETWORK
    require_labels(y, sizes[-1])
    out = []
    for batch in batches:
        model = nn.mlp(sizes, activation, seed=0, device=dev)
        loss_fn = loss_module(dev)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        parallel = DataParallel(model, loss_fn, comm) if distributed else None
        trainer = Trainer(model, loss_fn, opt, parallel=parallel)
        data = Batches(x, y, batch, seed=0, drop_last=True, device=dev)
        stream = (b for epoch in itertools.count() for b in data.epoch(epoch))
        for _ in range(warmup):
            trainer.step(*next(stream))
        timed = dp_steps(batch, steps)
        # DataParallel's own record, read before and after the timed steps.
        seconds_before, steps_before = (parallel.allreduce_seconds, parallel.steps) if parallel else (0.0, 0)
        comm.barrier()
        start = time.perf_counter()
        for _ in range(timed):
            trainer.step(*next(stream))
        comm.barrier()
        seconds = time.perf_counter() - start
        row = {"network": name, "batch": batch, "ranks": comm.size,
               "threads_per_rank": dev.describe()["host_threads"], "warmup": warmup, "steps": timed,
               "seconds": seconds, "samples_s": timed * batch / seconds, "step_s": seconds / timed}
        if parallel:
            # Time in the collective, waiting for the slowest rank included; the mean over the ranks.
            per_rank = comm.allgather((parallel.allreduce_seconds - seconds_before)
                                      / (parallel.steps - steps_before))
            grads = [g.copy() for g in parallel.buffers.grads]
            comm.barrier()
            start = time.perf_counter()
            for _ in range(DP_ALONE_REPEATS):
                for g in grads:
                    comm.allreduce_sum(g)
            alone = comm.allgather((time.perf_counter() - start) / DP_ALONE_REPEATS)
            row.update(communicator=comm.name, allreduce_s=statistics.mean(per_rank),
                       allreduce_s_per_rank=per_rank, allreduce_share=statistics.mean(per_rank) / row["step_s"],
                       allreduce_alone_s=statistics.mean(alone),
                       allreduce_bytes=sum(g.size * g.itemsize for g in grads))
        out.append(row)
    return out if comm.rank == 0 else None


def median_dp(runs):
    """median_runs over dp_worker's rounds: its figures, without the per-rank detail."""
    rows = median_runs(runs, ("samples_s", "step_s", "allreduce_s", "allreduce_share", "allreduce_alone_s"))
    for row in rows or ():
        row.pop("allreduce_s_per_rank", None)
    return rows


def print_distributed(nproc, single, ranks, rows):
    if single is None or ranks is None:
        print("\n(c) data parallelism: a worker failed")
        return
    first = ranks[0]
    print(f"\n(c) data parallelism on cpu: {first['network']}, Adam, MNIST, samples/s over the timed steps after "
          f"{first['warmup']} warm-up steps, median of {len(single[0]['samples_s_rounds'])} "
          f"rounds alternating the two; 1 process on {single[0]['threads_per_rank']} threads against {nproc} ranks "
          f"on {first['threads_per_rank']} each ({first['communicator']}); allreduce ms/step: DataParallel's "
          f"allreduce of the {first['allreduce_bytes'] / 1e6:.2f} MB gradient, waiting for the slowest rank "
          "included (mean over the ranks); share: of the ranks' step; alone: the same allreduce back to back; "
          "'rounds' gives each round's ratio")
    print(f"{'network':22} {'batch':>5} {'steps':>5} {'1 process samples/s':>19} {f'{nproc} ranks samples/s':>19} "
          f"{'ratio':>7} {'allreduce ms/step':>17} {'share of step':>13} {'alone ms':>8}")
    for one, many in zip(single, ranks):
        per_round = [b / a for a, b in zip(one["samples_s_rounds"], many["samples_s_rounds"])]
        row = {"device": "cpu", "network": one["network"], "batch": one["batch"], "ranks": nproc,
               "threads_single": one["threads_per_rank"], "threads_per_rank": many["threads_per_rank"],
               "steps": many["steps"], "single_samples_s": one["samples_s"], "ranks_samples_s": many["samples_s"],
               "ratio": many["samples_s"] / one["samples_s"], "ratio_rounds": per_round,
               "single_samples_s_rounds": one["samples_s_rounds"], "ranks_samples_s_rounds": many["samples_s_rounds"],
               "single_step_s": one["step_s"], "ranks_step_s": many["step_s"],
               "allreduce_s_per_step": many["allreduce_s"], "allreduce_share": many["allreduce_share"],
               "allreduce_alone_s": many["allreduce_alone_s"], "allreduce_bytes": many["allreduce_bytes"],
               "communicator": many["communicator"]}
        print(f"{one['network']:22} {one['batch']:5d} {many['steps']:5d} {one['samples_s']:19.0f} "
              f"{many['samples_s']:19.0f} {row['ratio']:6.2f}x {1e3 * many['allreduce_s']:17.3f} "
              f"{many['allreduce_share']:13.1%} {1e3 * many['allreduce_alone_s']:8.3f}   "
              f"rounds: {' '.join(f'{r:.2f}x' for r in per_round)}")
        rows.append(row)

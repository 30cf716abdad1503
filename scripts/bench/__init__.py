"""gpunet's side-by-side benchmark: gpunet against PyTorch (and a memory-copy roofline), on every device present,
with ratios measured in the same run and JSON written.

    python scripts/bench                 # full run (a few minutes on 2 cores)
    python scripts/bench --quick         # smaller shapes, fewer repeats
    python scripts/bench --json out.json
    python scripts/bench --nproc 2       # data parallelism: 1 process against 2 MPI ranks (75 s on 2 cores)
    python scripts/bench --lce           # linear cross-entropy at a large vocabulary against PyTorch

(a) ``row_ops``: the softmax family, GB/s over the minimum bytes each op must move, as a fraction of a same-size
    copy and as a ratio to PyTorch's same op, into a new array and into a preallocated one.
(b) ``training``: one epoch of 60000 MNIST samples for 784-512-512-10 ReLU (batch 128 and 1024) and 784-100-10
    tanh (batch 64), samples/s, gpunet against PyTorch, same network, optimizer (SGD, momentum 0.9) and threads,
    beside the bound of the step's matrix products. On a GPU it also times naive CuPy's row ops, uses CUDA events
    after a warm-up, times a whole training step, and counts its kernel launches and host synchronisations.
(c) ``distributed``, with --nproc N only: data parallelism on the CPU, one process on all host threads against N
    MPI ranks with cores // N threads each, samples/s and the allreduce's share of a step.
(d) ``goals``: the CPU goals of docs/performance.md judged on the run's own rows (full shapes only).
(e) ``linear_cross_entropy``, with --lce only: ``ops.linear_cross_entropy`` against PyTorch's logits-then-loss,
    time and extra memory a step at a language model's vocabulary (32768, or 131072 with --lce-large).

The package: a core that knows no section (``timing``: timers, rounds alternating the contenders' order, medians;
``report``: the machine header and table cells; ``core``: ``Bench``, what a section's run gets, and workers, a
measurement in a fresh process; ``cli``: the flags and the run; ``step``: the one gpunet training step every
section times) and one module per section. A section is a module with:

    NAME                  its rows' key in the JSON, and its worker's name (``--worker NAME``)
    add_arguments(parser) its own flags (a worker's private ones with ``help=argparse.SUPPRESS``)
    wanted(args) -> bool  whether this invocation runs it
    run(args, bench) -> bool
                          measure, print its table and append its rows to ``bench.rows(NAME)``; False when
                          gpunet's own measurement failed (the bench then exits 1). ``bench`` (``core.Bench``)
                          gives ``args``, ``results`` (the JSON), ``devices``, ``has_torch(device)`` and
                          ``worker(NAME, framework, device, *argv)``, which runs this package as
                          ``--worker NAME --framework F --device D --threads T [--quick] *argv`` in a fresh process
                          and returns its rows (None if it failed)
    worker(args) -> rows  optional: what one worker process measures, JSON-able
    ALONE = True          optional: when wanted, it is the only section run (--nproc, --lce)

Only gpunet's public API is used: ``gpunet.device`` and a Device's documented methods, ``ops``, ``nn``, ``optim``,
``data``, ``gpunet.distributed`` and ``gpunet.info``. A new section is a new module plus one line in SECTIONS;
sections run in this order, and a later one may read an earlier one's rows (``goals`` does).
"""
from . import distributed, goals, linear_cross_entropy, row_ops, training

SECTIONS = (
    row_ops,
    training,
    distributed,
    linear_cross_entropy,
    goals,  # last: judges the rows of (a) and (b)
)

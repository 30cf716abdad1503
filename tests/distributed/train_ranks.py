"""Run by the distributed tests, as one rank of ``mpiexec -n N python -m mpi4py`` or as a single process: a few
epochs of data-parallel training through the API on a small set with ignored labels and an uneven last batch.
Each rank saves its weights and the samples it used, by epoch, to OUT/rank<r>.npz.

    train_ranks.py OUT --activation relu --optimizer sgd --device cpu [--single] [--fault-rank R] [--clip-grad-norm M]

Every step is gpunet.trainer.Trainer's: the single process's without a data-parallel strategy, the ranks' with
DataParallel's. With --clip-grad-norm, each step's total gradient norm before clipping is saved too.
"""
import argparse
from pathlib import Path

import numpy as np

from gpunet import nn, optim
from gpunet.data import Batches
from gpunet.devices import is_cupy_array, simgpu
from gpunet.distributed import Communicator, DataParallel, rank_device, split, world
from gpunet.trainer import Trainer

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--activation", default="relu")
parser.add_argument("--optimizer", default="sgd")
parser.add_argument("--device", default="cpu")
parser.add_argument("--single", action="store_true", help="one process, no MPI: the reference")
parser.add_argument("--fault-rank", type=int, default=None, help="this rank raises at its third step")
parser.add_argument("--rows", type=int, default=203)
parser.add_argument("--batch", type=int, default=40)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--clip-grad-norm", type=float, default=None)
args = parser.parse_args()

comm = Communicator() if args.single else world()
dev, comm = rank_device(args.device, comm)  # a GPU rank takes its node-local GPU, and NCCL
rng = np.random.default_rng(0)
x = rng.standard_normal((args.rows, 6)).astype(np.float32)
x[:, 0] = np.arange(args.rows) / 1000  # the sample's index, to see which rank used which sample
y = rng.integers(0, 4, args.rows)
y[::7] = -100  # ignored rows: the loss divides by the global batch's counted rows
model = nn.mlp([6, 16, 4], args.activation, seed=0, device=dev)
loss_fn = nn.SoftmaxCrossEntropy(check_labels=False, device=dev)  # as gpunet train: no read back per step
opt = (optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if args.optimizer == "sgd"
       else optim.Adam(model.parameters(), lr=0.01))
parallel = None if args.single else DataParallel(model, loss_fn, comm)
trainer = Trainer(model, loss_fn, opt, parallel=parallel, clip_grad_norm=args.clip_grad_norm)
batches = Batches(x, y, args.batch, shuffle=True, seed=0, device=dev)
used, losses, norms, syncs, step = [], [], [], [], 0
for epoch in range(args.epochs):
    mine = []
    for xb, yb in batches.epoch(epoch):
        step += 1
        if comm.rank == args.fault_rank and step == 3:
            raise RuntimeError(f"an injected fault on rank {comm.rank}")
        lo, hi = split(len(yb), comm.size, comm.rank)
        mine += np.rint(dev.to_numpy(xb[lo:hi, 0]) * 1000).astype(int).tolist()
        before = simgpu.host_syncs()
        loss = trainer.step(xb, yb)
        syncs.append(simgpu.host_syncs() - before)  # counted on the simulated GPU only (0 elsewhere)
        losses.append(float(dev.to_numpy(loss)))
        if args.clip_grad_norm is not None:
            norms.append(float(dev.to_numpy(trainer.grad_norm)))
    used.append(np.array(mine))
weights = {name: dev.to_numpy(p.data) for name, p in model.named_parameters()}
arrays = [a for p in model.parameters() for a in (p.data, p.grad)] + [batches.x, batches.y]
arrays += [buf for slot in opt.state for buf in slot.values()]
arrays += parallel.buffers.data + parallel.buffers.grads if parallel else []
gpus = [a.device.id if is_cupy_array(a) else -1 for a in arrays]  # the GPU each array lives on (-1: the host)
np.savez(Path(args.out) / f"rank{comm.rank}.npz", losses=np.array(losses), **weights, usedgpus=np.array(gpus),
         usedsyncs=np.array(syncs),
         **({"norms": np.array(norms)} if norms else {}),
         **{f"used{e}": u for e, u in enumerate(used)})

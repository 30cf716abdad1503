"""Data parallelism: N ranks train one model exactly as one process trains it on the same global batches.

Each rank takes its slice of every global batch (:func:`split`), computes the loss of its rows divided by the
*global* number of counted rows (``count=`` of the loss module), and backpropagates, in the one training step
(:class:`gpunet.trainer.Trainer`, whose gradient hook this strategy provides). The gradient of a mean over
the global batch is the sum over ranks of these partial gradients, so one SUM allreduce gives every rank the
single-process gradient (up to the order of float additions), and the same optimizer step keeps the weights equal
everywhere. Parameters and gradients are views of one flat buffer per (device, dtype), so that allreduce needs no
packing copies; the step's loss rides in one extra slot of the first gradient buffer.
"""
from __future__ import annotations

import time

from ..trainer import Trainer
from .communicator import Communicator


def split(n: int, parts: int, index: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a global batch of ``n`` rows that part ``index`` of ``parts`` takes: as even as
    possible, the first ``n % parts`` parts one row more (a part may be empty when ``n < parts``)."""
    base, extra = divmod(n, parts)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


class FlatBuffers:
    """The parameters' data and gradients re-homed into one contiguous buffer each per (device, dtype); every
    Parameter's ``data`` and ``grad`` become views of its slice. ``loss_slots`` extra gradient elements follow the
    first group's gradients."""

    def __init__(self, params, loss_slots: int = 0):
        groups: dict = {}
        for p in params:
            groups.setdefault((p.device, p.data.dtype), []).append(p)
        self.data, self.grads = [], []
        for g, ((device, dtype), members) in enumerate(groups.items()):
            xp = device.xp
            total = sum(p.data.size for p in members)
            data = xp.empty(total, dtype=dtype)
            grad = xp.zeros(total + (loss_slots if g == 0 else 0), dtype=dtype)
            offset = 0
            for p in members:
                end = offset + p.data.size
                data[offset:end] = p.data.reshape(-1)
                p.data = data[offset:end].reshape(p.data.shape)
                p.grad = grad[offset:end].reshape(p.data.shape)
                offset = end
            self.data.append(data)
            self.grads.append(grad)
        self.loss_slot = self.grads[0][-loss_slots:] if loss_slots else None


class DataParallel:
    """The data-parallel strategy of a :class:`gpunet.trainer.Trainer` over ``comm``: ``shard`` gives each rank
    its slice of a global batch and the global batch's divisor (``loss_fn.divisor``: its counted rows, or with class
    weights their weight sum, for ``loss_fn``'s mean), and
    ``reduce_gradients``, the step's gradient hook, sums the gradients and the loss over the ranks with one
    allreduce. Weights start as rank 0's (broadcast)."""

    def __init__(self, model, loss_fn, comm: Communicator):
        self.model, self.loss_fn, self.comm = model, loss_fn, comm
        self.buffers = FlatBuffers(model.parameters(), loss_slots=1)
        for data in self.buffers.data:
            comm.broadcast(data, root=0)
        self.allreduce_seconds, self.steps = 0.0, 0
        self._gradients_only = Trainer(model, loss_fn, None, parallel=self)

    def shard(self, xb, yb):
        """``(x, y, count)``: this rank's rows of the global batch ``xb``, ``yb`` (possibly none) and the global
        batch's divisor (its counted rows, or their class-weight sum), which every rank's loss divides by."""
        lo, hi = split(len(yb), self.comm.size, self.comm.rank)
        # Every rank holds the whole batch's labels, so the global divisor needs no message (and no host read).
        return xb[lo:hi], yb[lo:hi], self.loss_fn.divisor(yb)

    def reduce_gradients(self, loss):
        """The gradient hook: every parameter's ``grad`` and ``loss`` (this rank's part) summed over the ranks
        in one allreduce of the flat gradient buffers. Returns the global batch's loss, a device scalar."""
        self.buffers.loss_slot[0] = loss
        start = time.perf_counter()
        for grad in self.buffers.grads:
            self.comm.allreduce_sum(grad)
        self.allreduce_seconds += time.perf_counter() - start
        self.steps += 1
        return self.buffers.loss_slot[0].copy()

    def forward_backward(self, xb, yb):
        """The global batch's mean loss (a device scalar) and, in every parameter's ``grad``, its gradient: the
        Trainer's step up to the update (``Trainer.gradients``)."""
        return self._gradients_only.gradients(xb, yb)

    def weights_digest(self) -> str:
        """A digest of every weight's bytes: equal on every rank while they agree."""
        import hashlib

        digest = hashlib.sha256()
        for data in self.buffers.data:
            digest.update(self.model.device.to_numpy(data).tobytes())
        return digest.hexdigest()

    def require_agreement(self) -> None:
        """RuntimeError unless every rank holds the same weights (checked before a checkpoint is written)."""
        digests = self.comm.allgather(self.weights_digest())
        if len(set(digests)) != 1:
            differing = [r for r, d in enumerate(digests) if d != digests[0]]
            raise RuntimeError(f"the ranks' weights differ (ranks {differing} from rank 0): refusing to checkpoint")

"""One training step, written once for one process, for N data-parallel ranks and for the bench.

A step is, in this order: the forward pass, the loss through the loss module, the backward pass, the gradient
hook (with N ranks, ``DataParallel``'s allreduce, which gives every rank the global batch's gradient), optional
gradient-norm clipping (after the hook, so N ranks clip the global gradient alike), and the optimizer's update.
A new concern of the step (mixed precision, another loss, a captured GPU graph) therefore goes in one place.
Nothing in a step reads a value back to the host: the loss comes back as a device scalar.
"""
from __future__ import annotations

from .optim.clip import clip_grad_norm, require_max_norm


def forward_backward(model, loss_fn, x, y, count=None):
    """Forward ``x`` through ``model``, the loss of the logits for labels ``y`` through ``loss_fn``, and backward:
    every parameter's ``grad`` then holds the loss's gradient. Returns the loss (a device scalar).

    ``count``: the number of counted rows the mean divides by when ``x`` is one part of a larger batch (a rank's
    slice of the global batch; ``loss_fn.forward(..., count=)``). A part of no rows, which a rank gets when the
    global batch has fewer rows than there are ranks, contributes nothing: zero gradients and a zero loss."""
    if len(y) == 0:
        if count is None:
            raise ValueError("a training step needs a batch of at least one row")
        params = model.parameters()
        for param in params:
            param.grad[...] = 0
        return model.device.xp.zeros((), dtype=params[0].grad.dtype)
    logits = model.forward(x)
    loss = loss_fn.forward(logits, y) if count is None else loss_fn.forward(logits, y, count=count)
    model.backward(loss_fn.backward())
    return loss


class Trainer:
    """The step of ``model`` trained with ``loss_fn`` (a loss module: ``forward(logits, labels[, count=])``, then
    ``backward()``) and ``optimizer``.

    ``parallel``: None for one process, or a data-parallel strategy (``gpunet.distributed.DataParallel``) that
    provides ``shard(x, y) -> (x, y, count)``, this process's rows of a global batch and the global count of
    counted rows, and the gradient hook ``reduce_gradients(loss) -> loss``, which leaves the global batch's
    gradient and loss on every process. ``clip_grad_norm``: a positive max norm (``gpunet.optim.clip_grad_norm``,
    PyTorch's semantics), or None. ``grad_norm`` is then the last step's total norm before clipping (a device
    scalar). ``optimizer`` may be None for :meth:`gradients` alone."""

    def __init__(self, model, loss_fn, optimizer, *, parallel=None, clip_grad_norm: float | None = None):
        if clip_grad_norm is not None:
            clip_grad_norm = require_max_norm(clip_grad_norm)
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.parallel = parallel
        self.clip_grad_norm = clip_grad_norm
        self.params = model.parameters()
        self.grad_norm = None

    def step(self, x, y):
        """One training step on the (global) batch ``x``, ``y``: its gradients, then the optimizer's update.
        Returns the batch's loss as a device scalar."""
        if self.optimizer is None:
            raise RuntimeError("Trainer.step needs an optimizer (this Trainer was built with optimizer=None)")
        with self.model.device.context():
            loss = self.gradients(x, y)
            self.optimizer.step()
        return loss

    def gradients(self, x, y):
        """The step up to the update: forward, loss, backward, the gradient hook, clipping. Every parameter's
        ``grad`` then holds the (global, clipped) batch's gradient; returns the batch's loss (a device scalar). It
        runs with the model's GPU current (``Device.context()``): the hook's and clipping's array operators run on
        the current GPU, whichever GPU was current before."""
        with self.model.device.context():
            return self._gradients(x, y)

    def _gradients(self, x, y):
        count = None
        if self.parallel is not None:
            x, y, count = self.parallel.shard(x, y)
        loss = forward_backward(self.model, self.loss_fn, x, y, count)
        if self.parallel is not None:
            loss = self.parallel.reduce_gradients(loss)
        if self.clip_grad_norm is not None:
            self.grad_norm = clip_grad_norm(self.params, self.clip_grad_norm)
        return loss

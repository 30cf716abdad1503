"""gpunet's training step as the sections time it, in one place: the one function to swap for gpunet's public
training step when it lands (``train_step`` below keeps its arguments).

The loss does not check labels (``check_labels=False``), as ``gpunet train`` runs it: on a GPU the check reads
the kernel's error flag back, a host synchronisation per step that PyTorch's step does not make. The labels are
checked once up front instead (``require_labels``), as ``gpunet train`` checks its dataset's.
"""
from gpunet import nn


def loss_module(dev):
    """The softmax cross-entropy of a timed step: no per-step label check (see the module's docstring)."""
    return nn.SoftmaxCrossEntropy(check_labels=False, device=dev)


def require_labels(labels, n_classes: int) -> None:
    """ValueError unless every label lies in ``[0, n_classes)``: the check the timed step leaves out."""
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(bad.argmax())
        raise ValueError(f"label {int(labels[i])} of sample {i} is out of range [0, {n_classes})")


def train_step(model, loss_fn, opt, xb, yb, parallel=None):
    """One step: forward, the loss through the loss module, backward (through ``parallel``, a DataParallel, when
    given: its slice of the batch, then the gradients' allreduce), the update. Returns the loss as a device
    array, never read here."""
    if parallel is None:
        loss = loss_fn.forward(model.forward(xb), yb)
        model.backward(loss_fn.backward())
    else:
        loss = parallel.forward_backward(xb, yb)
    opt.step()
    return loss

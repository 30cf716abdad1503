"""gpunet's training step as the sections time it: ``gpunet.trainer.Trainer``, the step ``gpunet train`` and
its N ranks take, with the loss module below.

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

"""What a trained model gets right: accuracy, the confusion matrix and predictions, in eval mode and in batches;
and the labels' range, checked once before training so that no step need read back a label flag."""
from __future__ import annotations

from .. import nn


def _predictions(model, x, batch_size: int):
    """``(start, predicted classes)`` for each batch of ``x``, the model in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            logits = model.forward(model.device.asarray(x[start:start + batch_size]))
            yield start, model.device.xp.argmax(logits, axis=1)
    finally:
        model.train(was_training)


def accuracy(model, x, y, batch_size: int = 1000) -> float:
    """Fraction of rows of ``x`` whose arg-max logit equals ``y`` (ValueError for an empty ``x``)."""
    if len(x) == 0:
        raise ValueError("accuracy of an empty set of samples is undefined")
    with model.device.context():  # its GPU current: the comparison runs where the arrays are (cuda:N)
        correct = sum(int((pred == model.device.asarray(y[start:start + len(pred)])).sum())
                      for start, pred in _predictions(model, x, batch_size))
    return correct / len(x)


def confusion_matrix(model, x, y, n_classes: int, batch_size: int = 1000):
    """``m[true, predicted]`` counts over ``x``, as a host array."""
    xp = model.device.xp
    with model.device.context():  # as accuracy's
        counts = xp.zeros(n_classes * n_classes, dtype=xp.int64)
        for start, pred in _predictions(model, x, batch_size):
            true = model.device.asarray(y[start:start + len(pred)])
            counts += xp.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
        return model.device.to_numpy(counts).reshape(n_classes, n_classes)


def model_predictions(model, x):
    """The predicted class of every row of host array ``x`` (on the model's device)."""
    with model.device.context():
        return next(pred for _, pred in _predictions(model, x, len(x)))


def model_sizes(model) -> list:
    """The layer widths of an MLP, input first: ``[784, 512, 512, 10]``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [linears[0].in_features] + [m.out_features for m in linears]


def require_labels_in_range(labels, n_classes: int, split: str) -> None:
    """ValueError naming the first label of ``labels`` outside ``[0, n_classes)``."""
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(bad.argmax())
        raise ValueError(f"{split} label {int(labels[i])} of sample {i} is out of range: a dataset of {n_classes} "
                         f"classes needs labels in [0, {n_classes})")

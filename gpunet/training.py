"""The training loop behind ``gpunet train``: data -> MLP -> fused softmax cross-entropy -> optimizer.

Every epoch ends with a test evaluation, a line of metrics, an atomic checkpoint and an atomic metrics JSON, so
an interrupted run loses at most one epoch and ``resume`` continues from the last checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from tqdm import tqdm

from . import nn, optim
from .devices import device as as_device
from .checkpoint import atomic_write, load_checkpoint, remove_stale_temporaries, save_checkpoint
from .data import Batches
from .data.registry import load_dataset
from .plots import plot_curves

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "mnist"
    data_root: str | None = None
    device: str = "auto"
    hidden: tuple = (512, 512)
    activation: str = "relu"
    dropout: float = 0.0
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    batch_size: int = 128
    epochs: int = 8
    seed: int = 0
    out: str = "runs/latest"
    resume: bool = False
    progress: bool = True
    plot: str | None = None


class DivergenceError(RuntimeError):
    """The loss became NaN or inf."""


class OutOfMemory(RuntimeError):
    """A training step did not fit in (GPU) memory."""


def is_out_of_memory(exc: BaseException) -> bool:
    """CuPy's ``OutOfMemoryError`` (GPU) or Python's ``MemoryError`` (host)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def build_model(config: TrainConfig, n_inputs: int, n_classes: int, device):
    sizes = [n_inputs, *config.hidden, n_classes]
    return nn.mlp(sizes, config.activation, config.dropout, seed=config.seed, device=device)


def build_optimizer(config: TrainConfig, params):
    if config.optimizer == "sgd":
        return optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                         weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}: expected one of {OPTIMIZERS}")


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """Constant, or cosine annealing from ``lr`` to 0 over the whole run."""
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    raise ValueError(f"unknown schedule {config.schedule!r}: expected 'constant' or 'cosine'")


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
    """Fraction of rows of ``x`` whose arg-max logit equals ``y``."""
    correct = sum(int((pred == model.device.asarray(y[start:start + len(pred)])).sum())
                  for start, pred in _predictions(model, x, batch_size))
    return correct / len(x)


def confusion_matrix(model, x, y, n_classes: int, batch_size: int = 1000):
    """``m[true, predicted]`` counts over ``x``, as a host array."""
    xp = model.device.xp
    counts = xp.zeros(n_classes * n_classes, dtype=xp.int64)
    for start, pred in _predictions(model, x, batch_size):
        true = model.device.asarray(y[start:start + len(pred)])
        counts += xp.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return model.device.to_numpy(counts).reshape(n_classes, n_classes)


def fit(config: TrainConfig, log=print) -> dict:
    dev = as_device(config.device)
    out = Path(config.out)
    x_train, y_train, x_test, y_test, n_classes = load_dataset(config.dataset, config.data_root, config.seed)
    model = build_model(config, x_train.shape[1], n_classes, dev)
    for split, labels in (("training", y_train), ("test", y_test)):
        require_labels_in_range(labels, n_classes, split)
    # Labels checked once here, so the loss need not read back the GPU kernel's label flag (a sync) every step.
    loss_fn = nn.SoftmaxCrossEntropy(check_labels=False, device=dev)
    opt = build_optimizer(config, model.parameters())
    batches = Batches(x_train, y_train, config.batch_size, shuffle=True, seed=config.seed, device=dev)
    total_steps = config.epochs * len(batches)
    history, first_epoch = [], 0
    checkpoint_path = out / "checkpoint.npz"
    remove_stale_temporaries(checkpoint_path)
    if config.resume and checkpoint_path.exists():
        model_state, optim_state, meta = load_checkpoint(checkpoint_path)
        model.load_state_dict(model_state)
        opt.load_state_dict(optim_state)
        first_epoch, history = meta["epoch"], meta.get("history", [])
        log(f"resumed from {checkpoint_path} after epoch {first_epoch}")
    log(f"training {config.dataset} on {dev.name}: {model_sizes(model)} {config.activation}, "
        f"{config.optimizer} lr={config.lr} batch={config.batch_size} epochs={config.epochs} seed={config.seed}")
    for epoch in range(first_epoch, config.epochs):
        record = train_epoch(model, loss_fn, opt, batches, epoch, config, total_steps)
        record["test_accuracy"] = accuracy(model, x_test, y_test)
        history.append(record)
        log(f"epoch {epoch + 1}/{config.epochs}  train loss {record['train_loss']:.4f}  "
            f"test accuracy {100 * record['test_accuracy']:.2f}%  {record['samples_per_s']:.0f} samples/s  "
            f"({record['seconds']:.1f} s)")
        meta = {"config": _jsonable(config), "epoch": epoch + 1, "step": opt.step_count, "history": history,
                "sizes": model_sizes(model), "n_classes": n_classes}
        save_checkpoint(checkpoint_path, model.state_dict(), opt.state_dict(), meta)
        metrics = {"config": _jsonable(config), "device": dev.name, "history": history,
                   "test_accuracy": record["test_accuracy"], "checkpoint": str(checkpoint_path)}
        atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(metrics, indent=2).encode()))
        if config.plot:
            plot_curves(history, config.plot)
    final = history[-1]["test_accuracy"] if history else float("nan")
    log(f"final test accuracy {100 * final:.2f}%  (checkpoint {checkpoint_path}, metrics {out / 'metrics.json'})")
    return {"history": history, "test_accuracy": final, "checkpoint": str(checkpoint_path)}


def require_labels_in_range(labels, n_classes: int, split: str) -> None:
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(bad.argmax())
        raise ValueError(f"{split} label {int(labels[i])} of sample {i} is out of range: a dataset of {n_classes} "
                         f"classes needs labels in [0, {n_classes})")


CHECK_EVERY = 20  # steps between looks at the loss: one host sync per window, not per step


def train_epoch(model, loss_fn, opt, batches, epoch, config, total_steps) -> dict:
    """One epoch. Losses are kept on the device and looked at every ``CHECK_EVERY`` steps (a host sync), so a
    NaN or inf is still pinned to the exact step that produced it."""
    model.train()
    for layer in model.modules():
        if isinstance(layer, nn.Dropout):
            layer.reseed(epoch)
    xp = model.device.xp
    losses = xp.zeros(len(batches), dtype=xp.float64)
    seen = 0
    start = time.perf_counter()
    first_step = opt.step_count
    bar = tqdm(batches.epoch(epoch), total=len(batches), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=not config.progress, unit="batch")
    for i, (xb, yb) in enumerate(bar):
        opt.lr = learning_rate(config, opt.step_count, total_steps)
        try:
            loss = loss_fn.forward(model.forward(xb), yb)
            model.backward(loss_fn.backward())
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemory(
                    f"out of memory on {model.device.name} in a training step with batch size {config.batch_size} "
                    f"({type(exc).__name__}: {exc}). Try a smaller --batch-size (e.g. {max(1, config.batch_size // 2)}) "
                    "or smaller --hidden layers.") from exc
            raise
        losses[i] = loss
        seen += len(yb)
        if i % CHECK_EVERY == CHECK_EVERY - 1 or i == len(batches) - 1:
            _check_finite(model.device, losses, i, epoch, first_step, config)
            bar.set_postfix(loss=f"{float(losses[i]):.4f}", samples_s=f"{seen / (time.perf_counter() - start):.0f}")
        opt.step()
    model.device.synchronize()
    seconds = time.perf_counter() - start
    return {"epoch": epoch + 1, "train_loss": float(losses.mean()), "seconds": seconds,
            "samples_per_s": seen / seconds}


def _check_finite(device, losses, upto, epoch, first_step, config):
    start = max(0, upto - CHECK_EVERY + 1)
    if bool(device.xp.isfinite(losses[start:upto + 1]).all()):
        return
    values = device.to_numpy(losses)
    bad = next(j for j in range(start, upto + 1) if not math.isfinite(float(values[j])))
    raise DivergenceError(
        f"loss became {float(values[bad])} at step {first_step + bad + 1} (epoch {epoch + 1}, batch {bad + 1}): "
        f"the weights diverged. Usual causes: a learning rate too high (now {config.lr}; try {config.lr / 10:g}), "
        "NaN or inf in the input data, or unscaled inputs. The last good checkpoint (if an epoch finished) is "
        f"kept in {config.out}.")


def model_sizes(model) -> list:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [linears[0].in_features] + [m.out_features for m in linears]


def _jsonable(config: TrainConfig) -> dict:
    d = dataclasses.asdict(config)
    d["hidden"] = list(d["hidden"])
    return d

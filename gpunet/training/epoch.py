"""One epoch of training: the learning rate of each step, the steps themselves (``gpunet.trainer.Trainer``, the
same step one process, N ranks and the bench take), and the checks that pin a divergence, or a label out of range,
to the step that caused it without a host synchronisation per step."""
from __future__ import annotations

import math
import time

from tqdm import tqdm

from .. import nn
from ..cuda.launcher import NO_ERROR, LabelFlag
from ..distributed.data_parallel import split
from ..distributed.stop import stop_if_requested
from ..errors import label_out_of_range
from .errors import DivergenceError, out_of_memory_advice
from .settings import SCHEDULES, TrainConfig

CHECK_EVERY = 20  # steps between looks at the loss and the label flags: one host sync per window, not per step
LOSS, LABEL_FLAG = range(2)  # the columns of an epoch's per-step record, kept on the device


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """Constant, or cosine annealing from ``lr`` to 0 over the whole run."""
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    raise ValueError(f"unknown schedule {config.schedule!r}: expected one of {', '.join(map(repr, SCHEDULES))}")


def train_epoch(trainer, batches, epoch: int, config: TrainConfig, total_steps: int) -> dict:
    """One epoch of ``trainer``'s steps over ``batches``. Losses are kept on the device and looked at every
    ``CHECK_EVERY`` steps (a host sync), so a NaN or inf is still pinned to the exact step that produced it; the
    updates after the last look are covered by a check at the end that every weight and optimizer buffer is finite
    (one more sync). With data-parallel ranks (``trainer.parallel``) each step is this rank's slice of the global
    batch and one allreduce; every rank then holds the same global loss, so all of them stop together, with one
    message, if it diverges."""
    model, opt, parallel = trainer.model, trainer.optimizer, trainer.parallel
    model.train()
    for layer in model.modules():
        if isinstance(layer, nn.Dropout):
            layer.reseed(epoch)
    xp, kernels = model.device.xp, model.device.kernels
    # Per step, on the device: the loss, and the loss kernel's label flag (the first row whose label is out of
    # range, NO_ERROR for none). A GPU step checks no label itself (a host sync): the window does.
    steps = xp.zeros((len(batches), 2), dtype=xp.float64)
    flagged: dict = {}  # step -> (its labels, its flag, its rows' offset in the global batch), for this window
    kernels.take_label_flag()  # what calls before this epoch flagged (an evaluation's) is not this epoch's
    seen = 0
    start = time.perf_counter()
    first_step = opt.step_count
    lead = parallel is None or parallel.comm.rank == 0
    if parallel:
        parallel.allreduce_seconds, parallel.steps = 0.0, 0
    bar = tqdm(batches.epoch(epoch), total=len(batches), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=not (config.progress and lead), unit="batch")
    # The first step also allocates the optimizer's state (Adam's two buffers per parameter).
    in_a_step = out_of_memory_advice(
        model.device.name, f"in a training step with batch size {config.batch_size}",
        f"Try a smaller --batch-size (e.g. {max(1, config.batch_size // 2)}) or smaller --hidden layers.")
    with in_a_step, model.device.context():  # the step's operators (steps[i] = loss) on the model's GPU
        steps[:, LABEL_FLAG] = float(NO_ERROR)
        for i, (xb, yb) in enumerate(bar):
            # The step boundary: no step is in flight here, and every rank is at the same step.
            opt.lr = learning_rate(config, opt.step_count, total_steps)
            steps[i, LOSS] = trainer.step(xb, yb)
            _keep_label_flag(kernels.take_label_flag(), steps, i, yb, parallel, flagged)
            seen += len(yb)
            if i % CHECK_EVERY == CHECK_EVERY - 1 or i == len(batches) - 1:
                loss = _check_window(model.device, steps, i, epoch, first_step, config, flagged)
                bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{seen / (time.perf_counter() - start):.0f}")
            stop_if_requested(parallel.comm if parallel else None)  # a signal: every rank stops after this step
    _check_weights_finite(model, opt, epoch, config)
    model.device.synchronize()
    seconds = time.perf_counter() - start
    record = {"epoch": epoch + 1, "train_loss": float(xp.mean(steps[:, LOSS])), "seconds": seconds,
              "samples_per_s": seen / seconds}
    if parallel:
        record["allreduce_seconds_per_step"] = parallel.allreduce_seconds / max(parallel.steps, 1)
    return record


def _keep_label_flag(flag, steps, i, labels, parallel, flagged):
    """Step ``i``'s label flag (``KernelLauncher.take_label_flag``) into ``steps``, on the device (one copy), and
    what the window needs to name a flagged label: the step's labels and its rows' offset in the global batch."""
    if flag is None:
        return
    steps[i, LABEL_FLAG] = flag.word[0]
    # the kernel counts rows of this rank's labels flattened (a K-dim sample is several rows): its first row's
    # index in the global batch's flattened labels
    per_sample = labels.size // max(len(labels), 1)
    offset = split(len(labels), parallel.comm.size, parallel.comm.rank)[0] * per_sample if parallel else 0
    flagged[i] = (labels, flag, offset)


def _check_window(device, steps, upto, epoch, first_step, config, flagged):
    """Read the window's steps (its one host sync): a label out of range is named by its step and row (one more
    read, for its value), then a NaN or inf loss by its step. Returns the last step's loss."""
    start = max(0, upto - CHECK_EVERY + 1)
    values = device.to_numpy(steps[start:upto + 1])
    for j, (loss, word) in enumerate(values, start):
        where = f"step {first_step + j + 1} (epoch {epoch + 1}, batch {j + 1})"
        row = LabelFlag.flagged_row(word)
        if row is not None:
            labels, flag, offset = flagged[j]
            host = device.to_numpy(labels).reshape(-1)  # the error's path only: one more read
            index = _bad_label_index(host, row + offset, flag.n_classes, flag.ignore_index)
            error = label_out_of_range(index, int(host[index]), flag.n_classes, flag.ignore_index)
            raise ValueError(f"{error}; in the batch of {where}, found by the loss kernel's flag")
        if not math.isfinite(loss):
            raise DivergenceError(f"loss became {loss} at {where}: the weights diverged. {_causes(config)}")
    flagged.clear()
    return float(values[-1, LOSS])


def _bad_label_index(labels, flagged: int, n_classes: int, ignore_index: int) -> int:
    """The flagged index of host ``labels`` where its label is indeed out of range, else the first one that is:
    a loss that runs the kernel on parts of the batch (``linear_cross_entropy``'s row blocks) flags a row of its
    part, and the error must name a label that is wrong, not a valid one."""
    def bad(value) -> bool:
        return value != ignore_index and not 0 <= value < n_classes
    if 0 <= flagged < labels.size and bad(int(labels[flagged])):
        return flagged
    return next((i for i, value in enumerate(labels.tolist()) if bad(value)), min(max(flagged, 0), labels.size - 1))


def _check_weights_finite(model, opt, epoch, config):
    """DivergenceError naming the first weight or optimizer buffer holding NaN or inf (one host sync for all)."""
    xp = model.device.xp
    named = [(name, p.data) for name, p in model.named_parameters()]
    named += [(f"optimizer state.{i}.{key}", buf) for i, slot in enumerate(opt.state) for key, buf in slot.items()]
    finite = model.device.to_numpy(xp.stack([xp.all(xp.isfinite(a)) for _, a in named]))
    if finite.all():
        return
    name = named[int((~finite).argmax())][0]
    raise DivergenceError(
        f"{name} became NaN or inf by step {opt.step_count} (epoch {epoch + 1}), in an update after the last loss "
        f"check: the weights diverged. {_causes(config)}")


def _causes(config) -> str:
    lr = config.lr
    if math.isfinite(lr) and lr / 10 > 0:
        hint = f"now {lr:g}; try {lr / 10:g}"
    else:
        hint = f"now {lr:g}; use a finite one, e.g. the default {TrainConfig.lr:g}"
    return (f"Usual causes: a learning rate too high ({hint}), NaN or inf in the input data, or unscaled inputs.")

"""The training loop behind ``gpunet train``: data -> MLP -> fused softmax cross-entropy -> optimizer.

Every epoch ends with a check that the weights are finite, a test evaluation, a line of metrics, an atomic
checkpoint and an atomic metrics JSON, so an interrupted run loses at most one epoch and ``resume`` continues from
the last checkpoint.

The run folder (``out``) is locked for the whole run (``fcntl.flock`` on ``out/.lock``, released when the process
ends or the run returns), and every output path is checked before the dataset is even loaded: a second run on the
same folder, or a folder or plot path that cannot be written, is an error at once, not after an epoch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import signal
import time
from pathlib import Path

from tqdm import tqdm

from . import nn, optim, plots
from .distributed import Communicator, DataParallel, rank_device, world
from .distributed.stop import stop_if_requested
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, remove_stale_temporaries, save_checkpoint
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
    distributed: bool = False  # one rank of an MPI job (gpunet.distributed): --batch-size is the global batch
    save_every: float = 5.0  # seconds: checkpoint at an epoch's end once this long passed since the last save
    plot_boundary: str | None = None  # a PNG of the decision regions of a 2-D dataset
    recipe: str = ""  # what the command line started from (gpunet.recipes), said at the start


# What a checkpoint's state means: resuming with any of these changed is refused. The others (lr, schedule,
# epochs, batch size, momentum, weight decay, dropout, seed, device, data root) may change on resume.
RUN_DEFINING = ("dataset", "hidden", "activation", "optimizer")
TWO_D_DATASETS = ("spiral", "moons")
LOCK_NAME = ".lock"


class DivergenceError(RuntimeError):
    """The loss, or the weights, became NaN or inf."""


class OutOfMemory(RuntimeError):
    """Building the model, moving the data, a training step or an evaluation did not fit in (GPU) memory."""


class RunFolderError(RuntimeError):
    """The run folder cannot be used: another run holds it, an output path cannot be written, or ``resume``
    finds nothing to resume there (or a checkpoint of other settings)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or, under ``gpunet train``, SIGTERM: ``signum``) during ``fit``; says what was kept: ``checkpoint``
    (a path, or None) after ``epoch``."""

    def __init__(self, checkpoint: str | None, epoch: int | None, signum: int = signal.SIGINT):
        super().__init__(checkpoint, epoch)
        self.checkpoint, self.epoch, self.signum = checkpoint, epoch, signum


def is_out_of_memory(exc: BaseException) -> bool:
    """CuPy's ``OutOfMemoryError`` (GPU) or Python's ``MemoryError`` (host)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


@contextlib.contextmanager
def out_of_memory_advice(device_name: str, doing: str, advice: str):
    """Turn running out of memory inside the block into an OutOfMemory saying what was being done and what to try."""
    try:
        yield
    except Exception as exc:
        if is_out_of_memory(exc):
            raise OutOfMemory(f"out of memory on {device_name} {doing} ({type(exc).__name__}: {exc}). {advice}") from exc
        raise


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
    """Fraction of rows of ``x`` whose arg-max logit equals ``y`` (ValueError for an empty ``x``)."""
    if len(x) == 0:
        raise ValueError("accuracy of an empty set of samples is undefined")
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
    """Train as ``config`` says, checkpointing after every epoch into ``config.out`` (locked meanwhile).

    Errors: RunFolderError (folder busy, unwritable output, nothing or something else to resume), DivergenceError,
    OutOfMemory, CheckpointError, DatasetError, ValueError; Ctrl-C is an Interrupted naming the checkpoint kept.
    """
    out = Path(config.out)
    checkpoint_path = out / "checkpoint.npz"
    saved = {"epoch": None}  # the epoch of the checkpoint this run wrote or resumed from
    comm = world() if config.distributed else Communicator()
    lead = comm.rank == 0  # the one rank that locks the folder, writes files, logs and shows progress
    try:
        with lock_run_folder(out) if lead else contextlib.nullcontext():
            if lead:
                check_outputs(config)
                for path in (checkpoint_path, out / "metrics.json"):
                    remove_stale_temporaries(path)  # safe: the lock keeps any other run out of this folder
            if config.resume and not checkpoint_path.is_file():
                raise RunFolderError(f"--resume: nothing to resume: {checkpoint_path} does not exist (run without "
                                     "--resume to start afresh)")
            return _fit(config, out, checkpoint_path, saved, log if lead else _silent, comm)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(str(checkpoint_path) if saved["epoch"] is not None else None, saved["epoch"],
                          getattr(exc, "signum", signal.SIGINT)) from exc
    except DivergenceError as exc:
        raise DivergenceError(f"{exc} {_what_was_kept(checkpoint_path, saved['epoch'])}") from None


def _silent(*args, **kwargs) -> None:
    pass


def _fit(config: TrainConfig, out: Path, checkpoint_path: Path, saved: dict, log, comm: Communicator) -> dict:
    dev, comm = rank_device(config.device, comm)
    lead = comm.rank == 0
    x_train, y_train, x_test, y_test, n_classes = load_dataset(config.dataset, config.data_root, config.seed)
    for split, labels in (("training", y_train), ("test", y_test)):
        require_labels_in_range(labels, n_classes, split)
    if len(x_test) == 0:
        raise ValueError("the test split is empty: there is nothing to measure accuracy on")
    sizes = [x_train.shape[1], *config.hidden, n_classes]
    with out_of_memory_advice(dev.name, f"building the model {sizes}", "Try smaller --hidden layers."):
        model = build_model(config, x_train.shape[1], n_classes, dev)
        opt = build_optimizer(config, model.parameters())
    with out_of_memory_advice(dev.name, f"moving the dataset ({x_train.nbytes + y_train.nbytes} bytes) to the device",
                              "Try --device cpu."):
        batches = Batches(x_train, y_train, config.batch_size, shuffle=True, seed=config.seed, device=dev)
    # Labels checked once above, so the loss need not read back the GPU kernel's label flag (a sync) every step.
    loss_fn = nn.SoftmaxCrossEntropy(check_labels=False, device=dev)
    total_steps = config.epochs * len(batches)
    history, first_epoch = [], 0
    if config.resume:
        with out_of_memory_advice(dev.name, "loading the checkpoint", "Try --device cpu."):
            first_epoch, history = resume(checkpoint_path, config, model, opt, log)
        saved["epoch"] = first_epoch
    # Every rank built the same weights from the seed (or loaded the same checkpoint); rank 0's are broadcast.
    parallel = DataParallel(model, loss_fn, comm) if config.distributed else None
    if config.recipe:
        log(config.recipe)
    log(f"training {config.dataset} on {dev.name}: {model_sizes(model)} {config.activation}, "
        f"{config.optimizer} lr={config.lr} batch={config.batch_size} epochs={config.epochs} seed={config.seed}"
        + (f", {comm.size} ranks ({comm.name})" if parallel else ""))
    log_every = max(1, config.epochs // 20)  # about twenty lines, however many epochs
    last_save, unsaved = time.monotonic(), None
    try:
        for epoch in range(first_epoch, config.epochs):
            record = train_epoch(model, loss_fn, opt, batches, epoch, config, total_steps, parallel)
            with out_of_memory_advice(dev.name, "evaluating on the test set", "Try --device cpu."):
                record["test_accuracy"] = accuracy(model, x_test, y_test)
            history.append(record)
            if epoch == first_epoch or (epoch + 1) % log_every == 0 or epoch + 1 == config.epochs:
                log(f"epoch {epoch + 1}/{config.epochs}  train loss {record['train_loss']:.4f}  "
                    f"test accuracy {100 * record['test_accuracy']:.2f}%  {record['samples_per_s']:.0f} samples/s  "
                    f"({record['seconds']:.1f} s)")
            state = {"config": _jsonable(config), "epoch": epoch + 1, "step": opt.step_count, "history": history,
                     "sizes": model_sizes(model), "n_classes": n_classes}
            due = epoch + 1 == config.epochs or time.monotonic() - last_save >= config.save_every
            if comm.from_rank0(due):  # rank 0's clock decides for every rank
                _save(out, checkpoint_path, model, opt, state, config, comm, parallel, dev)
                saved["epoch"], last_save, unsaved = epoch + 1, time.monotonic(), None
            else:  # kept in host memory, written on Ctrl-C: a copy of an epoch's end, not of a step's middle
                unsaved = (model.state_dict(), opt.state_dict(), state)
    except KeyboardInterrupt:
        if unsaved is not None and comm.rank == 0:
            _write(out, checkpoint_path, *unsaved, config, comm, dev)
            saved["epoch"] = unsaved[2]["epoch"]
        raise
    if config.plot_boundary and comm.rank == 0:
        plots.plot_boundary(lambda grid: dev.to_numpy(model_predictions(model, grid)), x_train, y_train, x_test,
                            y_test, config.plot_boundary)
    final = history[-1]["test_accuracy"] if history else float("nan")
    log(f"final test accuracy {100 * final:.2f}%  (checkpoint {checkpoint_path}, metrics {out / 'metrics.json'})")
    return {"history": history, "test_accuracy": final, "checkpoint": str(checkpoint_path)}


def _save(out, checkpoint_path, model, opt, state, config, comm, parallel, dev) -> None:
    """The checkpoint and metrics of an epoch's end, written by rank 0 once every rank holds the same weights."""
    if parallel:
        parallel.require_agreement()
    if comm.rank == 0:
        _write(out, checkpoint_path, model.state_dict(), opt.state_dict(), state, config, comm, dev)
    comm.barrier()  # no rank runs ahead of a checkpoint it might resume from


def _write(out, checkpoint_path, model_state, optim_state, state, config, comm, dev) -> None:
    save_checkpoint(checkpoint_path, model_state, optim_state, state)
    history = state["history"]
    metrics = {"config": _jsonable(config), "device": dev.name, "device_details": dev.describe(),
               "world_size": comm.size, "history": history,
               "test_accuracy": history[-1]["test_accuracy"], "checkpoint": str(checkpoint_path)}
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    if config.plot:
        plot_curves(history, config.plot)


def model_predictions(model, x):
    """The predicted class of every row of host array ``x`` (on the model's device)."""
    return next(pred for _, pred in _predictions(model, x, len(x)))


def _what_was_kept(checkpoint_path: Path, epoch: int | None) -> str:
    if epoch is not None:
        return f"The last good checkpoint, after epoch {epoch}, is kept: {checkpoint_path}."
    if checkpoint_path.exists():
        return f"No epoch of this run finished; {checkpoint_path} is an earlier run's, untouched."
    return "No epoch finished, so no checkpoint was written."


@contextlib.contextmanager
def lock_run_folder(out: Path):
    """Create ``out`` and hold an exclusive ``flock`` on ``out/.lock`` for the block: a second run on the same folder
    is a RunFolderError at once (the lock file stays; the lock goes with the process, however it ends)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunFolderError(f"--out {out}: exists and is not a folder") from None
    except OSError as exc:
        raise RunFolderError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    lock_path = out / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise RunFolderError(f"--out {out}: cannot write there ({exc.strerror or exc}: {lock_path})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise RunFolderError(f"--out {out} is in use by another gpunet train{f' (pid {holder})' if holder else ''}: "
                                 "wait for it to finish, or choose another --out") from None
        except OSError as exc:  # a file system without locks (ENOLCK, EOPNOTSUPP)
            raise RunFolderError(f"--out {out}: cannot lock {lock_path} ({exc.strerror or exc}): use a folder on a "
                                 "local file system") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_outputs(config: TrainConfig) -> None:
    """RunFolderError unless every file the run will write can be written: ``checkpoint.npz`` and ``metrics.json``
    in ``out`` (a file can be created there, and neither name is taken by a folder), and the ``plot`` path
    (matplotlib present, a format it writes, its folder writable)."""
    out = Path(config.out)
    for name in ("checkpoint.npz", "metrics.json"):
        if (out / name).exists() and not (out / name).is_file():
            raise RunFolderError(f"--out {out}: {out / name} exists and is not a file")
    _require_writable_folder(out, "--out")
    if config.plot:
        check_plot_path(config.plot, "--plot")
    if config.plot_boundary:
        if config.dataset not in TWO_D_DATASETS:
            raise RunFolderError(f"--plot-boundary draws 2-D datasets ({', '.join(TWO_D_DATASETS)}), not "
                                 f"{config.dataset}")
        check_plot_path(config.plot_boundary, "--plot-boundary")


def check_plot_path(path, flag: str = "--plot") -> None:
    """RunFolderError unless matplotlib can write a plot to ``path``: installed, a format it knows, a writable
    folder, and no folder of that name."""
    path = Path(path)
    try:
        plots._pyplot()
    except RuntimeError as exc:
        raise RunFolderError(f"{flag} {path}: {exc}") from None
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix and path.suffix[1:].lower() not in formats:
        raise RunFolderError(f"{flag} {path}: matplotlib cannot write {path.suffix} files; use one of "
                             f"{', '.join('.' + f for f in sorted(formats))}")
    if path.exists() and not path.is_file():
        raise RunFolderError(f"{flag} {path}: exists and is not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"{flag} {path}: cannot create its folder {path.parent} ({exc.strerror or exc})") from None
    _require_writable_folder(path.parent, flag)


def _require_writable_folder(folder: Path, flag: str) -> None:
    """Create and remove a probe file in ``folder`` (permission bits alone do not tell: root, read-only mounts)."""
    probe = folder / f".gpunet-probe.{os.getpid()}.tmp"
    try:
        probe.unlink(missing_ok=True)  # left by an earlier process of this pid that was killed here
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise RunFolderError(f"{flag} {folder}: cannot write there ({exc.strerror or exc})") from None


def resume(checkpoint_path: Path, config: TrainConfig, model, opt, log) -> tuple:
    """Load the checkpoint into ``model`` and ``opt``; return ``(epochs done, history)``. A checkpoint ``gpunet
    train`` did not write (no config, epoch or optimizer state) or one of other settings (RUN_DEFINING) is refused
    before anything is loaded."""
    model_state, optim_state, meta = load_checkpoint(checkpoint_path)
    saved, epoch, history = meta.get("config"), meta.get("epoch"), meta.get("history", [])
    lacking = [what for what, ok in (
        ("the training settings ('config')", isinstance(saved, dict)),
        ("the epoch", isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0),
        ("the optimizer state", "step_count" in optim_state and "lr" in optim_state),
        ("a valid history", isinstance(history, list) and all(
            isinstance(h, dict) and {"epoch", "train_loss", "test_accuracy"} <= set(h) for h in history)),
    ) if not ok]
    if lacking:
        raise CheckpointError(f"{checkpoint_path}: cannot resume from it: it lacks {', '.join(lacking)} (a checkpoint "
                              "saved through the API rather than by gpunet train?). Start afresh without --resume, "
                              "or use another --out.")
    now = _jsonable(config)
    differing = [f"--{key.replace('_', '-')} {_shown(saved.get(key))} in the checkpoint, {_shown(now[key])} now"
                 for key in RUN_DEFINING if saved.get(key) != now[key]]
    if differing:
        raise RunFolderError(f"--resume: {checkpoint_path} was trained with other settings ({'; '.join(differing)}). "
                             "Resume with the same settings, or train into another --out.")
    model.load_state_dict(model_state)
    opt.load_state_dict(optim_state)
    changed = [f"{key} {_shown(saved[key])} -> {_shown(now[key])}" for key in
               ("lr", "schedule", "epochs", "batch_size", "momentum", "weight_decay", "dropout", "seed")
               if key in saved and saved[key] != now[key]]
    log(f"resumed from {checkpoint_path} after epoch {epoch}" + (f" (changed: {', '.join(changed)})" if changed else ""))
    return epoch, history


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or '""'
    return str(value)


def require_labels_in_range(labels, n_classes: int, split: str) -> None:
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(bad.argmax())
        raise ValueError(f"{split} label {int(labels[i])} of sample {i} is out of range: a dataset of {n_classes} "
                         f"classes needs labels in [0, {n_classes})")


CHECK_EVERY = 20  # steps between looks at the loss: one host sync per window, not per step


def train_epoch(model, loss_fn, opt, batches, epoch, config, total_steps, parallel=None) -> dict:
    """One epoch. Losses are kept on the device and looked at every ``CHECK_EVERY`` steps (a host sync), so a
    NaN or inf is still pinned to the exact step that produced it; the updates after the last look are covered by a
    check at the end that every weight and optimizer buffer is finite (one more sync). With ``parallel`` (a
    DataParallel), each step is this rank's slice of the global batch and one allreduce; every rank then holds the
    same global loss, so all of them stop together, with one message, if it diverges."""
    model.train()
    for layer in model.modules():
        if isinstance(layer, nn.Dropout):
            layer.reseed(epoch)
    xp = model.device.xp
    losses = xp.zeros(len(batches), dtype=xp.float64)
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
    with in_a_step, model.device.context():  # the step's operators (losses[i] = loss) on the model's GPU
        for i, (xb, yb) in enumerate(bar):
            opt.lr = learning_rate(config, opt.step_count, total_steps)
            if parallel:
                loss = parallel.forward_backward(xb, yb)
            else:
                loss = loss_fn.forward(model.forward(xb), yb)
                model.backward(loss_fn.backward())
            losses[i] = loss
            seen += len(yb)
            if i % CHECK_EVERY == CHECK_EVERY - 1 or i == len(batches) - 1:
                _check_finite(model.device, losses, i, epoch, first_step, config)
                bar.set_postfix(loss=f"{float(losses[i]):.4f}", samples_s=f"{seen / (time.perf_counter() - start):.0f}")
            opt.step()
            stop_if_requested(parallel.comm if parallel else None)  # a signal: every rank stops after this step
    _check_weights_finite(model, opt, epoch, config)
    model.device.synchronize()
    seconds = time.perf_counter() - start
    record = {"epoch": epoch + 1, "train_loss": float(xp.mean(losses)), "seconds": seconds,
              "samples_per_s": seen / seconds}
    if parallel:
        record["allreduce_seconds_per_step"] = parallel.allreduce_seconds / max(parallel.steps, 1)
    return record


def _check_finite(device, losses, upto, epoch, first_step, config):
    start = max(0, upto - CHECK_EVERY + 1)
    if bool(device.xp.isfinite(losses[start:upto + 1]).all()):
        return
    values = device.to_numpy(losses)
    bad = next(j for j in range(start, upto + 1) if not math.isfinite(float(values[j])))
    raise DivergenceError(
        f"loss became {float(values[bad])} at step {first_step + bad + 1} (epoch {epoch + 1}, batch {bad + 1}): "
        f"the weights diverged. {_causes(config)}")


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


def model_sizes(model) -> list:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [linears[0].in_features] + [m.out_features for m in linears]


def _jsonable(config: TrainConfig) -> dict:
    d = dataclasses.asdict(config)
    d["hidden"] = list(d["hidden"])
    return d

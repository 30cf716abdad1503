"""The training run behind ``gpunet train``: data -> MLP -> loss -> optimizer, epoch after epoch, into a locked
run folder.

Every epoch ends with a check that the weights are finite, a test evaluation, a line of metrics and, once
``save_every`` seconds have passed (and at the end), an atomic checkpoint and an atomic metrics JSON. The last
finished epoch not yet written is kept in host memory and written on Ctrl-C or when a later epoch diverges, so
``resume`` continues from the last good epoch.
"""
from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path

from .. import nn, optim, plots
from ..checkpoint import atomic_write, remove_stale_temporaries, save_checkpoint
from ..data import Batches
from ..data.registry import load_dataset
from ..distributed import Communicator, DataParallel, rank_device, world
from ..trainer import Trainer
from .epoch import train_epoch
from .errors import DivergenceError, Interrupted, RunFolderError, out_of_memory_advice
from .evaluation import accuracy, model_predictions, model_sizes, require_labels_in_range
from .run_folder import CHECKPOINT_NAME, METRICS_NAME, check_outputs, lock_run_folder, resume
from .settings import OPTIMIZERS, TrainConfig, jsonable


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


def fit(config: TrainConfig, log=print) -> dict:
    """Train as ``config`` says, checkpointing into ``config.out`` (locked meanwhile).

    Errors: RunFolderError (folder busy, unwritable output, nothing or something else to resume), DivergenceError
    (saying which checkpoint, if any, holds the last good epoch), OutOfMemory, CheckpointError, DatasetError,
    ValueError; Ctrl-C is an Interrupted naming the checkpoint kept.
    """
    out = Path(config.out)
    checkpoint_path = out / CHECKPOINT_NAME
    saved = {"epoch": None}  # the epoch of the checkpoint this run wrote or resumed from
    comm = world() if config.distributed else Communicator()
    lead = comm.rank == 0  # the one rank that locks the folder, writes files, logs and shows progress
    try:
        with lock_run_folder(out) if lead else contextlib.nullcontext():
            if lead:
                check_outputs(config)
                for path in (checkpoint_path, out / METRICS_NAME):
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
    loss_fn = nn.SoftmaxCrossEntropy(check_labels=False, label_smoothing=config.label_smoothing, device=dev)
    total_steps = config.epochs * len(batches)
    history, first_epoch = [], 0
    if config.resume:
        with out_of_memory_advice(dev.name, "loading the checkpoint", "Try --device cpu."):
            first_epoch, history = resume(checkpoint_path, config, model, opt, log)
        saved["epoch"] = first_epoch
    # Every rank built the same weights from the seed (or loaded the same checkpoint); rank 0's are broadcast.
    parallel = DataParallel(model, loss_fn, comm) if config.distributed else None
    trainer = Trainer(model, loss_fn, opt, parallel=parallel, clip_grad_norm=config.clip_grad_norm)
    if config.recipe:
        log(config.recipe)
    log(f"training {config.dataset} on {dev.name}: {model_sizes(model)} {config.activation}, "
        f"{config.optimizer} lr={config.lr} batch={config.batch_size} epochs={config.epochs} seed={config.seed}"
        + (f" clip-grad-norm={config.clip_grad_norm:g}" if config.clip_grad_norm is not None else "")
        + (f", {comm.size} ranks ({comm.name})" if parallel else ""))
    log_every = max(1, config.epochs // 20)  # about twenty lines, however many epochs
    last_save, unsaved = time.monotonic(), None
    try:
        for epoch in range(first_epoch, config.epochs):
            record = train_epoch(trainer, batches, epoch, config, total_steps)
            with out_of_memory_advice(dev.name, "evaluating on the test set", "Try --device cpu."):
                record["test_accuracy"] = accuracy(model, x_test, y_test)
            history.append(record)
            if epoch == first_epoch or (epoch + 1) % log_every == 0 or epoch + 1 == config.epochs:
                log(f"epoch {epoch + 1}/{config.epochs}  train loss {record['train_loss']:.4f}  "
                    f"test accuracy {100 * record['test_accuracy']:.2f}%  {record['samples_per_s']:.0f} samples/s  "
                    f"({record['seconds']:.1f} s)")
            state = {"config": jsonable(config), "epoch": epoch + 1, "step": opt.step_count, "history": history,
                     "sizes": model_sizes(model), "n_classes": n_classes}
            due = epoch + 1 == config.epochs or time.monotonic() - last_save >= config.save_every
            if comm.from_rank0(due):  # rank 0's clock decides for every rank
                _save(out, checkpoint_path, model, opt, state, config, comm, parallel, dev)
                saved["epoch"], last_save, unsaved = epoch + 1, time.monotonic(), None
            else:  # kept in host memory, written on Ctrl-C or divergence: a copy of an epoch's end, not a step's
                unsaved = (model.state_dict(), opt.state_dict(), {**state, "history": list(history)})
    except (KeyboardInterrupt, DivergenceError):
        # Every rank meets a divergence at the same step (they share the global loss), and the last finished epoch
        # is the last good one: rank 0 writes it, so that the run can resume from there (with a lower --lr).
        if unsaved is not None and comm.rank == 0:
            _write(out, checkpoint_path, *unsaved, config, comm, dev)
            saved["epoch"] = unsaved[2]["epoch"]
        raise
    if config.plot_boundary and comm.rank == 0:
        plots.plot_boundary(lambda grid: dev.to_numpy(model_predictions(model, grid)), x_train, y_train, x_test,
                            y_test, config.plot_boundary)
    final = history[-1]["test_accuracy"] if history else float("nan")
    log(f"final test accuracy {100 * final:.2f}%  (checkpoint {checkpoint_path}, metrics {out / METRICS_NAME})")
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
    metrics = {"config": jsonable(config), "device": dev.name, "device_details": dev.describe(),
               "world_size": comm.size, "history": history,
               "test_accuracy": history[-1]["test_accuracy"], "checkpoint": str(checkpoint_path)}
    atomic_write(out / METRICS_NAME, lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    if config.plot:
        plots.plot_curves(history, config.plot)


def _what_was_kept(checkpoint_path: Path, epoch: int | None) -> str:
    if epoch is not None:
        return f"The last good checkpoint, after epoch {epoch}, is kept: {checkpoint_path}."
    if checkpoint_path.exists():
        return f"No epoch of this run finished; {checkpoint_path} is an earlier run's, untouched."
    return "No epoch finished, so no checkpoint was written."


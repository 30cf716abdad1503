"""The run folder (``--out``): locked for the whole run, its output paths checked before the dataset is even
loaded, and the checkpoint in it checked before a resumed run loads it.

A second run on the same folder, or a folder or plot path that cannot be written, is an error at once, not after
an epoch; a checkpoint of other settings is refused before anything is loaded.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..checkpoint import CheckpointError, load_checkpoint
from .errors import RunFolderError
from .plot_paths import check_plot_path, require_writable_folder
from .settings import MAY_CHANGE_ON_RESUME, RUN_DEFINING, TrainConfig, jsonable

LOCK_NAME = ".lock"
CHECKPOINT_NAME, METRICS_NAME = "checkpoint.npz", "metrics.json"
TWO_D_DATASETS = ("spiral", "moons")


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
    for name in (CHECKPOINT_NAME, METRICS_NAME):
        if (out / name).exists() and not (out / name).is_file():
            raise RunFolderError(f"--out {out}: {out / name} exists and is not a file")
    require_writable_folder(out, "--out")
    if config.plot:
        check_plot_path(config.plot, "--plot")
    if config.plot_boundary:
        if config.dataset not in TWO_D_DATASETS:
            raise RunFolderError(f"--plot-boundary draws 2-D datasets ({', '.join(TWO_D_DATASETS)}), not "
                                 f"{config.dataset}")
        check_plot_path(config.plot_boundary, "--plot-boundary")


def resume(checkpoint_path: Path, config: TrainConfig, model, opt, log) -> tuple:
    """Load the checkpoint into ``model`` and ``opt``; return ``(epochs done, history)``. A checkpoint ``gpunet
    train`` did not write (no config, epoch or optimizer state) or one of other settings (RUN_DEFINING) is refused
    before anything is loaded. A setting the checkpoint lacks (one added since it was written) is not compared."""
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
    now = jsonable(config)
    differing = [f"--{key.replace('_', '-')} {_shown(saved.get(key))} in the checkpoint, {_shown(now[key])} now"
                 for key in RUN_DEFINING if saved.get(key) != now[key]]
    if differing:
        raise RunFolderError(f"--resume: {checkpoint_path} was trained with other settings ({'; '.join(differing)}). "
                             "Resume with the same settings, or train into another --out.")
    model.load_state_dict(model_state)
    opt.load_state_dict(optim_state)
    changed = [f"{key} {_shown(saved[key])} -> {_shown(now[key])}" for key in MAY_CHANGE_ON_RESUME
               if key in saved and saved[key] != now[key]]
    log(f"resumed from {checkpoint_path} after epoch {epoch}" + (f" (changed: {', '.join(changed)})" if changed else ""))
    return epoch, history


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or '""'
    return str(value)

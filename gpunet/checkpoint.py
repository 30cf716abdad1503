"""Checkpoints: one ``.npz`` file (readable by any NumPy), written atomically.

Layout (all keys are plain arrays, no pickles):
- ``model/<parameter name>``: the weights, e.g. ``model/0.weight`` (in_features, out_features) and ``model/0.bias``;
- ``optim/<key>``: optimizer state, e.g. ``optim/state.0.m``, and the scalars ``optim/step_count``, ``optim/lr``;
- ``meta``: UTF-8 JSON (as uint8) with the format version, the training config, the epoch and step.

Writing goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed over the target:
a crash or ``kill -9`` during a save leaves the previous checkpoint whole.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""


def atomic_write(path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file, then fsync and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            _fault_injection_pause()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _fault_injection_pause() -> None:
    """``GPUNET_SLOW_SAVE=seconds`` holds a save between writing and renaming: the crash tests kill it there."""
    delay = float(os.environ.get("GPUNET_SLOW_SAVE", "0") or 0)
    if delay > 0:
        import time

        time.sleep(delay)


def remove_stale_temporaries(path) -> None:
    """Delete what a save killed half-way left behind (``.<name>.*.tmp`` beside ``path``)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def save_checkpoint(path, model_state: dict, optim_state: dict | None = None, meta: dict | None = None) -> None:
    arrays = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    for k, v in (optim_state or {}).items():
        arrays[f"optim/{k}"] = np.asarray(v)
    meta = dict(meta or {}, format_version=FORMAT_VERSION)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path):
    """Return ``(model_state, optim_state, meta)``; every way the file can be broken is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})") from exc
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not a gpunet checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable metadata ({exc})") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[len("optim/"):]: (v.item() if v.ndim == 0 else v) for k, v in arrays.items() if k.startswith("optim/")}
    return model, optim, meta

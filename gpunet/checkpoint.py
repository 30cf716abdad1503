"""Checkpoints: one ``.npz`` file (readable by any NumPy), written atomically.

Layout (all keys are plain arrays, no pickles):
- ``model/<parameter name>``: the weights, e.g. ``model/0.weight`` (in_features, out_features) and ``model/0.bias``;
- ``optim/<key>``: optimizer state, e.g. ``optim/state.0.m``, and the scalars ``optim/step_count``, ``optim/lr``;
- ``meta``: UTF-8 JSON (as uint8) with the format version, the training config, the epoch and step.

Writing goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed over the target:
a crash or ``kill -9`` during a save leaves the previous checkpoint whole. The file gets the mode any new file
gets (0666 less the umask). Weights and optimizer buffers must be finite floating-point arrays, both when saved
and when loaded: a checkpoint of diverged weights is never written, and never loaded.

Reading trusts nothing in the file: each member's ``.npy`` header must agree with the member's size before any
array is allocated, so a header claiming 1e13 floats is an error, not a MemoryError.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import dtypes

FORMAT_VERSION = 1
NPY_MAGIC = b"\x93NUMPY"
# Deflate cannot shrink data by more than about 1032:1; a zip member claiming more is lying about its size.
MAX_DEFLATE_RATIO = 1100


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""


def atomic_write(path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file, then fsync and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
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


def _create_temporary(path: Path):
    """``(fd, name)`` of a new ``.<name>.<random>.tmp`` beside ``path``, created with mode 0666 so that the umask
    applies as to any new file (``tempfile.mkstemp`` would make it 0600, and the rename would keep that)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), str(tmp)
        except FileExistsError:
            continue


def _fault_injection_pause() -> None:
    """``GPUNET_SLOW_SAVE=seconds`` holds a save between writing and renaming: the crash tests kill it there."""
    delay = float(os.environ.get("GPUNET_SLOW_SAVE", "0") or 0)
    if delay > 0:
        import time

        time.sleep(delay)


def remove_stale_temporaries(path) -> None:
    """Delete what a save killed half-way left behind (``.<name>.*.tmp`` beside ``path``). Only safe while no
    other process writes ``path``: ``gpunet train`` holds its run folder's lock meanwhile."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def require_finite_floats(key: str, value, where: str = "") -> None:
    """CheckpointError unless ``value`` is a real floating-point array with no NaN or inf."""
    value = np.asarray(value)
    prefix = f"{where}: " if where else ""
    if value.dtype.kind != "f":
        raise CheckpointError(f"{prefix}{key!r} holds {value.dtype} values: weights and optimizer state must be "
                              f"real floating point ({', '.join(dtypes.NAMES)})")
    finite = np.isfinite(value)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise CheckpointError(f"{prefix}{key!r} holds {bad} non-finite value(s) (NaN or inf) of {finite.size}: "
                              "the weights diverged")


def save_checkpoint(path, model_state: dict, optim_state: dict | None = None, meta: dict | None = None) -> None:
    """Write ``model_state``, ``optim_state`` and ``meta`` to ``path`` atomically; CheckpointError (nothing written)
    when a weight or optimizer buffer is not a finite floating-point array."""
    arrays = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    for k, v in (optim_state or {}).items():
        arrays[f"optim/{k}"] = np.asarray(v)
    for key, value in arrays.items():
        if _is_tensor(key):
            require_finite_floats(key, value, f"not saving {path}")
    meta = dict(meta or {}, format_version=FORMAT_VERSION)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _is_tensor(key: str) -> bool:
    """Weights (``model/...``) and optimizer buffers (``optim/state.<i>.<name>``), not the optimizer's scalars."""
    return key.startswith("model/") or key.startswith("optim/state.")


def load_checkpoint(path):
    """Return ``(model_state, optim_state, meta)``; every way the file can be broken is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise CheckpointError(f"checkpoint {what}: {path}")
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head == NPY_MAGIC:
        raise CheckpointError(f"{path}: a single .npy array, not a gpunet checkpoint (an .npz archive)")
    try:
        arrays = _read_npz(path)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError, TypeError, OverflowError,
            NotImplementedError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {_short(exc)})") from exc
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not a gpunet checkpoint (no 'meta' entry)")
    meta = _parse_meta(path, arrays.pop("meta"))
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[len("optim/"):]: (v.item() if v.ndim == 0 else v) for k, v in arrays.items() if k.startswith("optim/")}
    for key, value in arrays.items():
        if _is_tensor(key):
            require_finite_floats(key, value, str(path))
    return model, optim, meta


def mlp_layers(path, model_state: dict, meta: dict) -> tuple[list[int], list]:
    """``(sizes, [weight, bias, weight, bias, ...] in layer order)`` of the MLP a ``gpunet train`` checkpoint
    holds, its metadata's layer sizes checked against the weights' shapes, so that a model is built only of the
    size the file's own arrays are (metadata claiming 10**12 hidden units would otherwise allocate them). The
    weights are ``<index>.weight`` (in, out) and ``<index>.bias`` (out,), indexed by ``nn.mlp``'s layers, which
    dropout shifts (0, 3, 6 rather than 0, 2, 4): so they are returned in order, not by name. CheckpointError
    for any mismatch."""
    sizes = meta.get("sizes")
    if not isinstance(meta.get("config"), dict) or not (isinstance(sizes, list) and len(sizes) >= 2 and all(
            type(s) is int and s > 0 for s in sizes)):
        raise CheckpointError(f"{path}: no training settings or layer sizes in its metadata: not a checkpoint "
                              "written by gpunet train")
    layers: dict[int, dict] = {}
    for key, value in model_state.items():
        index, _, kind = key.partition(".")
        if not (index.isascii() and index.isdigit() and kind in ("weight", "bias")):
            raise CheckpointError(f"{path}: unexpected weight {'model/' + key!r}: an MLP's are <layer>.weight and "
                                  "<layer>.bias")
        layers.setdefault(int(index), {})[kind] = value
    ordered = [layers[i] for i in sorted(layers)]
    shapes = [(tuple(np.shape(layer.get("weight"))), tuple(np.shape(layer.get("bias")))) for layer in ordered]
    wanted = [((n_in, n_out), (n_out,)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    if shapes != wanted:
        held = ", ".join(f"{w}+{b}" for w, b in shapes) or "none"
        raise CheckpointError(f"{path}: its metadata claims layer sizes {sizes}, but its weights do not fit them "
                              f"(weight+bias shapes: {held}): corrupt")
    n_classes = meta.get("n_classes", sizes[-1])
    if n_classes != sizes[-1]:
        raise CheckpointError(f"{path}: its metadata claims {n_classes!r} classes, but its last layer gives "
                              f"{sizes[-1]}: corrupt")
    return sizes, [layer[kind] for layer in ordered for kind in ("weight", "bias")]


def require_fits_dataset(path, sizes: list[int], dataset: str, n_features: int, n_classes: int,
                         trained_on=None) -> None:
    """CheckpointError unless the model takes ``dataset``'s samples (its input size is their feature count)
    and gives one score per class: a 3-class model scored on a 2-class set would report a meaningless accuracy."""
    if sizes[0] == n_features and sizes[-1] == n_classes:
        return
    hint = f" (it was trained on {trained_on})" if isinstance(trained_on, str) and trained_on != dataset else ""
    raise CheckpointError(f"{path}: the model takes {sizes[0]} input features and gives {sizes[-1]} classes; "
                          f"{dataset} has {n_features} features and {n_classes} classes{hint}")


def _parse_meta(path: Path, raw) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: 'meta' must be UTF-8 JSON as a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: unreadable metadata ({_short(exc)})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: metadata must be a JSON object, got a JSON {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    return meta


def _read_npz(path: Path) -> dict:
    """Every member of the archive as an array, each ``.npy`` header checked against the member's size first."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint (not a zip archive, as an .npz is)")
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise CheckpointError(f"{path}: unexpected member {info.filename!r} (an .npz holds .npy files only)")
            key = info.filename[:-len(".npy")]
            if key in arrays:
                raise CheckpointError(f"{path}: member {info.filename!r} appears twice")
            if info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 4096:
                raise CheckpointError(f"{path}: member {key!r} claims {info.file_size} bytes from {info.compress_size} "
                                      "compressed: corrupt")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise CheckpointError(f"{path}: member {key!r} has .npy format {version}, expected 1.0 or 2.0")
                header = f.tell()
            if dtype.hasobject:
                raise CheckpointError(f"{path}: member {key!r} holds Python objects (a pickle), which gpunet never writes")
            claimed = math.prod(shape) * dtype.itemsize
            if header + claimed != info.file_size:
                raise CheckpointError(f"{path}: member {key!r}: its header claims shape {shape} of {dtype} "
                                      f"({claimed} bytes), the member holds {info.file_size - header}: corrupt")
            with archive.open(info) as f:
                arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."

"""What a training run can end with, besides finishing: divergence, running out of memory, an unusable run
folder, Ctrl-C; and the advice an out-of-memory error comes with."""
from __future__ import annotations

import contextlib
import signal


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

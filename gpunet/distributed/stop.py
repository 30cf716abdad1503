"""Stopping a run on SIGINT or SIGTERM, on one process or N ranks alike (docs/distributed.md, "Signals").

A signal only sets a flag. The training loop asks :func:`requested` at every step boundary; on several ranks the
flags are summed by a small non-blocking allreduce started at one step boundary and finished at the next, so
every rank learns of a signal that reached any of them at the same step and they stop together (an exception
raised inside a collective would leave the others waiting in it). The loop then raises :class:`Stopped`, rank 0
writes the last finished epoch, and the job exits 128 + the signal's number.

A second signal, or ``grace`` seconds after the first, ends the process at once: a watcher thread (woken through
``signal.set_wakeup_fd``, so it runs even while the main thread waits inside an MPI call) removes the temporary
file of a save in progress, prints one line on rank 0, and calls ``os._exit``. The last complete checkpoint stays.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time

import numpy

from ..env import seconds_setting

GRACE_ENV = "GPUNET_STOP_GRACE"
DEFAULT_GRACE = 30.0  # seconds from the first signal to the forced end
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_active: "SignalPolicy | None" = None  # the policy installed by the command line, if any


class Stopped(KeyboardInterrupt):
    """Every rank agreed to stop after the same step, on ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


def grace_seconds(environ=os.environ) -> float:
    """``$GPUNET_STOP_GRACE`` (seconds, finite and >= 0), else 30; a bad value is an error, not ignored."""
    return seconds_setting(GRACE_ENV, DEFAULT_GRACE, zero_allowed=True, environ=environ)


def requested(comm=None) -> bool:
    """Whether to stop after this step: the local flag on one process. On several ranks, the flags of all of them
    summed by a non-blocking allreduce of two integers started at the previous step boundary and finished here
    (the step's gradient allreduce has carried it along meanwhile, so it adds no synchronisation of its own); every
    rank gets the same answer at the same step, one step after the signal was first seen. False, with no
    communication, when no policy is installed (``fit`` called as a library, where Ctrl-C stays a
    KeyboardInterrupt): every rank of a job is started the same way, so they all skip it alike."""
    policy = _active
    if policy is None:
        return False
    counts = numpy.zeros(2, dtype=numpy.int64)  # how many ranks saw SIGINT, SIGTERM
    if policy.signum is not None:
        counts[SIGNALS.index(policy.signum)] = 1
    if comm is not None and comm.size > 1:
        counts = policy.exchange(comm, counts)
    if not counts.any():
        return False
    policy.agreed = signal.SIGINT if counts[0] else signal.SIGTERM  # the same on every rank
    return True


def stop_if_requested(comm=None) -> None:
    """The step boundary's hook: raise :class:`Stopped` on every rank alike once any rank got a signal."""
    if requested(comm):
        raise Stopped(_active.agreed)


class SignalPolicy:
    """SIGINT and SIGTERM handling for the block (the main thread only): the first signal sets ``signum``; a
    second, or ``grace`` seconds later, calls ``cleanup()`` and then ``on_force(signum, reason)`` (which should print
    at most one line), and ends the process with ``exit_status(signum)`` of the first signal."""

    def __init__(self, grace: float = DEFAULT_GRACE, cleanup=None, on_force=None):
        self.grace, self.cleanup, self.on_force = grace, cleanup, on_force
        self.signum: int | None = None  # the first signal received
        self.agreed: int | None = None  # the signal the ranks stopped on
        self._deadline: float | None = None
        self._closing = threading.Event()
        self._pending = None  # (the started allreduce of the flags, its buffer)

    def exchange(self, comm, counts):
        """The sum over the ranks of the ``counts`` they gave at the previous call (zeros at the first); this call's
        are sent on unless that sum already says stop."""
        summed = numpy.zeros_like(counts)
        if self._pending is not None:
            self._pending[0].wait()
            summed, self._pending = self._pending[1], None
        if not summed.any():
            self._pending = (comm.allreduce_sum_start(counts), counts)
        return summed

    def __enter__(self):
        global _active
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous = {s: signal.signal(s, self._noted) for s in SIGNALS}
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, name="gpunet-signals", daemon=True)
        self._watcher.start()
        _active = self
        return self

    def __exit__(self, *exc_info):
        global _active
        _active = None
        if self._pending is not None:  # started alike by every rank, at their last step: finished alike
            self._pending[0].wait()
        signal.set_wakeup_fd(self._previous_fd)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._closing.set()
        os.write(self._write, b"\0")  # wakes the watcher, which then sees _closing
        self._watcher.join()
        os.close(self._read)
        os.close(self._write)
        return False

    def _noted(self, signum, frame) -> None:
        """The Python-level handler: nothing to do here, the watcher thread reads the same signal from the pipe
        (this handler may run late: the main thread runs it only between bytecodes)."""

    def _watch(self) -> None:
        while True:
            timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
            ready, _, _ = select.select([self._read], [], [], timeout)
            if self._closing.is_set():
                return
            if not ready:  # the grace period ran out
                self._force("grace")
            for byte in os.read(self._read, 64):
                if byte not in SIGNALS:
                    continue
                if self.signum is None:
                    self.signum = byte
                    self._deadline = time.monotonic() + self.grace
                else:
                    self._force("again")

    def _force(self, reason: str) -> None:
        """End the process now, as promised: no save half-written in the way, one line, the first signal's status.
        ``reason``: "again" (a second signal) or "grace" (the grace period ran out)."""
        try:
            if self.cleanup is not None:
                self.cleanup()
            if self.on_force is not None:
                self.on_force(self.signum, reason)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(exit_status(self.signum))

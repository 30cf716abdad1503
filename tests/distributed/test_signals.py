"""Signals on N ranks (docs/distributed.md, "Signals"): SIGINT and SIGTERM stop every rank after the same step,
rank 0 finishes its save and says one line, the job exits 130 or 143; a second signal or the grace period ends it
at once with the last complete checkpoint whole; a rank that dies before MPI starts ends the job; nothing is left
running. Saves are made slow by ``GPUNET_SLOW_SAVE`` (a fixed sleep inside the save), and a signal is sent only
once the run is where the test wants it (an epoch's line printed, a save's temporary file on disk)."""
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpunet.checkpoint import load_checkpoint
from gpunet.distributed import stop
from gpunet.distributed.communicator import START_TIMEOUT_ENV, DistributedUnavailable, Pending, start_timeout
from gpunet.distributed.launch import _Forwarder

pytest.importorskip("mpi4py", reason="pip install 'gpunet[mpi]'")
from gpunet.distributed.launch import mpiexec  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["train", "--dataset", "spiral", "--hidden", "8", "--device", "cpu", "--no-progress", "--save-every", "1000"]
ENDLESS = ["--epochs", "100000"]


def gpunet(out: Path, *args, nproc=2, env=None):
    """``gpunet train`` on the spiral through the ``--nproc`` launcher, started, not waited for."""
    command = [sys.executable, "-m", "gpunet", *TRAIN, "--out", str(out), *args]
    command += ["--nproc", str(nproc)] if nproc else []
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def wait_for_output(proc, text: str, timeout: float = 120) -> str:
    """Read ``proc``'s stdout until ``text`` appears (an assertion error, with what it said, if it ends first)."""
    said, deadline = b"", time.monotonic() + timeout
    while text.encode() not in said:
        assert time.monotonic() < deadline, f"no {text!r} in {timeout} s: {said.decode()}"
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"ended before {text!r}: {said.decode()} {proc.communicate()[1].decode()}"
            said += chunk
    return said.decode()


def wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.02)


def temporaries(out: Path) -> list:
    return sorted(p.name for p in out.glob(".*.tmp"))


def processes_of(out: Path) -> list:
    """The processes whose command line names ``out`` (the launcher, mpiexec, the ranks), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(out).encode() in cmdline:
                found.append(int(entry.name))
    return found


def assert_nothing_left_running(out: Path) -> None:
    deadline = time.monotonic() + 10
    while processes_of(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(out) == [], "orphan processes"


def finish(proc, timeout: float = 60) -> tuple:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode()


def saved_epoch(out: Path) -> int:
    return load_checkpoint(out / "checkpoint.npz")[2]["epoch"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_launcher_saves_once_and_exits_128_plus_it(tmp_path, signum):
    """The issue's case: with a save of a second, rank 0's Ctrl-C save used to be cut off by the other rank's
    exit (MPI_Abort): no checkpoint, a stale .tmp, and one disagreeing line from each rank."""
    out = tmp_path / "run"
    proc = gpunet(out, *ENDLESS, env={"GPUNET_SLOW_SAVE": "1"})
    wait_for_output(proc, "epoch 1/")
    proc.send_signal(signum)
    code, err = finish(proc)
    assert code == 128 + signum and "Traceback" not in err, err
    assert err.count("interrupted") == 1, err
    epoch = int(re.search(r"\(after epoch (\d+)\)", err).group(1))
    assert epoch >= 1 and saved_epoch(out) == epoch
    assert ("interrupted by SIGTERM: kept" in err) == (signum == signal.SIGTERM)
    assert temporaries(out) == []
    assert_nothing_left_running(out)
    resumed = gpunet(out, "--epochs", str(epoch + 1), "--resume")  # the lock went with the job
    code, err = finish(resumed)
    assert code == 0, err
    assert saved_epoch(out) == epoch + 1


def test_sigterm_to_one_process_saves_and_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = gpunet(out, *ENDLESS, nproc=None)
    wait_for_output(proc, "epoch 1/")
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 143 and err.count("interrupted") == 1 and "Traceback" not in err, err
    assert saved_epoch(out) == int(re.search(r"interrupted by SIGTERM: kept .* \(after epoch (\d+)\)", err).group(1))


def test_a_second_signal_or_the_grace_period_ends_the_job_at_once(tmp_path):
    out = tmp_path / "run"
    code, err = finish(gpunet(out, "--epochs", "2"))
    assert code == 0, err
    before = (out / "checkpoint.npz").read_bytes()
    endless = [*ENDLESS, "--resume"]

    # A second Ctrl-C while rank 0 saves (the save would take 5 minutes).
    proc = gpunet(out, *endless, env={"GPUNET_SLOW_SAVE": "300"})
    wait_for_output(proc, "epoch 3/")  # an epoch of this run finished: a signal now makes rank 0 save it
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: temporaries(out), "save in progress")
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc, timeout=30)
    assert code == 130 and time.monotonic() - start < 15, err
    assert err.count("interrupted") == 1 and "(SIGINT again): stopped at once" in err, err
    assert temporaries(out) == [] and (out / "checkpoint.npz").read_bytes() == before
    assert_nothing_left_running(out)

    # SIGTERM alone, with a grace period of 1 s.
    proc = gpunet(out, *endless, env={"GPUNET_SLOW_SAVE": "300", stop.GRACE_ENV: "1"})
    wait_for_output(proc, "epoch 3/")  # an epoch of this run finished: a signal now makes rank 0 save it
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc, timeout=30)
    assert code == 143 and time.monotonic() - start < 15, err
    assert err.count("interrupted") == 1 and "(still running 1 s after SIGTERM)" in err, err
    assert temporaries(out) == [] and (out / "checkpoint.npz").read_bytes() == before
    assert_nothing_left_running(out)

    code, err = finish(gpunet(out, "--epochs", "3", "--resume"))
    assert code == 0 and saved_epoch(out) == 3, err


def test_the_documented_mpiexec_command_stops_with_one_line(tmp_path):
    out = tmp_path / "run"
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "gpunet", *TRAIN, "--distributed",
               "--out", str(out), *ENDLESS]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "GPUNET_SLOW_SAVE": "1"})
    wait_for_output(proc, "epoch 1/")
    proc.send_signal(signal.SIGINT)  # what a Ctrl-C at the terminal sends mpiexec (the ranks have sessions of their own)
    code, err = finish(proc)
    assert code == 130 and err.count("interrupted") == 1 and "Traceback" not in err, err
    assert saved_epoch(out) == int(re.search(r"\(after epoch (\d+)\)", err).group(1))
    assert_nothing_left_running(out)


def test_a_rank_that_dies_before_mpi_starts_ends_the_job(tmp_path):
    """Rank 1 exits before MPI_Init (mpiexec's MPMD form runs another program there): rank 0 used to spin in
    MPI_Init for ever."""
    out = tmp_path / "run"
    command = [mpiexec(), "-n", "1", sys.executable, "-m", "mpi4py", "-m", "gpunet", *TRAIN, "--distributed",
               "--out", str(out), *ENDLESS, ":", "-n", "1", sys.executable, "-c", "raise SystemExit('no start')"]
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "GPUNET_MPI_START_TIMEOUT": "2"})
    code, err = finish(proc, timeout=60)
    assert code != 0 and time.monotonic() - start < 30, err
    assert "_wait_for_every_rank_in_mpi_init" in err, err  # the watchdog's dump says where rank 0 waited
    assert_nothing_left_running(out)


# -- the parts, in this process --------------------------------------------------------------------------------


class TwoRanks:
    """Rank 0 of two, the other rank's counts summed in: what MpiCommunicator's allreduce does."""

    size, rank = 2, 0

    def __init__(self, other):
        self.other, self.calls = np.asarray(other), 0

    def allreduce_sum_start(self, array):
        self.calls += 1
        array += self.other
        return Pending()


def test_a_signal_on_any_rank_stops_every_rank_at_the_same_step():
    with stop.SignalPolicy(grace=60) as policy:
        quiet = TwoRanks([0, 1])  # only the other rank got SIGTERM
        assert not stop.requested(quiet)  # sent at this step boundary, known by every rank at the next
        assert stop.requested(quiet) and policy.agreed == signal.SIGTERM  # this rank stops too, on SIGTERM
        assert quiet.calls == 1  # nothing more is sent once the ranks stop
    with stop.SignalPolicy(grace=60) as policy:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: a flag, read at the next step boundary
        wait_for(lambda: policy.signum == signal.SIGINT, "the flag", timeout=10)
        both = TwoRanks([0, 1])
        assert not stop.requested(both)
        with pytest.raises(stop.Stopped) as stopped:
            stop.stop_if_requested(both)
        assert stopped.value.signum == signal.SIGINT  # SIGINT on any rank wins, alike on every rank
        assert stop.requested(None)  # one process: its own flag, at once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    assert not stop.requested(TwoRanks([5, 5]))  # no policy: no communication, no stop


def test_the_launcher_passes_the_first_signal_on_and_later_ones_as_sigterm():
    class Job:
        sent = []

        def send_signal(self, signum):
            self.sent.append(signum)

    forwarder = _Forwarder(grace=5)
    forwarder(signal.SIGINT, None)  # while mpiexec starts: passed on once it has
    job = Job()
    forwarder.attach(job)
    forwarder(signal.SIGINT, None)
    forwarder(signal.SIGINT, None)
    assert job.sent == [signal.SIGINT, signal.SIGTERM, signal.SIGTERM] and forwarder.first == signal.SIGINT


@pytest.mark.parametrize("text,seconds", [("", 30.0), ("2.5", 2.5), ("0", 0.0)])
def test_the_grace_period_comes_from_the_environment(text, seconds):
    assert stop.grace_seconds({stop.GRACE_ENV: text}) == seconds


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "soon"])
def test_a_bad_grace_period_is_an_error(text):
    with pytest.raises(ValueError, match=stop.GRACE_ENV):
        stop.grace_seconds({stop.GRACE_ENV: text})


@pytest.mark.parametrize("text,seconds", [("", 30.0), (" ", 30.0), ("0.5", 0.5)])
def test_the_mpi_start_timeout_comes_from_the_environment(text, seconds):
    assert start_timeout({START_TIMEOUT_ENV: text}) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_mpi_start_timeout_says_what_to_fix(text):
    """0 is refused here (no wait at all would end every job), where a grace of 0 means "stop at once"."""
    with pytest.raises(DistributedUnavailable, match=f"{START_TIMEOUT_ENV}=.*must be a number of seconds > 0"):
        start_timeout({START_TIMEOUT_ENV: text})

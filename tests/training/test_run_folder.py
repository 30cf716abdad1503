"""The run folder: one run at a time (a lock), every output path checked before the dataset is loaded, and
--resume that refuses what it cannot honestly continue."""
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gpunet import nn
from gpunet.checkpoint import CheckpointError, save_checkpoint
from gpunet.cli import main
from gpunet.training import RunFolderError, TrainConfig, fit, lock_run_folder

ROOT = Path(__file__).resolve().parents[2]
SPIRAL = ["train", "--dataset", "spiral", "--hidden", "8", "--epochs", "1", "--device", "cpu", "--no-progress"]


def cli(args):
    """``(exit code, stderr)`` of ``gpunet`` run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    return code, err.getvalue()


@pytest.fixture
def no_dataset(monkeypatch):
    """The checks must come before the dataset is loaded, let alone an epoch trained."""
    def refuse(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the output paths were checked")
    monkeypatch.setattr("gpunet.training.loop.load_dataset", refuse)


def test_a_second_run_on_a_locked_folder_is_refused_and_touches_nothing(tmp_path, no_dataset):
    out = tmp_path / "run"
    with lock_run_folder(out):
        in_flight = out / ".checkpoint.npz.0123456789ab.tmp"  # the first run's save under way
        in_flight.write_bytes(b"half a checkpoint")
        code, err = cli([*SPIRAL, "--out", str(out)])
        assert code == 2 and f"--out {out} is in use by another gpunet train (pid {os.getpid()})" in err
        assert in_flight.read_bytes() == b"half a checkpoint"


def test_the_lock_goes_when_the_run_ends(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunFolderError, match="nothing to resume"):
        fit(TrainConfig(dataset="moons", hidden=(4,), epochs=1, device="cpu", progress=False, out=str(out),
                        resume=True), log=lambda *_: None)
    assert cli([*SPIRAL, "--out", str(out)])[0] == 0  # the failed run released the lock
    assert cli([*SPIRAL, "--out", str(out)])[0] == 0


@pytest.mark.slow
def test_two_processes_on_one_folder(tmp_path):
    """The measured case: the second ``gpunet train`` used to delete the first one's in-flight temporary file."""
    env = {**os.environ, "GPUNET_SLOW_SAVE": "1", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "gpunet", "train", "--dataset", "spiral", "--hidden", "8", "--epochs", "3",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path)]
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob(".checkpoint.npz.*.tmp")):
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
        time.sleep(0.02)
    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "is in use by another gpunet train" in second.stderr
    assert first.wait(120) == 0, first.stdout.read()


def unprivileged(function):
    """``function()`` run as user nobody where the tests run as root (who may write into a read-only folder)."""
    if os.geteuid() != 0:
        return function()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, json.dumps(function()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = pipe.read()
    os.waitpid(pid, 0)
    return tuple(json.loads(result))


@pytest.fixture
def world_readable_tmp():
    """A folder user nobody can reach, for the read-only case (pytest's tmp_path is under a 0700 folder of
    root's)."""
    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o755)
    yield folder
    for path in sorted(folder.rglob("*"), reverse=True):
        path.chmod(0o755) if path.is_dir() else None
    subprocess.run(["rm", "-rf", str(folder)], check=True)


def make_file(path):
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("case", ["a file", "under a file", "read-only", "checkpoint is a folder",
                                  "plot format", "plot under a file", "plot is a folder"])
def test_every_output_path_is_checked_before_training(world_readable_tmp, no_dataset, case):
    base = world_readable_tmp
    out, extra = base / "run", []
    if case == "a file":
        make_file(out)
        expect = "exists and is not a folder"
    elif case == "under a file":
        out = make_file(base / "file") / "run"
        expect = "cannot create the folder"
    elif case == "read-only":
        out.mkdir()
        (out / ".lock").touch()
        (out / ".lock").chmod(0o666)
        out.chmod(0o555)
        expect = "cannot write there"
    elif case == "checkpoint is a folder":
        (out / "checkpoint.npz").mkdir(parents=True)
        expect = "checkpoint.npz exists and is not a file"
    elif case == "plot format":
        extra, expect = ["--plot", str(base / "x.txt")], "matplotlib cannot write .txt files"
    elif case == "plot under a file":
        extra, expect = ["--plot", str(make_file(base / "file") / "x.png")], "cannot create its folder"
    else:
        (base / "x.png").mkdir()
        extra, expect = ["--plot", str(base / "x.png")], "exists and is not a file"
    if case.startswith("plot"):
        pytest.importorskip("matplotlib")
    run = lambda: cli([*SPIRAL, "--out", str(out), *extra])  # noqa: E731
    code, err = unprivileged(run) if case == "read-only" else run()
    assert code == 2 and expect in err and "Traceback" not in err, err


def test_eval_checks_the_confusion_path_first(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr("gpunet.cli.load_checkpoint", lambda *a: pytest.fail("loaded before the check"))
    code, err = cli(["eval", str(tmp_path / "ck.npz"), "--device", "cpu", "--confusion", str(tmp_path / "cm.txt")])
    assert code == 2 and "--confusion" in err and "cannot write .txt" in err


# -- resume ---------------------------------------------------------------------------------------------------------


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, no_dataset):
    code, err = cli([*SPIRAL, "--out", str(tmp_path), "--resume"])
    assert code == 2 and "nothing to resume" in err and str(tmp_path / "checkpoint.npz") in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch spiral run with adam, relu, hidden 8: the checkpoint the resume tests start from."""
    out = tmp_path_factory.mktemp("trained")
    assert cli([*SPIRAL, "--optimizer", "adam", "--out", str(out)])[0] == 0  # not the spiral recipe's sgd
    return (out / "checkpoint.npz").read_bytes()


def run_folder_with(tmp_path, checkpoint: bytes):
    (tmp_path / "checkpoint.npz").write_bytes(checkpoint)
    return tmp_path


@pytest.mark.parametrize("change, named", [
    (["--activation", "tanh"], ["--activation relu in the checkpoint, tanh now"]),
    (["--optimizer", "sgd"], ["--optimizer adam in the checkpoint, sgd now"]),
    (["--hidden", "8,8"], ["--hidden 8 in the checkpoint, 8,8 now"]),
    (["--dataset", "moons"], ["--dataset spiral in the checkpoint, moons now"]),
    (["--activation", "tanh", "--optimizer", "adamw"], ["--activation relu", "--optimizer adam in the checkpoint, "
                                                                              "adamw now"]),
])
def test_resume_refuses_other_settings_naming_them(tmp_path, trained, change, named):
    out = run_folder_with(tmp_path, trained)
    code, err = cli([*SPIRAL, "--out", str(out), "--resume", *change])
    assert code == 2 and "trained with other settings" in err
    for text in named:
        assert text in err
    assert (out / "checkpoint.npz").read_bytes() == trained


def test_resume_may_change_the_learning_rate_and_epochs(tmp_path, trained, capsys):
    out = run_folder_with(tmp_path, trained)
    assert main([*SPIRAL[:-5], "--epochs", "2", "--lr", "0.0005", "--device", "cpu", "--no-progress",
                 "--optimizer", "adam", "--out", str(out), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out


def test_resume_from_a_checkpoint_saved_through_the_api(tmp_path, no_dataset, monkeypatch):
    """No epoch, no config, no optimizer state: a CheckpointError saying what it lacks, not a KeyError."""
    from gpunet.data import spiral
    monkeypatch.setattr("gpunet.training.loop.load_dataset", lambda *a: (*spiral(seed=0), *spiral(seed=0), 3))
    model = nn.mlp([2, 8, 3], device="cpu")
    save_checkpoint(tmp_path / "checkpoint.npz", model.state_dict())
    code, err = cli([*SPIRAL, "--out", str(tmp_path), "--resume"])
    assert code == 2 and "cannot resume from it: it lacks the training settings ('config'), the epoch, the " \
                         "optimizer state" in err
    save_checkpoint(tmp_path / "checkpoint.npz", model.state_dict(), None,
                    {"config": {"dataset": "spiral", "hidden": [8], "activation": "relu", "optimizer": "adam"},
                     "epoch": "one"})
    with pytest.raises(CheckpointError, match="it lacks the epoch, the optimizer state"):
        fit(TrainConfig(dataset="spiral", hidden=(8,), device="cpu", progress=False, out=str(tmp_path), resume=True),
            log=lambda *_: None)


def test_a_finished_run_resumes_to_nothing_to_do(tmp_path, trained, capsys):
    out = run_folder_with(tmp_path, trained)
    assert main([*SPIRAL, "--optimizer", "adam", "--out", str(out), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert (out / "checkpoint.npz").read_bytes() == trained  # nothing left to train: nothing rewritten

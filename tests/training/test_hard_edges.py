"""Hard edges of training: divergence, out of memory, crashes (kill -9) during a save and mid-epoch, plots, CLI
errors. (The ops' input edges, NaN and empty batches, are in tests/ops/test_input_edges.py.)"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpunet import nn
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.training import DivergenceError, OutOfMemory, TrainConfig, fit

ROOT = Path(__file__).resolve().parents[2]
QUIET = dict(log=lambda *_: None)


def spiral_config(out, **kw):
    base = dict(dataset="spiral", hidden=(16,), batch_size=32, lr=0.01, device="cpu", progress=False, out=str(out))
    return TrainConfig(**{**base, **kw})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings are the point here
def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    fit(spiral_config(tmp_path, epochs=1, optimizer="sgd"), **QUIET)
    with pytest.raises(DivergenceError, match=r"at step \d+ \(epoch 2, batch \d+\).*learning rate too high.*"
                                              r"try 1e\+19.*after epoch 1, is kept"):
        fit(spiral_config(tmp_path, epochs=3, lr=1e20, optimizer="sgd", resume=True), **QUIET)
    _, _, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == 1  # the diverged epoch was never saved


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_exit_code_from_the_cli(tmp_path, capsys):
    code = main(["train", "--dataset", "spiral", "--hidden", "16", "--optimizer", "sgd", "--lr", "1e20", "--epochs", "2",
                 "--out", str(tmp_path), "--device", "cpu"])
    assert code == 3 and "learning rate" in capsys.readouterr().err


class OutOfMemoryError(Exception):
    """Stands in for cupy.cuda.memory.OutOfMemoryError."""


@pytest.mark.parametrize("error", [MemoryError("host"), OutOfMemoryError("Out of memory allocating 8 GB")])
def test_out_of_memory_names_the_batch_size(tmp_path, monkeypatch, error):
    def explode(self, x):
        raise error
    monkeypatch.setattr(nn.Sequential, "forward", explode)
    with pytest.raises(OutOfMemory, match=r"batch size 32 .*smaller --batch-size \(e.g. 16\)"):
        fit(spiral_config(tmp_path, epochs=1), **QUIET)


def run_cli(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "gpunet", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "GPUNET_DEVICE": "cpu", **(env or {})})


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError("condition not reached")


def weights(path):
    return load_checkpoint(path)[0]


def run_straight_then_start_another(tmp_path, args, env=None):
    """Train uninterrupted into ``straight/``; start the same run into ``crashed/`` and return it running."""
    straight = run_cli([*args, "--out", str(tmp_path / "straight")])
    assert straight.wait(600) == 0
    return run_cli([*args, "--out", str(tmp_path / "crashed")], env=env), tmp_path / "crashed"


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.slow
def test_kill_during_a_save_keeps_the_previous_checkpoint_and_resume_matches(tmp_path):
    args = ["train", "--dataset", "spiral", "--hidden", "16", "--epochs", "4", "--batch-size", "32",
            "--device", "cpu", "--no-progress", "--save-every", "0"]  # a checkpoint at every epoch's end
    proc, out = run_straight_then_start_another(tmp_path, args, env={"GPUNET_SLOW_SAVE": "2"})
    ckpt = out / "checkpoint.npz"
    wait_for(lambda: ckpt.exists())                                   # epoch 1 saved
    wait_for(lambda: any(out.glob(".checkpoint.npz.*.tmp")))          # epoch 2's save is under way
    kill(proc)
    assert any(out.glob(".checkpoint.npz.*.tmp"))                     # the half-done save is left behind ...
    assert load_checkpoint(ckpt)[2]["epoch"] == 1                     # ... and the previous checkpoint is whole
    resumed = run_cli([*args, "--out", str(out), "--resume"])
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0 and "resumed from" in output and "after epoch 1" in output
    assert not any(out.glob(".checkpoint.npz.*.tmp"))
    assert_same_weights(weights(ckpt), weights(tmp_path / "straight" / "checkpoint.npz"))


@pytest.mark.slow
def test_kill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = ["train", "--dataset", "mnist", "--hidden", "256,256", "--epochs", "3", "--batch-size", "64",
            "--device", "cpu", "--no-progress", "--save-every", "0"]  # a checkpoint at every epoch's end
    proc, out = run_straight_then_start_another(tmp_path, args)
    for line in proc.stdout:
        if line.startswith("epoch 1/3"):
            epoch_seconds = float(line.rsplit("(", 1)[1].split(" s)")[0])
            break
    wait_for(lambda: (out / "checkpoint.npz").exists())
    time.sleep(epoch_seconds / 3)  # a third into epoch 2, whatever this machine's speed
    kill(proc)
    assert load_checkpoint(out / "checkpoint.npz")[2]["epoch"] == 1
    resumed = run_cli([*args, "--out", str(out), "--resume"])
    assert resumed.wait(600) == 0
    assert_same_weights(weights(out / "checkpoint.npz"), weights(tmp_path / "straight" / "checkpoint.npz"))


def test_plots(tmp_path, capsys):
    image = pytest.importorskip("matplotlib.image")
    assert main(["train", "--dataset", "spiral", "--hidden", "32", "--epochs", "5", "--lr", "0.02",
                 "--out", str(tmp_path), "--device", "cpu", "--plot", str(tmp_path / "curves.png")]) == 0
    assert image.imread(tmp_path / "curves.png").shape[:2] == (400, 1000)
    assert main(["eval", str(tmp_path / "checkpoint.npz"), "--device", "cpu",
                 "--confusion", str(tmp_path / "cm.png")]) == 0
    assert "confusion matrix written" in capsys.readouterr().out
    assert image.imread(tmp_path / "cm.png").ndim == 3


def test_training_curves_of_a_long_run_draw_a_line_and_a_few_ticks(tmp_path):
    """10,000 epochs: one line per curve (no marker per epoch) and at most 10 whole-epoch ticks, so the picture is
    legible and costs as little as a short run's (it was one tick and one marker per epoch: seconds per plot)."""
    pytest.importorskip("matplotlib")
    from gpunet.plots import MAX_EPOCH_TICKS, curves_figure, plot_curves

    history = [{"epoch": e, "train_loss": 1 / e, "test_accuracy": 1 - 1 / e} for e in range(1, 10_001)]
    fig = curves_figure(history)
    fig.canvas.draw()
    for ax in fig.axes:
        assert len(ax.lines) == 1 and ax.lines[0].get_marker() in (None, "None", "")
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert 2 <= len(ticks) <= MAX_EPOCH_TICKS + 1 and all(float(t).is_integer() for t in ticks)
        assert len(ax.get_children()) < 60  # no artist per epoch
    short = curves_figure(history[:5])
    assert all(ax.lines[0].get_marker() == "o" for ax in short.axes)  # a short run marks each epoch
    assert all(float(t).is_integer() for t in short.axes[0].get_xticks())
    assert plot_curves(history, tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_confusion_matrix_counts_every_sample():
    from gpunet.data import spiral
    from gpunet.training import confusion_matrix
    x, y = spiral(30, 3)
    matrix = confusion_matrix(nn.mlp([2, 8, 3], device="cpu"), x, y, 3)
    assert matrix.shape == (3, 3) and matrix.sum() == 90 and matrix.sum(axis=1).tolist() == [30, 30, 30]


def test_cli_errors_for_checkpoints_that_do_not_fit(tmp_path, capsys):
    assert main(["train", "--dataset", "spiral", "--hidden", "16", "--epochs", "1", "--out", str(tmp_path),
                 "--device", "cpu"]) == 0
    assert main(["train", "--dataset", "spiral", "--hidden", "8", "--epochs", "2", "--out", str(tmp_path),
                 "--device", "cpu", "--resume"]) == 2
    assert "other settings (--hidden 16 in the checkpoint, 8 now)" in capsys.readouterr().err
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip file at all")
    assert main(["eval", str(tmp_path / "checkpoint.npz"), "--device", "cpu"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err

"""End to end: training reaches its accuracy, the CLI trains and evaluates, checkpoints are portable and atomic."""
import json

import numpy as np
import pytest

from gpunet import nn, optim
from gpunet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gpunet.cli import main
from gpunet.data import Batches, spiral
from gpunet.devices.host import host_threads
from gpunet.training import TrainConfig, accuracy, fit


def train_spiral(dev, epochs=60, seed=0):
    x, y = spiral(100, 3, seed=seed)
    model = nn.mlp([2, 64, 3], "relu", seed=seed, device=dev)
    loss_fn = nn.SoftmaxCrossEntropy(device=dev)
    opt = optim.Adam(model.parameters(), lr=0.02)
    batches = Batches(x, y, 32, seed=seed, device=dev)
    for epoch in range(epochs):
        for xb, yb in batches.epoch(epoch):
            loss_fn.forward(model.forward(xb), yb)
            model.backward(loss_fn.backward())
            opt.step()
    return model, x, y


def test_spiral_reaches_95_percent_in_a_small_budget():
    """60 epochs of 10 minibatches (a second or two here; no timing assertion: machines are shared)."""
    model, x, y = train_spiral("cpu")
    assert accuracy(model, x, y) > 0.95


def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "spiral", "--hidden", "32", "--epochs", "40", "--batch-size", "32",
                 "--lr", "0.02", "--optimizer", "adam", "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 40 and metrics["test_accuracy"] > 0.9
    # What decided the run's speed: the conftest pins NumPy's BLAS.
    assert metrics["device_details"] == {"name": "cpu", "host_threads": host_threads(), "blas": "numpy",
                                         "blas_setting": "numpy"}
    assert "final test accuracy" in capsys.readouterr().out
    assert main(["eval", str(out / "checkpoint.npz"), "--device", "cpu"]) == 0
    assert f"{100 * metrics['test_accuracy']:.2f}%" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--hidden", "a,b"])
    with pytest.raises(SystemExit):
        main(["train", "--batch-size", "0"])
    assert main(["train", "--dataset", "spiral", "--device", "tpu", "--out", str(tmp_path)]) == 2
    assert "unknown device" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope.npz")]) == 2


class Interrupted(Exception):
    pass


def stop_after_epoch(n):
    def log(line):
        if line.startswith(f"epoch {n}/"):
            raise Interrupted(line)
    return log


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_resume_reaches_the_same_weights(tmp_path, schedule):
    config = dict(dataset="spiral", hidden=(16,), batch_size=32, lr=0.01, device="cpu", progress=False,
                  epochs=4, schedule=schedule, save_every=0)  # a checkpoint at every epoch's end
    fit(TrainConfig(out=str(tmp_path / "straight"), **config), log=lambda *_: None)
    with pytest.raises(Interrupted):
        fit(TrainConfig(out=str(tmp_path / "split"), **config), log=stop_after_epoch(3))
    # the epoch-3 line is printed before its checkpoint is written: the run resumes after epoch 2
    assert load_checkpoint(tmp_path / "split" / "checkpoint.npz")[2]["epoch"] == 2
    fit(TrainConfig(out=str(tmp_path / "split"), resume=True, **config), log=lambda *_: None)
    a, oa, _ = load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    b, ob, meta = load_checkpoint(tmp_path / "split" / "checkpoint.npz")
    assert meta["epoch"] == 4 and oa["step_count"] == ob["step_count"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_checkpoint_errors(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.ones(3)}, {"step_count": 1, "lr": 0.1}, {"epoch": 1})
    model, optim_state, meta = load_checkpoint(path)
    assert meta["epoch"] == 1 and optim_state["step_count"] == 1
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    np.savez(tmp_path / "plain.npz", w=np.ones(2))
    with pytest.raises(CheckpointError, match="not a gpunet checkpoint"):
        load_checkpoint(tmp_path / "plain.npz")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.ones(3)}, meta={"epoch": 1})

    class Unsaveable:
        def __array__(self, *a, **k):
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"w": Unsaveable()}, meta={"epoch": 2})
    assert load_checkpoint(path)[2]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary left behind

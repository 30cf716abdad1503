"""The command line's edges: arguments refused by name, $GPUNET_DEVICE as the default device, Ctrl-C, running out of
memory outside the step, and divergence in the update after the last loss check."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpunet import nn, optim
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import build_parser, main
from gpunet.training import DivergenceError, Interrupted, OutOfMemory, TrainConfig, fit

ROOT = Path(__file__).resolve().parents[2]
QUIET = dict(log=lambda *_: None)
SPIRAL = ["train", "--dataset", "spiral", "--hidden", "8", "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("flag, value, says", [
    ("--dropout", "-0.5", "must be a number in [0, 1), got -0.5"), ("--dropout", "nan", "[0, 1)"),
    ("--dropout", "1", "[0, 1)"), ("--momentum", "-5", "must be a number in [0, 1), got -5"),
    ("--momentum", "inf", "[0, 1)"), ("--lr", "inf", "positive finite"), ("--lr", "nan", "positive finite"),
    ("--lr", "0", "positive finite"), ("--weight-decay", "-1", "finite number >= 0"),
    ("--seed", "-1", "must be a non-negative integer, got -1"), ("--seed", "1.5", "non-negative integer"),
    ("--batch-size", "0", "positive integer"), ("--epochs", "x", "positive integer"),
    ("--hidden", "", "one or more positive sizes"), ("--hidden", ",", "one or more positive sizes"),
    ("--hidden", "16,,16", "one or more positive sizes"), ("--hidden", "16,0", "one or more positive sizes"),
])
def test_bad_arguments_are_refused_naming_the_flag(capsys, flag, value, says):
    with pytest.raises(SystemExit) as exit_:
        main(["train", f"{flag}={value}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}: " in err and says in err, err


def test_good_arguments_still_parse():
    args = build_parser().parse_args(["train", "--hidden", " 64, 32 ", "--dropout", "0", "--momentum", "0.99",
                                      "--seed", "0", "--lr", "1e-2", "--weight-decay", "0"])
    assert args.hidden == (64, 32) and args.dropout == 0 and args.momentum == 0.99 and args.seed == 0


@pytest.mark.parametrize("command", [["train"], ["eval", "ck.npz"]])
def test_device_defaults_to_gpunet_device(monkeypatch, command):
    monkeypatch.setenv("GPUNET_DEVICE", "sim")
    assert build_parser().parse_args(command).device == "sim"
    assert build_parser().parse_args([*command, "--device", "cpu"]).device == "cpu"
    monkeypatch.delenv("GPUNET_DEVICE")
    assert build_parser().parse_args(command).device == "auto"


def test_the_device_from_the_environment_is_the_one_trained_on(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GPUNET_DEVICE", "tpu")  # an unknown device shows it is read, without compiling anything
    assert main(["train", "--dataset", "spiral", "--epochs", "1", "--out", str(tmp_path)]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


# -- Ctrl-C ---------------------------------------------------------------------------------------------------------


def interrupt_in_epoch(monkeypatch, n):
    """Ctrl-C during epoch ``n`` (0-based) of the next run."""
    from gpunet.training import loop
    real = loop.train_epoch

    def train_epoch(trainer, batches, epoch, *rest):
        if epoch == n:
            raise KeyboardInterrupt
        return real(trainer, batches, epoch, *rest)
    monkeypatch.setattr(loop, "train_epoch", train_epoch)


def test_ctrl_c_says_what_was_kept_and_exits_130(tmp_path, monkeypatch, capsys):
    interrupt_in_epoch(monkeypatch, 2)
    assert main([*SPIRAL, "--epochs", "4", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: kept {tmp_path / 'checkpoint.npz'} (after epoch 2); continue with --resume" in err
    assert "Traceback" not in err and load_checkpoint(tmp_path / "checkpoint.npz")[2]["epoch"] == 2
    monkeypatch.undo()
    assert main([*SPIRAL, "--epochs", "4", "--out", str(tmp_path), "--resume"]) == 0  # and the lock is gone


def test_ctrl_c_before_an_epoch_finished(tmp_path, monkeypatch, capsys):
    interrupt_in_epoch(monkeypatch, 0)
    with pytest.raises(Interrupted) as info:
        fit(TrainConfig(dataset="spiral", hidden=(8,), device="cpu", progress=False, out=str(tmp_path)), **QUIET)
    assert info.value.checkpoint is None and isinstance(info.value, KeyboardInterrupt)
    assert main([*SPIRAL, "--out", str(tmp_path)]) == 130
    assert "no epoch finished, so this run wrote no checkpoint" in capsys.readouterr().err


def test_sigint_from_the_terminal(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "gpunet", *SPIRAL, "--epochs", "100000", "--out", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while not (tmp_path / "checkpoint.npz").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert f"interrupted: kept {tmp_path / 'checkpoint.npz'} (after epoch " in err


# -- out of memory outside the step ------------------------------------------------------------------------------


class OutOfMemoryError(Exception):
    """Stands in for cupy.cuda.memory.OutOfMemoryError."""


def spiral_config(out, **kw):
    return TrainConfig(**{**dict(dataset="spiral", hidden=(16,), batch_size=32, epochs=1, device="cpu",
                                 progress=False, out=str(out)), **kw})


@pytest.mark.parametrize("error", [MemoryError(), OutOfMemoryError("Out of memory allocating 8 GB")])
def test_out_of_memory_building_the_model(tmp_path, monkeypatch, error, capsys):
    def mlp(*args, **kwargs):
        raise error
    monkeypatch.setattr(nn, "mlp", mlp)
    with pytest.raises(OutOfMemory, match=r"building the model \[2, 16, 3\].*smaller --hidden"):
        fit(spiral_config(tmp_path), **QUIET)
    assert main([*SPIRAL, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "gpunet: error: out of memory on cpu building the model" in err and "Traceback" not in err


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_out_of_memory_allocating_the_optimizer_state(tmp_path, monkeypatch, optimizer):
    def buffer(self, index, name):
        raise OutOfMemoryError("Out of memory allocating the optimizer's state")
    monkeypatch.setattr(optim.Optimizer, "buffer", buffer)
    with pytest.raises(OutOfMemory, match=r"in a training step with batch size 32 .*smaller --batch-size \(e.g. 16\)"):
        fit(spiral_config(tmp_path, optimizer=optimizer), **QUIET)


def test_out_of_memory_moving_the_dataset(tmp_path, monkeypatch):
    def batches(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr("gpunet.training.loop.Batches", batches)
    with pytest.raises(OutOfMemory, match=r"moving the dataset .* to the device"):
        fit(spiral_config(tmp_path), **QUIET)


# -- divergence in the update after the last loss check ---------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_one_batch_per_epoch_and_an_infinite_learning_rate_writes_no_checkpoint(tmp_path):
    """The loss is looked at every CHECK_EVERY steps; with one batch per epoch the update after the last look used
    to be saved: the check of every weight at the epoch's end catches it."""
    with pytest.raises(DivergenceError) as info:
        fit(spiral_config(tmp_path, batch_size=300, lr=math.inf, optimizer="sgd", epochs=3), **QUIET)
    message = str(info.value)
    assert "0.weight became NaN or inf by step 1 (epoch 1)" in message
    assert "use a finite one, e.g. the default 0.001" in message and "try inf" not in message
    assert "no checkpoint was written" in message and not (tmp_path / "checkpoint.npz").exists()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_divergence_writes_and_names_the_last_good_epoch_kept_in_memory(tmp_path, capsys):
    """spiral --lr 1e30 with the default --save-every: epoch 1 ends finite but unsaved (5 s had not passed), epoch
    2 diverges. Epoch 1, kept in memory, is written and named (it used to be thrown away, with "No epoch
    finished")."""
    out = tmp_path / "run"
    assert main(["train", "--dataset", "spiral", "--epochs", "5", "--device", "cpu", "--no-progress", "--out",
                 str(out), "--lr", "1e30"]) == 3
    err = capsys.readouterr().err
    assert "loss became nan at step 2 (epoch 2, batch 1)" in err
    assert f"The last good checkpoint, after epoch 1, is kept: {out / 'checkpoint.npz'}." in err
    model_state, _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["epoch"] == 1 and [h["epoch"] for h in meta["history"]] == [1]
    assert all(np.isfinite(w).all() for w in model_state.values())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_checkpoint_kept_after_divergence_is_finite(tmp_path, capsys):
    assert main([*SPIRAL, "--epochs", "1", "--batch-size", "300", "--optimizer", "sgd", "--out", str(tmp_path)]) == 0
    assert main([*SPIRAL, "--epochs", "5", "--batch-size", "300", "--optimizer", "sgd", "--lr", "1e38",
                 "--out", str(tmp_path), "--resume"]) == 3
    err = capsys.readouterr().err
    assert "try 1e+37" in err and "is kept" in err
    model, optim_state, _ = load_checkpoint(tmp_path / "checkpoint.npz")  # refuses non-finite weights itself
    assert all(np.isfinite(v).all() for v in model.values())


def test_eval_of_a_checkpoint_saved_through_the_api(tmp_path, capsys):
    from gpunet.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "ck.npz", nn.mlp([2, 8, 3], device="cpu").state_dict())
    assert main(["eval", str(tmp_path / "ck.npz"), "--device", "cpu"]) == 2
    assert "not a checkpoint written by gpunet train" in capsys.readouterr().err

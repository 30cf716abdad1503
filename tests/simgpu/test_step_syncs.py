"""Issue 23, item 4: a training step on a GPU waits for the GPU nowhere, proven by the simulated GPU's count of
host synchronisations; a label out of range is still found, by the loss kernel's flag that the epoch reads at its
loss check (one host sync per window of ``CHECK_EVERY`` steps), and named by its step and row."""
import types

import numpy as np
import pytest

import gpunet
from gpunet import nn, optim
from gpunet.data.batches import Batches
from gpunet.devices import simgpu
from gpunet.trainer import Trainer
from gpunet.training import CHECK_EVERY, DivergenceError, TrainConfig, fit, train_epoch
from tests.scripts.test_scripts import bench_module

cp = simgpu.cupy


def _problem(dev, rows=32, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, 5)).astype(np.float32), rng.integers(0, classes, rows)


def _trainer(dev, optimizer, clip, smoothing=0.0):
    model = nn.mlp([5, 8, 4], "relu", dropout=0.1, seed=2, device=dev)
    opt = (optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd"
           else optim.AdamW(model.parameters(), lr=1e-2))
    loss_fn = nn.SoftmaxCrossEntropy(check_labels=False, label_smoothing=smoothing, device=dev)
    return Trainer(model, loss_fn, opt, clip_grad_norm=clip)


@pytest.mark.parametrize("optimizer, clip, smoothing", [("sgd", None, 0.0), ("adamw", 1.0, 0.1)])
def test_trainer_step_on_gpu_1_makes_no_host_sync(optimizer, clip, smoothing):
    """Trainer.step (forward, fused loss, backward, clipping, the update) on GPU 1 while GPU 0 is current."""
    dev = gpunet.device("simgpu:1")
    x, y = map(dev.asarray, _problem(dev))
    trainer = _trainer(dev, optimizer, clip, smoothing)
    assert cp.cuda.Device().id == 0
    syncs = []
    for _ in range(3):
        before = simgpu.host_syncs()
        loss = trainer.step(x, y)
        syncs.append(simgpu.host_syncs() - before)
    assert syncs == [0, 0, 0]
    assert loss.device.id == 1 and np.isfinite(dev.to_numpy(loss))
    before = simgpu.host_syncs()
    float(loss)  # the counter sees a read back: the zero above could have been otherwise
    assert simgpu.host_syncs() == before + 1


def test_an_epoch_syncs_once_per_loss_window_and_never_inside_a_step(monkeypatch):
    """train_epoch on the simulated GPU: no step syncs; the epoch's syncs are one read per window, then the
    weights' check, the final synchronize and the mean loss."""
    dev = gpunet.device("simgpu:0")
    x, y = _problem(dev, rows=2 * CHECK_EVERY + 5, seed=1)
    trainer = _trainer(dev, "sgd", None)
    batches = Batches(x, y, 1, seed=0, device=dev)
    per_step, step = [], trainer.step

    def counted(xb, yb):
        before = simgpu.host_syncs()
        loss = step(xb, yb)
        per_step.append(simgpu.host_syncs() - before)
        return loss
    monkeypatch.setattr(trainer, "step", counted)
    before = simgpu.host_syncs()
    record = train_epoch(trainer, batches, 0, TrainConfig(epochs=1, batch_size=1, progress=False), len(batches))
    assert per_step == [0] * len(batches) and np.isfinite(record["train_loss"])
    windows = -(-len(batches) // CHECK_EVERY)
    assert simgpu.host_syncs() - before == windows + 3


def test_fit_on_the_simulated_gpu_syncs_in_no_step(tmp_path, monkeypatch):
    """gpunet train's own path (fit, its Trainer) for a few steps: every step makes no host sync."""
    per_step, step = [], Trainer.step

    def counted(self, xb, yb):
        before = simgpu.host_syncs()
        loss = step(self, xb, yb)
        per_step.append(simgpu.host_syncs() - before)
        return loss
    monkeypatch.setattr(Trainer, "step", counted)
    config = TrainConfig(dataset="spiral", device="simgpu:1", hidden=(8,), epochs=2, batch_size=200,
                         optimizer="adam", out=str(tmp_path / "run"), progress=False, save_every=0.0)
    fit(config, log=lambda *a: None)
    assert len(per_step) >= 3 and per_step == [0] * len(per_step)


@pytest.mark.parametrize("name", ["simgpu:1", "sim"])
def test_a_bad_label_is_found_at_the_loss_check_and_named_by_step_and_row(name):
    """The step checks no label (a read back); the kernel flags the row, the window reads the flag: the error
    names the label, its row in the batch, and the step, before the NaN loss it causes is taken for a
    divergence."""
    dev = gpunet.device(name)
    x, y = _problem(dev, rows=12, seed=2)
    y[7] = 9  # batch 2 (rows 4-7 without shuffling), row 3 of it
    trainer = _trainer(dev, "sgd", None)
    batches = Batches(x, y, 4, shuffle=False, device=dev)
    with pytest.raises(ValueError, match=r"label 9 at row 3 is out of range: labels must lie in \[0, 4\) or equal "
                                         r"ignore_index=-100; in the batch of step 2 \(epoch 1, batch 2\)"):
        train_epoch(trainer, batches, 0, TrainConfig(epochs=1, batch_size=4, progress=False), len(batches))


def test_a_divergence_is_still_pinned_to_its_step():
    dev = gpunet.device("simgpu:0")
    x, y = _problem(dev, rows=12, seed=3)
    x[9, 0] = np.inf  # batch 3
    trainer = _trainer(dev, "sgd", None)
    batches = Batches(x, y, 4, shuffle=False, device=dev)
    with pytest.raises(DivergenceError, match=r"loss became nan at step 3 \(epoch 1, batch 3\)"):
        train_epoch(trainer, batches, 0, TrainConfig(epochs=1, batch_size=4, progress=False), len(batches))


def test_the_bench_counts_the_host_syncs_of_its_step_on_the_simulated_gpu():
    """The training section's timed step (Trainer's) makes none; a step that reads its loss back counts one."""
    step_counts, training = bench_module("step_counts"), bench_module("training")
    dev = gpunet.device("simgpu:0")
    x, y = map(dev.asarray, _problem(dev, classes=3))
    step = training.gpunet_trainer(dev, [5, 6, 3], "relu")
    assert step_counts.count_host_syncs(dev, lambda: step(x, y)) == 0
    assert step_counts.count_host_syncs(dev, lambda: float(step(x, y))) == 1
    assert step_counts.count_host_syncs(gpunet.device("cpu"), lambda: None) is None


def test_a_ranks_flagged_row_is_named_in_the_global_batch():
    """On data-parallel rank 1 of 2 the kernel flags a row of the rank's slice (rows 5-9 of 10): the error names
    the global row and its label, read only once the window finds the flag."""
    from gpunet.cuda.launcher import NO_ERROR, LabelFlag
    from gpunet.training import epoch

    dev = gpunet.device("simgpu:0")
    labels = dev.asarray(np.array([0, 1, 2, 3, 0, 1, 2, 11, 0, 1]))
    steps = dev.xp.zeros((2, 2))
    steps[:, epoch.LABEL_FLAG] = float(NO_ERROR)
    rank1 = types.SimpleNamespace(comm=types.SimpleNamespace(size=2, rank=1))
    flagged = {}
    epoch._keep_label_flag(LabelFlag(dev.xp.asarray(np.array([2], np.uint64)), 4, -100), steps, 1, labels, rank1,
                           flagged)
    with pytest.raises(ValueError, match=r"label 11 at row 7 is out of range.*in the batch of step 2 \(epoch 1, "):
        epoch._check_window(dev, steps, 1, 0, 0, TrainConfig(), flagged)


def test_a_bad_label_under_a_blocked_loss_is_named_by_its_row_in_the_batch():
    """nn.LinearCrossEntropy runs the kernel on row blocks, each flagging a row of its own block: the error still
    names the wrong label at its row in the batch (it named row 5's valid label for row 37)."""
    dev = gpunet.device("simgpu:0")
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((40, 5)).astype(np.float32), rng.integers(0, 4, 40)
    y[37] = 9
    model = nn.mlp([5, 8], "relu", seed=2, device=dev)
    loss_fn = nn.LinearCrossEntropy(8, 4, check_labels=False, block_rows=16, device=dev)
    trainer = Trainer(model, loss_fn, optim.SGD(model.parameters(), lr=0.1))
    batches = Batches(x, y, 40, shuffle=False, device=dev)
    with pytest.raises(ValueError, match=r"label 9 at row 37 is out of range.*in the batch of step 1"):
        train_epoch(trainer, batches, 0, TrainConfig(epochs=1, batch_size=40, progress=False), len(batches))

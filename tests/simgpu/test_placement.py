"""Defect 2 of issue 23: a device on GPU N must allocate and run everything on GPU N, whichever GPU is current
(CuPy allocates and launches on the current one). Proven on the simulated GPU 1 while GPU 0 is current."""
import numpy as np

import gpunet
from gpunet import nn, optim
from gpunet.data.batches import Batches
from gpunet.devices import simgpu
from gpunet.trainer import Trainer
from gpunet.training import TrainConfig, fit, train_epoch

cp = simgpu.cupy


def _every_array(model, opt, batches):
    arrays = [a for p in model.parameters() for a in (p.data, p.grad)]
    arrays += [buf for slot in opt.state for buf in slot.values()]
    arrays += [batches.x, batches.y]
    arrays += [layer._rng._target for layer in model.modules() if isinstance(layer, nn.Dropout)]
    return arrays


def test_a_training_epoch_on_gpu_1_keeps_every_array_on_gpu_1_while_gpu_0_is_current():
    """Defect 2 of issue 23: gradients, optimizer state, the batch gather, matmul, Dropout's generator and the
    epoch's losses landed on the current GPU (0), not on the device's."""
    dev = gpunet.device("simgpu:1")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((96, 6)).astype(np.float32), rng.integers(0, 3, 96)
    model = nn.mlp([6, 16, 3], "relu", dropout=0.2, seed=1, device=dev)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    batches = Batches(x, y, 32, seed=0, device=dev)
    config = TrainConfig(epochs=1, batch_size=32, progress=False)
    assert cp.cuda.Device().id == 0
    trainer = Trainer(model, nn.SoftmaxCrossEntropy(check_labels=False, device=dev), opt)
    record = train_epoch(trainer, batches, 0, config, 3)
    assert np.isfinite(record["train_loss"])
    product = dev.matmul(model.parameters()[0].data.T, model.parameters()[0].data)
    arrays = _every_array(model, opt, batches) + [product]
    assert len(arrays) > 10 and [getattr(a, "_device", None) for a in arrays] == [1] * len(arrays)


def test_fit_on_simulated_gpu_1_trains_there(tmp_path):
    config = TrainConfig(dataset="spiral", device="simgpu:1", hidden=(8,), epochs=1, batch_size=100,
                         out=str(tmp_path / "run"), progress=False, save_every=0.0)
    result = fit(config, log=lambda *a: None)
    assert result["history"][0]["epoch"] == 1 and np.isfinite(result["history"][0]["train_loss"])


def test_evaluation_on_gpu_1_runs_there_while_gpu_0_is_current():
    """accuracy, the confusion matrix and the predictions compared and counted on the current GPU (0) arrays of
    GPU 1: CuPy's device error (what ``gpunet eval --device cuda:1`` met)."""
    from gpunet.training import accuracy, confusion_matrix
    from gpunet.training.evaluation import model_predictions

    dev = gpunet.device("simgpu:1")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 6)).astype(np.float32), rng.integers(0, 3, 50)
    model = nn.mlp([6, 8, 3], "relu", seed=1, device=dev)
    assert cp.cuda.Device().id == 0
    host = nn.mlp([6, 8, 3], "relu", seed=1, device="cpu")
    want = np.argmax(host.forward(x), axis=1)
    assert accuracy(model, x, y, batch_size=16) == np.mean(want == y)
    matrix = confusion_matrix(model, x, y, 3, batch_size=16)
    assert matrix.sum() == 50 and np.trace(matrix) == np.sum(want == y)
    assert np.array_equal(dev.to_numpy(model_predictions(model, x)), want)


def test_auto_is_one_decision_for_every_rank(monkeypatch, caplog):
    """"auto" on a job where one rank has no usable GPU: every rank takes the CPU (it was: that rank alone, while
    the others waited in the GPU communicator's setup, a hang), and rank 0 names the rank without one."""
    import logging

    from gpunet.distributed import placement
    from gpunet.distributed.communicator import Communicator

    class TwoRanks(Communicator):
        rank, size, local_rank, local_size, host = 0, 2, 0, 2, "node-a"

        def allgather(self, value):
            return [value, ("node-b", "no NVIDIA driver")]

    monkeypatch.setattr(placement, "probe_cuda", lambda index: (simgpu.cupy, None))  # this rank has a GPU
    comm = TwoRanks()
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        dev, got = placement.rank_device("auto", comm)
    assert dev.name == "cpu" and got is comm
    assert "every rank trains on the CPU: rank 1 on node-b cannot use a GPU (no NVIDIA driver)" in caplog.text
    monkeypatch.setattr(TwoRanks, "allgather", lambda self, value: [value, None])  # both have one: the GPU
    assert placement._without_a_gpu(TwoRanks(), None) is False
    assert placement._without_a_gpu(TwoRanks(), "no NVIDIA driver") is True  # this rank lacks one: all do

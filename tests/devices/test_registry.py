"""The device registry: a new device registers a name and a factory, and every op runs on it without a line
changed in the other devices (docs/adding-a-device.md)."""
import numpy as np
import pytest

import gpunet
from gpunet import nn, ops, optim
from gpunet.devices import registry
from gpunet.devices.host import HostDevice
from gpunet.kinds import Kernels


class NumpyFormKernels(Kernels):
    """A toy device's kernels: every op's NumPy form, on whole arrays, counted (enough for an MLP to train)."""

    def __init__(self):
        self.calls = []

    def elementwise(self, op, *inputs, out=None):
        self.calls.append(op.name)
        result = op.numpy(np, *inputs)
        if out is None:
            return result
        np.copyto(out, result)
        return out

    def rows(self, op, *inputs, out=None):
        self.calls.append(op.name)
        wide = [a.astype(np.float64) for a in inputs]
        result = np.empty_like(wide[0])
        with np.errstate(all="ignore"):
            op.numpy(np, *wide, result)
        if out is None:
            return result.astype(inputs[0].dtype)
        out[...] = result
        return out

    def bias_add(self, op, y, bias):
        self.calls.append(op.name)
        return op.numpy(np, y, bias)

    def update(self, op, params, grads, *state_lists, hyper=()):
        self.calls.append(op.name)
        for i, (w, grad) in enumerate(zip(params, grads)):
            op.numpy(np, w, grad, *(None if lst is None else lst[i] for lst in state_lists), *hyper)

    def cross_entropy(self, op, logits, labels, ignore_index, grad_scale=None, check=True, out=None, targets=None,
                      weight=None, smoothing=0.0):
        self.calls.append(op.name)
        if labels is not None:
            gpunet.errors.check_label_range(np, labels, logits.shape[1], ignore_index)
        out = np.empty_like(logits) if out is None else out
        loss = np.empty(logits.shape[0], dtype=logits.dtype)
        row_scale = None if grad_scale is None else np.full(logits.shape[0], grad_scale[0], dtype=logits.dtype)
        op.numpy(np, logits, labels, targets, row_scale, loss, out, ignore_index, weight, smoothing)
        return loss, out


class ToyDevice(HostDevice):
    name = "toy"

    def __init__(self):
        self.kernels = NumpyFormKernels()


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))  # the registration ends with the test
    gpunet.devices.register_device("toy", ToyDevice)
    return gpunet.device("toy")


def test_a_registered_device_runs_ops_and_trains(toy):
    assert "toy" in gpunet.devices.registered_devices() and gpunet.device("TOY ") is toy
    x = np.random.default_rng(0).standard_normal((6, 5))
    np.testing.assert_allclose(ops.softmax(x, device=toy), ops.softmax(x, device="cpu"), rtol=1e-12)
    np.testing.assert_array_equal(ops.relu(x, device=toy), ops.relu(x, device="cpu"))
    model = nn.mlp([5, 8, 3], "relu", seed=0, device=toy)
    loss_fn, opt = nn.SoftmaxCrossEntropy(device=toy), optim.SGD(model.parameters(), lr=0.1)
    y = np.array([0, 1, 2, 0, 1, 2])
    loss = loss_fn.forward(model.forward(x.astype(np.float32)), y)
    model.backward(loss_fn.backward())
    opt.step()
    assert np.isfinite(loss)
    calls = set(toy.kernels.calls)
    assert {"softmax_forward", "relu_forward", "bias_relu", "softmax_cross_entropy", "sgd_update"} <= calls
    assert "softmax_cross_entropy_reduced" not in calls  # no fused form here: composed from the per-row one


def test_a_kind_the_device_lacks_says_so(toy):
    with pytest.raises(NotImplementedError, match="NumpyFormKernels has no cross-entropy kernels"):
        ops.softmax_cross_entropy_backward(np.full((2, 3), 1 / 3), np.array([0, 1]), device=toy)


def test_names_are_unique_and_only_indexed_devices_take_an_index(toy):
    with pytest.raises(ValueError, match="already registered"):
        gpunet.devices.register_device("toy", ToyDevice)
    with pytest.raises(ValueError, match="lower case"):
        gpunet.devices.register_device("Toy:1", ToyDevice)
    with pytest.raises(ValueError, match="unknown device 'toy:1': expected 'cpu', 'cuda', 'cuda:N', .*'toy'"):
        gpunet.device("toy:1")


def test_an_indexed_device_gets_its_index(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    built = []

    class Numbered(ToyDevice):
        def __init__(self, index):
            super().__init__()
            built.append(index)
            self.name = f"numbered:{index}"
    gpunet.devices.register_device("numbered", Numbered, indexed=True)
    assert gpunet.device("numbered:3").name == "numbered:3" and gpunet.device("numbered").name == "numbered:0"
    assert gpunet.device("numbered:3") is gpunet.device("numbered:3") and built == [3, 0]

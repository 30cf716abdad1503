"""A Linear layer's bias and the ReLU after it in one pass (``ops.linear(..., activation="relu")``, which
``nn.Sequential`` runs for a Linear followed by an in-place ReLU): bit for bit the two ops it replaces, on every
device."""
import numpy as np
import pytest

import gpunet
from gpunet import nn, ops
from tests.helpers import train_small_mlp

NAN, INF = np.nan, np.inf


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (64, 512), (3, 1000)])
def test_fused_bias_relu_equals_linear_then_relu(dev, rng, dtype, shape):
    rows, cols = shape
    x = rng.standard_normal((rows, 9)).astype(dtype)
    w = rng.standard_normal((9, cols)).astype(dtype)
    b = rng.standard_normal(cols).astype(dtype)
    b[:3] = [NAN, INF, -INF][:cols] if cols >= 3 else b[:3]
    x_d, w_d, b_d = dev.asarray(x), dev.asarray(w), dev.asarray(b)
    separate = ops.relu(ops.linear(x_d, w_d, b_d))
    fused = ops.linear(x_d, w_d, b_d, activation="relu")
    np.testing.assert_array_equal(dev.to_numpy(fused), dev.to_numpy(separate))
    np.testing.assert_array_equal(dev.to_numpy(ops.linear(x_d, w_d, None, activation="relu")),
                                  dev.to_numpy(ops.relu(ops.linear(x_d, w_d))))
    # And against the maths in float64: relu of the rounded sum (NaN stays NaN, -inf gives 0).
    want = np.maximum((x.astype(np.float64) @ w.astype(np.float64)).astype(dtype) + b, 0)
    got = dev.to_numpy(fused).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    eps = np.finfo(dtype).eps
    scale = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)) + np.abs(b)
    finite = np.isfinite(want)
    assert np.all(np.abs(got[finite] - want[finite]) <= 16 * eps * scale[finite])


def test_bias_add_alone_is_compiled_on_the_cpu_and_exact(rng):
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in [(300, 20), (20, 700), (700,)])
    # Against the device's own product: the CPU picks its BLAS by measurement (NumPy's or oneMKL), and the two
    # round differently, so only the bias add is asserted exact here.
    cpu = gpunet.device("cpu")
    np.testing.assert_array_equal(ops.linear(x, w, b, device="cpu"), cpu.matmul(x, w) + b)


def test_linear_names_the_activations_it_fuses():
    with pytest.raises(ValueError, match="linear fuses activation None or 'relu', got 'tanh'"):
        ops.linear(np.ones((2, 2)), np.ones((2, 2)), activation="tanh")


def test_sequential_fuses_linear_and_inplace_relu_bit_for_bit(dev, monkeypatch):
    calls = []
    real = ops.linear

    def recording(*args, activation=None, **kwargs):
        calls.append(activation)
        return real(*args, activation=activation, **kwargs)
    monkeypatch.setattr(ops, "linear", recording)
    fused_out, fused_state = train_small_mlp(dev, [12, 16, 16, 3], steps=3, optimizer="adam", batch=40)
    assert calls[:3] == ["relu", "relu", None]  # two hidden layers fused, the logits layer not
    calls.clear()
    plain_out, plain_state = train_small_mlp(dev, [12, 16, 16, 3], steps=3, optimizer="adam", batch=40,
                                             inplace_relu=False)  # an out-of-place ReLU is not fused
    assert set(calls) == {None}
    for a, b in zip(fused_out, plain_out):
        np.testing.assert_array_equal(a, b)
    for name, value in plain_state.items():
        np.testing.assert_array_equal(fused_state[name], value, err_msg=name)


def test_sequential_fuses_what_layers_declare_not_their_types(monkeypatch):
    """A layer of any class that declares ``fusable_activations`` fuses with a following layer whose
    ``fused_activation`` it names; a Linear that declares nothing is run unfused."""
    calls = []

    class NoFusingLinear(nn.Linear):
        fusable_activations = ()

    class ReluFromAfar(nn.Module):  # not a ReLU subclass: fused by its declaration alone
        fused_activation = "relu"

        def forward(self, x):
            calls.append("unfused")
            return ops.relu(x, device=self.device)

        def adopt(self, y):
            calls.append("adopted")
            return y
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    fused = nn.Sequential(nn.Linear(4, 6, device="cpu"), ReluFromAfar(device="cpu"))
    want = np.maximum(ops.linear(x, fused.layers[0].weight.data, fused.layers[0].bias.data, device="cpu"), 0)
    np.testing.assert_array_equal(fused.forward(x), want)
    assert calls == ["adopted"]
    calls.clear()
    plain = nn.Sequential(NoFusingLinear(4, 6, device="cpu"), ReluFromAfar(device="cpu"))
    plain.load_state_dict(fused.state_dict())
    np.testing.assert_array_equal(plain.forward(x), want)
    assert calls == ["unfused"]

"""ReLU into a given array, the input itself included (``ops.relu(x, out=x)``, ``nn.ReLU(inplace=True)``, which
``nn.mlp`` uses): the same values as a new array, on every device, in every dtype with a kernel path."""
import numpy as np
import pytest

from gpunet import nn, ops
from tests.helpers import train_small_mlp

NAN, INF = np.nan, np.inf


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_relu_in_place_gives_the_new_arrays_values(dev, rng, dtype):
    x_np = np.concatenate([rng.standard_normal(1000), [NAN, INF, -INF, 0.0, -0.0]]).astype(dtype)
    dy_np = rng.standard_normal(x_np.shape).astype(dtype)
    expected = dev.to_numpy(ops.relu(dev.asarray(x_np)))
    x = dev.asarray(x_np.copy())
    assert ops.relu(x, out=x) is x
    np.testing.assert_array_equal(dev.to_numpy(x), expected)  # bit for bit, NaN where NaN
    expected_dx = dev.to_numpy(ops.relu_backward(x, dev.asarray(dy_np)))
    dy = dev.asarray(dy_np.copy())
    assert ops.relu_backward(x, dy, out=dy) is dy
    np.testing.assert_array_equal(dev.to_numpy(dy), expected_dx)
    other = dev.xp.empty_like(x)  # into a third array: the input is left alone
    ops.relu(dev.asarray(x_np), out=other)
    np.testing.assert_array_equal(dev.to_numpy(other), expected)


def test_relu_out_must_fit(dev):
    x = dev.asarray(np.ones((3, 4), np.float32))
    for out in [dev.xp.empty((4, 3), np.float32), dev.xp.empty((3, 4), np.float64),
                dev.xp.empty((3, 8), np.float32)[:, ::2], np.empty((3, 4), np.float32) if dev.name != "cpu" and
                dev.name != "sim" else [[0.0] * 4] * 3]:
        with pytest.raises(ValueError, match="out must be a writable, C-contiguous float32 array of shape"):
            ops.relu(x, out=out)
    if dev.name in ("cpu", "sim"):
        readonly = np.empty((3, 4), np.float32)
        readonly.flags.writeable = False
        with pytest.raises(ValueError, match="out must be a writable"):
            ops.relu(x, out=readonly)


def test_inplace_layer_overwrites_its_input_and_gradient_and_agrees(dev, rng):
    x_np = rng.standard_normal((8, 16)).astype(np.float32)
    dy_np = rng.standard_normal((8, 16)).astype(np.float32)
    plain = nn.ReLU(device=dev)
    y_plain = dev.to_numpy(plain.forward(dev.asarray(x_np)))
    dx_plain = dev.to_numpy(plain.backward(dev.asarray(dy_np)))
    layer = nn.ReLU(inplace=True, device=dev)
    x, dy = dev.asarray(x_np.copy()), dev.asarray(dy_np.copy())
    assert layer.forward(x) is x
    np.testing.assert_array_equal(dev.to_numpy(x), y_plain)
    dx = layer.backward(dy)  # the caller's gradient is never written over
    assert dx is not dy
    np.testing.assert_array_equal(dev.to_numpy(dy), dy_np)
    np.testing.assert_array_equal(dev.to_numpy(dx), dx_plain)
    assert layer.backward(dy, overwrite=True) is dy  # a temporary Sequential says it may overwrite
    np.testing.assert_array_equal(dev.to_numpy(dy), dx_plain)
    # What it cannot overwrite (a strided view, a float64 gradient for float32 outputs) gets a new array.
    wide_np = np.zeros((8, 32), np.float32)
    wide_np[:, ::2] = x_np
    wide = dev.asarray(wide_np)
    view = wide[:, ::2]
    np.testing.assert_array_equal(dev.to_numpy(layer.forward(view)), y_plain)
    np.testing.assert_array_equal(dev.to_numpy(wide[:, ::2]), x_np)
    dx = layer.backward(dev.asarray(dy_np.astype(np.float64)))
    np.testing.assert_array_equal(dev.to_numpy(dx), dx_plain.astype(np.float64))


def test_mlp_uses_inplace_relu_and_trains_bit_for_bit_as_without(dev):
    assert all(layer.inplace for layer in nn.mlp([4, 5, 5, 2], "relu").layers if isinstance(layer, nn.ReLU))
    _, with_inplace = train_small_mlp(dev, [12, 16, 16, 3], steps=4, dropout=0.25, seed=3)
    _, without = train_small_mlp(dev, [12, 16, 16, 3], steps=4, dropout=0.25, seed=3, inplace_relu=False)
    for name, value in without.items():
        np.testing.assert_array_equal(with_inplace[name], value, err_msg=name)


def test_an_out_that_overlaps_the_input_without_being_it_is_refused(dev):
    """The kernels read each element before writing it, which is safe only for the input itself: an ``out``
    shifted by one element would read values already written (65 466 wrong of 2^20 before this check)."""
    b = dev.asarray(np.arange(2**12 + 1, dtype=np.float32) - 1000)
    for x, out in [(b[:-1], b[1:]), (b[1:], b[:-1])]:
        with pytest.raises(ValueError, match="out overlaps an input without being it"):
            ops.relu(x, out=out)
    y, dy = dev.asarray(np.ones(9, np.float32)), dev.asarray(np.ones(10, np.float32))
    with pytest.raises(ValueError, match="out overlaps an input without being it"):
        ops.relu_backward(y, dy[1:], out=dy[:-1])
    with pytest.raises(ValueError, match="out overlaps an input without being it"):
        ops.relu_backward(dy[1:], y, out=dy[:-1])


def test_a_sequential_ending_in_an_inplace_relu_leaves_the_callers_gradient(dev, rng):
    model = nn.Sequential(nn.Linear(4, 6, device=dev), nn.ReLU(inplace=True, device=dev), device=dev)
    model.forward(dev.asarray(rng.standard_normal((3, 4)).astype(np.float32)))
    dy_np = rng.standard_normal((3, 6)).astype(np.float32)
    dy = dev.asarray(dy_np.copy())
    model.backward(dy)
    np.testing.assert_array_equal(dev.to_numpy(dy), dy_np)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_relu_of_negative_zero_is_positive_zero_everywhere(dev, dtype):
    x = dev.asarray(np.array([-0.0, 0.0, -1.0], dtype))
    b = dev.asarray(np.zeros(3, dtype))
    for y in (ops.relu(x), ops.linear(x[None, :], dev.asarray(np.eye(3, dtype=dtype)), -b, activation="relu")):
        assert not np.signbit(dev.to_numpy(y)).any()

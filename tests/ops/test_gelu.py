"""GELU (tanh form): every form against an independent float64 reference (``x/2 (1 + tanh(u))`` written with
``tanh`` and ``cosh`` where that does not cancel, branch by branch), per value; finite differences in float64 on every device; NaN and inf as PyTorch gives
them; the layer, the network and the CLI flag."""
import warnings

import numpy as np
import pytest

import gpunet
from gpunet import nn, ops
from gpunet.cli import main
from gpunet.kinds import ElementwiseOp
from gpunet.gradcheck import check_backward
from tests.helpers import tolerance

BETA, KAPPA = np.sqrt(2 / np.pi), 0.044715


def rtol(dtype) -> float:
    return tolerance("per_value", dtype).rtol


def _u(x):
    x = np.asarray(x, dtype=np.float64)
    return BETA * (x + KAPPA * x**3)


def gelu_ref(x):
    """x/2 (1 + tanh(u)); for u < 0, where 1 + tanh(u) cancels, 1 + tanh(u) = exp(u) / cosh(u)."""
    x, u = np.asarray(x, dtype=np.float64), _u(x)
    with np.errstate(over="ignore"):
        one_plus_t = np.where(u >= 0, 1 + np.tanh(u), np.exp(np.minimum(u, 0)) / np.cosh(u))
    return 0.5 * x * one_plus_t


def _slope_terms(x):
    """(1 + t)/2 and x/2 sech(u)^2 u'(x): sech^2 = 1 / cosh^2 never cancels, as 1 - t^2 would."""
    x, u = np.asarray(x, dtype=np.float64), _u(x)
    with np.errstate(over="ignore"):
        one_plus_t = np.where(u >= 0, 1 + np.tanh(u), np.exp(np.minimum(u, 0)) / np.cosh(u))
        sech2 = 1 / np.cosh(u) ** 2
    return 0.5 * one_plus_t, 0.5 * x * sech2 * BETA * (1 + 3 * KAPPA * x * x)


def gelu_slope_ref(x):
    first, second = _slope_terms(x)
    return first + second


def slope_scale(x):
    """The size of what the slope sums: near its root (x = -0.75) the two terms cancel, and any form's error is
    relative to them, not to their difference."""
    first, second = _slope_terms(x)
    return np.abs(first) + np.abs(second)


def tolerance_per_value(x, dtype):
    """Per value: a few ulps, times the condition of s = 1 / (1 + exp(-2u)) in its argument, 2|u| (1 - s): the
    argument is rounded first (and the forms may fuse the multiply-adds in u differently), which matters where
    exp(-2u) is large (x < 0) and not where it vanishes (x > 0)."""
    u = _u(x)
    with np.errstate(over="ignore"):
        one_minus_s = 1 / (1 + np.exp(2 * u))
    return rtol(dtype) * (1 + 2 * np.abs(u) * one_minus_s)


def values(dtype):
    """From -8 to 8 (below that, y underflows float32), with the points where tanh(u) nears -1 (x around -3:
    the textbook form cancels there) densely covered."""
    x = np.concatenate([np.linspace(-8, 8, 4001), np.linspace(-4, -2, 1001), [0.0, 1e-30, -1e-30]])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_forward_and_slope_match_the_reference_per_value(dev, dtype):
    x = values(dtype)
    dy = np.ones_like(x)
    y = dev.to_numpy(ops.gelu(dev.asarray(x)))
    dx = dev.to_numpy(ops.gelu_backward(dev.asarray(x), dev.asarray(dy)))
    assert y.dtype == dx.dtype == dtype and y.shape == x.shape
    want_y = gelu_ref(x).astype(dtype).astype(np.float64)  # the reference rounded to the dtype
    want_dx = gelu_slope_ref(x).astype(dtype).astype(np.float64)
    bound = tolerance_per_value(x, dtype)
    tiny = np.finfo(dtype).tiny  # under it a dtype has no relative precision left
    for got, want, scale in ((y, want_y, np.abs(want_y)), (dx, want_dx, slope_scale(x))):
        got = got.astype(np.float64)
        bad = np.abs(got - want) > bound * scale + tiny
        assert not bad.any(), f"x = {x[bad][:5]}: got {got[bad][:5]}, want {want[bad][:5]}"
    assert y[x == 0].tolist() == [0.0] * int((x == 0).sum())


def test_nan_and_inf_follow_pytorch(dev):
    """PyTorch's tanh-form GELU: gelu(+inf) = inf, gelu(-inf) = NaN (-inf * 0), NaN stays NaN; the slope at
    either infinity is NaN (0 * inf), and at a finite x whose cube overflows it is 1 (x > 0) or NaN (x < 0)."""
    x = np.array([np.inf, -np.inf, np.nan, 1e20, -1e20, 30.0, -30.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y = dev.to_numpy(ops.gelu(dev.asarray(x)))
        dx = dev.to_numpy(ops.gelu_backward(dev.asarray(x), dev.asarray(np.ones_like(x))))
    np.testing.assert_array_equal(y, np.array([np.inf, np.nan, np.nan, 1e20, -0.0, 30.0, -0.0], np.float32))
    np.testing.assert_array_equal(dx, [np.nan, np.nan, np.nan, np.nan, np.nan, 1.0, 0.0])


def test_gradient_matches_finite_differences(dev, rng):
    x = rng.standard_normal((5, 7)) * 3
    err = check_backward(lambda v: dev.to_numpy(ops.gelu(dev.asarray(v))),
                         lambda v, y, dy: dev.to_numpy(ops.gelu_backward(dev.asarray(v), dev.asarray(dy))), x)
    assert err < 1e-8


def test_a_slope_with_a_planted_bug_fails_the_gradient_check(monkeypatch, rng):
    """Mutation test: the slope without its factor 2 (an easy slip in ``s + 2 x s r u'``) must fail the same
    check the real one passes, else that check proves nothing."""
    import gpunet.ops.activations as activations

    def wrong(xp, x, dy):
        u = activations._gelu_u(x)
        s, r = 1 / (1 + xp.exp(-2 * u)), 1 / (1 + xp.exp(2 * u))
        return dy * (s + x * s * r * activations.GELU_BETA * (1 + 3 * activations.GELU_KAPPA * x * x))
    monkeypatch.setattr(activations, "GELU_BACKWARD", ElementwiseOp("gelu_backward", "elementwise", wrong))
    x = rng.standard_normal((5, 7)) * 3
    err = check_backward(lambda v: ops.gelu(v, device="cpu"), lambda v, y, dy: ops.gelu_backward(v, dy, device="cpu"),
                         x)
    assert err > 1e-2


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_non_contiguous_and_mixed_dtype_inputs(dev, rng, dtype):
    x = (rng.standard_normal((6, 10)) * 3).astype(dtype)[:, ::2]  # strided
    dy = rng.standard_normal((6, 5))  # float64: the pair is computed in the wider dtype
    got = dev.to_numpy(ops.gelu_backward(dev.asarray(x), dev.asarray(dy)))
    want_dtype = np.result_type(dtype, np.float64)
    assert got.dtype == want_dtype
    bound = tolerance_per_value(x, np.float64) * np.abs(dy) * slope_scale(x)
    assert np.all(np.abs(got - dy * gelu_slope_ref(x)) <= bound)
    y = dev.to_numpy(ops.gelu(dev.asarray(x)))
    np.testing.assert_allclose(y.astype(np.float64), gelu_ref(x).astype(dtype).astype(np.float64),
                               rtol=tolerance_per_value(x, dtype).max(), atol=np.finfo(dtype).tiny)


def test_the_compiled_cpu_kernel_is_called_and_agrees_with_the_numpy_form(monkeypatch, rng):
    from gpunet import cpu_kernels
    from gpunet.devices.cpu import CpuKernels

    if cpu_kernels.library() is None:
        pytest.skip("no compiled CPU kernels on this machine")
    x = (rng.standard_normal(100_000) * 4).astype(np.float32)  # split over threads
    dy = rng.standard_normal(100_000).astype(np.float32)
    called = []
    real = CpuKernels.compiled
    monkeypatch.setattr(CpuKernels, "compiled", lambda self, name, dtype: called.append(name) or real(self, name, dtype))
    compiled = ops.gelu(x, device="cpu"), ops.gelu_backward(x, dy, device="cpu")
    assert called == ["gelu_forward", "gelu_backward"]
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
    numpy_form = ops.gelu(x, device="cpu"), ops.gelu_backward(x, dy, device="cpu")
    bound, tiny = tolerance_per_value(x, np.float32), np.finfo(np.float32).tiny
    for a, b, scale in zip(compiled, numpy_form, (np.abs(gelu_ref(x)), np.abs(dy) * slope_scale(x))):
        assert np.all(np.abs(a - b) <= bound * scale + tiny)


def test_layer_caches_its_input_and_backpropagates(dev, rng):
    layer = nn.GELU(device=dev)
    x = rng.standard_normal((3, 4))
    y = layer.forward(dev.asarray(x))
    dx = layer.backward(dev.asarray(np.ones((3, 4))))
    np.testing.assert_allclose(dev.to_numpy(y), gelu_ref(x), rtol=1e-12)
    np.testing.assert_allclose(dev.to_numpy(dx), gelu_slope_ref(x), rtol=1e-12)
    with pytest.raises(RuntimeError, match="before forward"):
        nn.GELU(device=dev).backward(dev.asarray(np.ones(3)))


def test_mlp_and_cli_take_gelu(tmp_path):
    model = nn.mlp([2, 8, 3], activation="gelu", device="cpu")
    assert isinstance(model.layers[1], nn.GELU)
    rc = main(["train", "--dataset", "spiral", "--activation", "gelu", "--epochs", "2", "--device", "cpu",
               "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    assert (tmp_path / "run" / "checkpoint.npz").exists()
    assert gpunet.device("cpu") is model.device

"""Optimizers against independent step-by-step references of their update rules."""
import math

import numpy as np
import pytest

import gpunet

from gpunet import nn, optim


def make_param(dev, value):
    dev = gpunet.device(dev)
    layer = nn.Linear(2, 2, bias=False, dtype="float64", device=dev)
    layer.weight.data[...] = dev.asarray(value)
    return layer.weight


def run(dev, opt_cls, grads, **kw):
    dev = gpunet.device(dev)
    w0 = np.array([[0.5, -1.0], [2.0, 0.25]])
    param = make_param(dev, w0)
    opt = opt_cls([param], **kw)
    for g in grads:
        param.grad[...] = dev.asarray(g)
        opt.step()
    return dev.to_numpy(param.data), w0


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum(dev, rng, nesterov):
    grads = rng.standard_normal((3, 2, 2))
    got, w = run(dev, optim.SGD, grads, lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    v = np.zeros_like(w)
    for g in grads:
        g = g + 0.01 * w
        v = 0.9 * v + g
        w = w - 0.1 * (g + 0.9 * v if nesterov else v)
    np.testing.assert_allclose(got, w, rtol=1e-12)


@pytest.mark.parametrize("cls,decoupled", [(optim.Adam, False), (optim.AdamW, True)])
def test_adam(dev, rng, cls, decoupled):
    grads = rng.standard_normal((4, 2, 2))
    got, w = run(dev, cls, grads, lr=0.01, weight_decay=0.1)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            w = w * (1 - 0.01 * 0.1)
        else:
            g = g + 0.1 * w
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(got, w, rtol=1e-10)


def test_state_dict_moves_between_devices(dev, rng):
    grads = rng.standard_normal((4, 2, 2))
    straight, _ = run(dev, optim.Adam, grads, lr=0.01)
    param = make_param(dev, np.array([[0.5, -1.0], [2.0, 0.25]]))
    opt = optim.Adam([param], lr=0.01)
    for g in grads[:2]:
        param.grad[...] = dev.asarray(g)
        opt.step()
    state, weights = opt.state_dict(), dev.to_numpy(param.data)
    param2 = make_param("cpu", weights)
    opt2 = optim.Adam([param2], lr=0.01)
    opt2.load_state_dict(state)
    for g in grads[2:]:
        param2.grad[...] = g
        opt2.step()
    np.testing.assert_allclose(param2.data, straight, rtol=1e-12)
    assert math.isclose(opt2.step_count, 4)


def test_bad_arguments():
    p = make_param("cpu", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([p], lr=0)
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)


def float16_steps(dev, opt_cls, grads, state_names, **kw):
    """The float16 weights and optimizer state after each step of ``opt_cls`` on ``dev``."""
    dev = gpunet.device(dev)
    layer = nn.Linear(2, 3, bias=False, dtype="float16", device=dev)
    layer.weight.data[...] = dev.asarray(np.array([[0.0, 0.5, -1.0], [2.0, 0.0, 0.25]], np.float16))
    opt = opt_cls([layer.weight], **kw)
    seen = []
    for g in grads:
        layer.weight.grad[...] = dev.asarray(g.astype(np.float16))
        opt.step()
        seen.append([dev.to_numpy(layer.weight.data).copy()] +
                    [dev.to_numpy(opt.buffer(0, name)).copy() for name in state_names])
    return seen


@pytest.mark.parametrize("opt_cls, kw, state_names", [
    (optim.Adam, {"lr": 1e-3}, ("m", "v")),
    (optim.AdamW, {"lr": 1e-3, "weight_decay": 0.1}, ("m", "v")),
    (optim.SGD, {"lr": 0.1, "momentum": 0.9}, ("velocity",)),
    (optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, ("velocity",))])
def test_float16_updates_on_cpu_equal_the_kernel_within_one_ulp(opt_cls, kw, state_names):
    """float16 parameters update in float32 and round once on the CPU, as the kernel (run by sim) does: in float16
    a gradient of 1e-4 squares to 0 and Adam's step became -inf."""
    grads = [np.array([[1e-4, -1e-4, 0.5], [2.0, -3e-3, 1e-6]]), np.array([[1e-4, 3.0, -0.25], [1e-5, 4e-3, 0.0]]),
             np.array([[-2e-4, 1e-3, 0.125], [-1.0, 5e-5, 7.0]])]
    cpu = float16_steps("cpu", opt_cls, grads, state_names, **kw)
    sim = float16_steps("sim", opt_cls, grads, state_names, **kw)
    for step, (on_cpu, on_sim) in enumerate(zip(cpu, sim)):
        for name, a, b in zip(("w", *state_names), on_cpu, on_sim):
            assert a.dtype == b.dtype == np.float16 and np.isfinite(a).all() and np.isfinite(b).all()
            ulp = np.spacing(np.maximum(abs(a), abs(b)))
            assert (abs(a.astype(np.float32) - b) <= ulp).all(), (step, name, a, b)
    if opt_cls is optim.Adam:  # the case: w = 0, one step with grad 1e-4 moves it by lr, not to -inf
        assert cpu[0][0][0, 0] == np.float16(-0.000999)

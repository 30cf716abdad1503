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

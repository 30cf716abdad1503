"""Whole training runs agree across devices: same seed, same batches, weights within tolerance after K steps."""
import numpy as np
import pytest

import gpunet
from gpunet import nn, optim
from gpunet.data import Batches, spiral

from tests.helpers import KERNEL_DEVICES, tolerance


def train(device, dtype, optimizer, epochs, activation):
    dev = gpunet.device(device)
    x, y = spiral(40, 3, seed=2)
    model = nn.mlp([2, 24, 16, 3], activation, seed=5, dtype=dtype, device=dev)
    loss_fn = nn.SoftmaxCrossEntropy(device=dev)
    params = model.parameters()
    opt = optim.Adam(params, lr=0.01) if optimizer == "adam" else optim.SGD(params, lr=0.05, momentum=0.9,
                                                                              nesterov=True, weight_decay=1e-4)
    batches = Batches(x.astype(dtype), y, 16, seed=3, device=dev)
    losses = []
    for epoch in range(epochs):
        for xb, yb in batches.epoch(epoch):
            losses.append(float(loss_fn.forward(model.forward(xb), yb)))
            model.backward(loss_fn.backward())
            opt.step()
    return model.state_dict(), np.array(losses)


@pytest.mark.parametrize("device", KERNEL_DEVICES)
@pytest.mark.parametrize("dtype,optimizer,activation", [
    ("float64", "adam", "relu"), ("float64", "sgd", "tanh"), ("float32", "adam", "sigmoid")])
def test_weights_agree_after_training(device, dtype, optimizer, activation):
    rtol, atol = tolerance("training_run", dtype)
    ref, ref_losses = train("cpu", dtype, optimizer, 3, activation)
    got, losses = train(device, dtype, optimizer, 3, activation)
    assert len(losses) == 24 and losses[-1] < losses[0]  # it learned something
    np.testing.assert_allclose(losses, ref_losses, rtol=rtol)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=rtol, atol=atol, err_msg=name)

"""Layers: finite-difference checks of every layer's backward (inputs and parameters), state dicts, devices."""
import numpy as np
import pytest

from gpunet import nn
from gpunet.gradcheck import numerical_gradient, relative_error


def layer_input_grad_error(layer, x, rng):
    dy = rng.standard_normal(layer.forward(layer.device.asarray(x)).shape)

    def loss(v):
        return np.sum(dy * layer.device.to_numpy(layer.forward(layer.device.asarray(v))))
    layer.forward(layer.device.asarray(x))
    analytic = layer.device.to_numpy(layer.backward(layer.device.asarray(dy)))
    return relative_error(analytic, numerical_gradient(loss, x))


@pytest.mark.parametrize("make", [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Softmax, nn.LogSoftmax,
                                  lambda device: nn.Linear(4, 3, dtype="float64", device=device)],
                         ids=["relu", "tanh", "sigmoid", "softmax", "logsoftmax", "linear"])
def test_layer_input_gradients(dev, rng, make):
    x = rng.standard_normal((3, 4))
    assert layer_input_grad_error(make(device=dev), x, rng) < 1e-6


def test_mlp_with_loss_parameter_gradients(dev, rng):
    """Whole-network backprop: every parameter's gradient against finite differences of the loss."""
    model = nn.mlp([3, 5, 4], "tanh", seed=1, dtype="float64", device=dev)
    loss_fn = nn.SoftmaxCrossEntropy(device=dev)
    x = dev.asarray(rng.standard_normal((6, 3)))
    y = dev.asarray(np.array([0, 1, 2, 3, 1, -100]))
    loss_fn.forward(model.forward(x), y)
    model.backward(loss_fn.backward())
    for name, param in model.named_parameters():
        analytic = dev.to_numpy(param.grad).copy()
        original = dev.to_numpy(param.data).copy()

        def loss(v, param=param):
            param.data[...] = dev.asarray(v)
            return float(loss_fn.forward(model.forward(x), y))
        numeric = numerical_gradient(loss, original)
        param.data[...] = dev.asarray(original)
        assert relative_error(analytic, numeric) < 1e-6, name


def test_dropout_scales_and_masks(dev):
    drop = nn.Dropout(0.5, seed=3, device=dev)
    x = dev.asarray(np.ones((200, 50), dtype=np.float32))
    y = dev.to_numpy(drop.forward(x))
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    dx = dev.to_numpy(drop.backward(x))
    np.testing.assert_array_equal(dx, y)  # the same mask scales the gradient
    drop.eval()
    np.testing.assert_array_equal(dev.to_numpy(drop.forward(x)), 1.0)
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(1.0)


def test_same_seed_same_weights_on_every_device(dev):
    a = nn.mlp([4, 8, 3], seed=7, device="cpu").state_dict()
    b = nn.mlp([4, 8, 3], seed=7, device=dev).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_state_dict_roundtrip_and_mismatch():
    model = nn.mlp([4, 8, 3], seed=1)
    other = nn.mlp([4, 8, 3], seed=2)
    other.load_state_dict(model.state_dict())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v)
    with pytest.raises(ValueError, match="shape"):
        nn.mlp([4, 9, 3]).load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="missing"):
        nn.mlp([4, 8, 8, 3]).load_state_dict(model.state_dict())


def test_linear_rejects_wrong_input_shape():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        nn.Linear(4, 2).forward(np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown activation"):
        nn.mlp([2, 3], activation="swish")


def test_layers_reject_bad_input_on_every_device(dev):
    linear = nn.Linear(3, 2, device=dev)
    with pytest.raises(ValueError, match="floating-point"):
        linear.forward(dev.asarray(np.zeros((4, 3), dtype=np.int64)))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        linear.forward(dev.asarray(np.zeros((4, 5), dtype=np.float32)))
    with pytest.raises(ValueError, match="floating-point"):
        nn.ReLU(device=dev).forward(dev.asarray(np.arange(3)))
    loss = nn.SoftmaxCrossEntropy(device=dev)
    with pytest.raises(ValueError, match="label 5 at row 0"):
        loss.forward(dev.asarray(np.zeros((2, 3))), dev.asarray(np.array([5, 0])))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.SoftmaxCrossEntropy(device=dev).backward()
    with pytest.raises(TypeError, match="Modules"):
        nn.Sequential(nn.ReLU(device=dev), "relu")

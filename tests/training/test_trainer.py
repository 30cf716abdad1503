"""The one training step (gpunet.trainer.Trainer) and gradient-norm clipping (gpunet.optim.clip_grad_norm):
clipping against a NumPy transcription of PyTorch's clip_grad_norm_, the step's order against the same steps
written out by hand, and --clip-grad-norm on the command line."""
import json

import numpy as np
import pytest

from gpunet import nn, optim
from gpunet.cli import main
from gpunet.trainer import Trainer, forward_backward


def torch_clip_grad_norm(grads, max_norm):
    """PyTorch's clip_grad_norm_ (torch/nn/utils/clip_grad.py), in float64 NumPy: the norm of the per-tensor L2
    norms; every gradient times min(max_norm / (norm + 1e-6), 1)."""
    total = np.linalg.norm([np.linalg.norm(g.astype(np.float64).ravel()) for g in grads])
    scale = min(max_norm / (total + 1e-6), 1.0)
    return [g.astype(np.float64) * scale for g in grads], total


def per_tensor_clip(grads, max_norm):
    """A planted bug: each tensor clipped to the max norm on its own (what the total norm is there to avoid)."""
    out = []
    for g in grads:
        norm = np.linalg.norm(g.astype(np.float64).ravel())
        out.append(g.astype(np.float64) * min(max_norm / (norm + 1e-6), 1.0))
    return out, None


def parameters(dev, grads):
    params = []
    for g in grads:
        p = nn.Parameter(dev.asarray(np.zeros_like(g)), dev)
        p.grad[...] = dev.asarray(g)
        params.append(p)
    return params


SHAPES = [(7, 5), (5,), (3, 4, 2), (1,)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.05, 1.0, 1e6])
def test_clipping_matches_pytorch_formula(dev, rng, dtype, max_norm):
    grads = [rng.standard_normal(s).astype(dtype) * 0.3 for s in SHAPES]
    params = parameters(dev, grads)
    total = optim.clip_grad_norm(params, max_norm)
    want, want_total = torch_clip_grad_norm(grads, max_norm)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(float(dev.to_numpy(total)), want_total, rtol=rtol)
    for p, w, g in zip(params, want, grads):
        got = dev.to_numpy(p.grad)
        assert got.dtype == dtype
        if max_norm == 1e6:  # under the limit: untouched, bit for bit
            np.testing.assert_array_equal(got, g)
        else:
            np.testing.assert_allclose(got, w, rtol=rtol, atol=0)
    if max_norm < want_total:  # clipped: the total norm is the max norm (less PyTorch's 1e-6)
        clipped = np.linalg.norm([np.linalg.norm(dev.to_numpy(p.grad).astype(np.float64)) for p in params])
        np.testing.assert_allclose(clipped, max_norm * want_total / (want_total + 1e-6), rtol=rtol)


def test_the_reference_tells_the_total_norm_from_per_tensor_norms(rng):
    """Mutation check of the test above: clipping each tensor on its own misses the reference."""
    grads = [rng.standard_normal(s) * 0.3 for s in SHAPES]
    want, _ = torch_clip_grad_norm(grads, 0.05)
    planted, _ = per_tensor_clip(grads, 0.05)
    assert not all(np.allclose(p, w, rtol=1e-6) for p, w in zip(planted, want))


def test_clipping_a_zero_gradient_and_a_nonfinite_one(dev):
    params = parameters(dev, [np.zeros((3, 2), np.float32)])
    assert float(dev.to_numpy(optim.clip_grad_norm(params, 1.0))) == 0.0
    np.testing.assert_array_equal(dev.to_numpy(params[0].grad), 0)
    params = parameters(dev, [np.array([1.0, np.inf], np.float32), np.ones(2, np.float32)])
    assert float(dev.to_numpy(optim.clip_grad_norm(params, 1.0))) == np.inf
    # as PyTorch: scale = 1 / (inf + 1e-6) = 0, so finite gradients become 0 and inf * 0 NaN
    np.testing.assert_array_equal(dev.to_numpy(params[1].grad), 0)
    assert np.isnan(dev.to_numpy(params[0].grad)[1])


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_a_bad_max_norm_is_refused(bad):
    import gpunet

    params = parameters(gpunet.device("cpu"), [np.ones(3, np.float32)])
    with pytest.raises(ValueError, match="max gradient norm must be a positive finite number"):
        optim.clip_grad_norm(params, bad)
    model = nn.mlp([2, 3], seed=0, device="cpu")
    with pytest.raises(ValueError, match="max gradient norm"):
        Trainer(model, nn.SoftmaxCrossEntropy(device="cpu"), optim.SGD(model.parameters()), clip_grad_norm=bad)


class Doubling:
    """A stand-in data-parallel strategy: all rows, a count of its own, and a gradient hook that doubles every
    gradient and the loss (as an allreduce over two equal ranks would), recording what it saw."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def shard(self, x, y):
        return x, y, len(y) * 2

    def reduce_gradients(self, loss):
        self.seen.append([self.model.device.to_numpy(p.grad).copy() for p in self.model.parameters()])
        for p in self.model.parameters():
            p.grad *= 2
        return loss * 2


def test_the_step_is_forward_loss_backward_hook_clip_update(dev, rng):
    """Trainer.step against the same step written out: the hook sees the unclipped gradient of the shard's count,
    clipping sees the hook's, and the update the clipped one."""
    x = rng.standard_normal((12, 4)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    model = nn.mlp([4, 8, 3], seed=0, device=dev)
    reference = nn.mlp([4, 8, 3], seed=0, device=dev)
    loss_fn = nn.SoftmaxCrossEntropy(device=dev)
    hook = Doubling(model)
    trainer = Trainer(model, loss_fn, optim.SGD(model.parameters(), lr=0.5), parallel=hook, clip_grad_norm=0.01)
    loss = trainer.step(dev.asarray(x), dev.asarray(y))

    ref_loss = forward_backward(reference, nn.SoftmaxCrossEntropy(device=dev), dev.asarray(x), dev.asarray(y),
                                count=24)  # the shard's count: half of the batch's mean
    ref_grads = [dev.to_numpy(p.grad) for p in reference.parameters()]
    for seen, want in zip(hook.seen[0], ref_grads):
        np.testing.assert_allclose(seen, want, rtol=1e-6, atol=0)
    clipped, total = torch_clip_grad_norm([2 * g for g in ref_grads], 0.01)
    assert total > 0.01  # the clipping is active
    np.testing.assert_allclose(float(dev.to_numpy(trainer.grad_norm)), total, rtol=1e-5)
    np.testing.assert_allclose(float(dev.to_numpy(loss)), 2 * float(dev.to_numpy(ref_loss)), rtol=1e-6)
    for p, start, g in zip(model.parameters(), reference.parameters(), clipped):
        np.testing.assert_allclose(dev.to_numpy(p.data), dev.to_numpy(start.data) - 0.5 * g, rtol=1e-5,
                                   atol=1e-6 * np.abs(dev.to_numpy(start.data)).max())


def test_an_empty_shard_contributes_nothing_and_a_step_needs_rows():
    model = nn.mlp([2, 3], seed=0, device="cpu")
    for p in model.parameters():
        p.grad[...] = 1
    loss = forward_backward(model, nn.SoftmaxCrossEntropy(device="cpu"), np.zeros((0, 2), np.float32),
                            np.zeros(0, np.int64), count=5)
    assert float(loss) == 0 and all(not p.grad.any() for p in model.parameters())
    with pytest.raises(ValueError, match="at least one row"):
        forward_backward(model, nn.SoftmaxCrossEntropy(device="cpu"), np.zeros((0, 2), np.float32),
                         np.zeros(0, np.int64))


def test_clip_grad_norm_on_the_command_line(tmp_path, capsys):
    assert main(["train", "--dataset", "spiral", "--epochs", "3", "--device", "cpu", "--no-progress", "--out",
                 str(tmp_path), "--clip-grad-norm", "0.5"]) == 0
    assert "clip-grad-norm=0.5" in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["clip_grad_norm"] == 0.5
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "spiral", "--clip-grad-norm", "0", "--out", str(tmp_path)])
    assert "argument --clip-grad-norm: must be a positive finite number, got 0" in capsys.readouterr().err

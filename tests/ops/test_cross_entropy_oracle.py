"""Every form against PyTorch's recorded answers on PyTorch's own cross-entropy test material (weights, label
smoothing, ignore_index, probability targets, K-dim and unbatched inputs): ``scripts/record_cross_entropy_oracle.py``
wrote ``data/cross_entropy_oracle.npz`` with torch 2.13 (CI never installs torch).

Each value's tolerance scales with the size of the terms it is computed from (for a gradient ``sum(q) p_j - q_j``:
``|sum(q)| p_j + |q_j|``; for a loss ``sum_c |q_c| (|log p_c| + 1)``, the 1 for ``log s``; over the mean's divisor), so a cancelling value is held to its terms' rounding and a
large one to its own; there is no absolute floor.
"""
import json
import pathlib

import numpy as np
import pytest

import gpunet
from gpunet import ops

DATA = pathlib.Path(__file__).parent / "data" / "cross_entropy_oracle.npz"
RTOL = {np.float64: 1e-12, np.float32: 3e-6}


@pytest.fixture(scope="module")
def oracle():
    with np.load(DATA) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(arrays.pop("meta").tobytes()), arrays



def _inputs(case, arrays):
    j = case["input"]
    x, t = arrays[f"in{j}_x"], arrays[f"in{j}_t"]
    w = arrays[f"in{j}_w"] if case["weighted"] else None
    kwargs = {"reduction": case.get("reduction", "mean"), "ignore_index": case.get("ignore_index", -100),
              "label_smoothing": case.get("label_smoothing", 0.0), "weight": w}
    return x, t, kwargs


def _magnitudes(x, t, kwargs):
    """Per value of the loss and of the gradient: the size of the terms it is a sum of (see the module's doc)."""
    axis = 1 if x.ndim > 1 else 0
    rows = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]).astype(np.float64)
    C = rows.shape[1]
    w = np.ones(C) if kwargs["weight"] is None else kwargs["weight"].astype(np.float64)
    eps = kwargs["label_smoothing"]
    if t.dtype.kind == "f":
        q = w * ((1 - eps) * np.moveaxis(t, axis, -1).reshape(-1, C) + eps / C)
        valid, divisor = np.ones(len(q), bool), len(q)
    else:
        labels = t.reshape(-1)
        valid = labels != kwargs["ignore_index"]
        picked = np.where(valid, labels, 0)
        q = eps / C * np.tile(w, (len(labels), 1))
        q[np.arange(len(labels)), picked] += (1 - eps) * w[picked]
        q[~valid] = 0
        divisor = abs(w[picked][valid].sum())
    logp = rows - rows.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    p = np.exp(logp)
    # log s, of s in [1, C] rounded to its dtype, is off by about an ulp of 1 absolutely: the + 1
    loss_terms = (abs(q) * (abs(logp) + 1)).sum(1)
    grad_terms = abs(q).sum(1, keepdims=True) * p + abs(q)
    grad_terms[~valid] = 0
    reduction = kwargs["reduction"]
    if reduction != "none":
        loss_terms = loss_terms.sum() / (divisor if reduction == "mean" and divisor else 1)
        grad_terms = grad_terms / (divisor if reduction == "mean" and divisor else 1)
    else:
        loss_terms = loss_terms.reshape(t.shape if t.dtype.kind != "f" else np.delete(x.shape, axis))
    shape = np.moveaxis(x, axis, -1).shape
    return loss_terms, np.moveaxis(grad_terms.reshape(shape), -1, axis)


def _assert_close(got, want, terms, rtol, what):
    """Within ``rtol`` of the value and its terms, plus the spacing of ``got``'s dtype at the value (its final
    rounding: in float16's subnormal range that spacing is larger than any relative bound)."""
    dtype = np.asarray(got).dtype
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    same_special = (np.isnan(got) & np.isnan(want)) | (got == want)
    with np.errstate(over="ignore"):
        rounding = np.spacing(abs(want).astype(dtype)).astype(np.float64)
    bad = ~same_special & ~(abs(got - want) <= rtol * (abs(want) + terms) + rounding)
    assert not bad.any(), f"{what}: {got[bad][:5]} vs {want[bad][:5]} (terms {np.broadcast_to(terms, bad.shape)[bad][:5]})"


def test_the_oracle_covers_every_option(oracle):
    meta, arrays = oracle
    cases = meta["cases"]
    assert meta["torch"].startswith("2.13") and len(cases) > 300
    kinds = {(arrays[f"in{c['input']}_t"].dtype.kind, arrays[f"in{c['input']}_x"].ndim) for c in cases}
    assert {("i", 1), ("i", 2), ("i", 4), ("i", 6), ("f", 1), ("f", 2), ("f", 6)} <= kinds
    assert any(c["weighted"] and c.get("label_smoothing") and c.get("ignore_index") is not None for c in cases)


def _compare_every_case(oracle, form, loss_and_grad):
    """``loss_and_grad(x, t, kwargs)`` on ``form`` against PyTorch's recorded answers, case by case, in the logits'
    dtype."""
    meta, arrays = oracle
    host = gpunet.device(form).to_numpy
    for i, case in enumerate(meta["cases"]):
        x, t, kwargs = _inputs(case, arrays)
        rtol = RTOL[x.dtype.type]
        loss_terms, grad_terms = _magnitudes(x, t, kwargs)
        loss, grad = (host(a) for a in loss_and_grad(x, t, kwargs))
        what = f"case {i} ({case['source']}, {kwargs['reduction']}, shape {x.shape}, {x.dtype})"
        assert np.dtype(loss.dtype) == x.dtype and np.dtype(grad.dtype) == x.dtype, what
        _assert_close(loss, arrays[f"out{i}_loss"], loss_terms, rtol, what + " loss")
        _assert_close(grad, arrays[f"out{i}_grad"], grad_terms, rtol, what + " grad")


def test_with_grad_matches_pytorch(oracle, device_form):
    _compare_every_case(oracle, device_form, lambda x, t, kwargs: ops.softmax_cross_entropy_with_grad(
        x, t, device=device_form, **kwargs))


def test_forward_then_backward_matches_pytorch(oracle, device_form):
    def forward_then_backward(x, t, kwargs):
        loss, probs = ops.softmax_cross_entropy(x, t, device=device_form, **kwargs)
        return loss, ops.softmax_cross_entropy_backward(probs, t, device=device_form, **kwargs)
    _compare_every_case(oracle, device_form, forward_then_backward)


def test_a_planted_bug_fails_the_comparison(oracle, monkeypatch):
    """Mutation: a weighted mean divided by the counted rows instead of their weight sum (the classic mistake)
    must fail the comparison above, at its tolerances."""
    from gpunet.ops.cross_entropy_targets import Call

    def unweighted(call):
        return call.dev.xp.asarray(float((call.labels != call.ignore_index).sum()) if call.targets is None
                                   else call.scores.shape[0])
    monkeypatch.setattr(Call, "divisor", unweighted)
    meta, arrays = oracle
    caught = 0
    for i, case in enumerate(meta["cases"]):
        x, t, kwargs = _inputs(case, arrays)
        if kwargs["weight"] is None or kwargs["reduction"] != "mean" or t.dtype.kind == "f":
            continue
        loss, _ = ops.softmax_cross_entropy_with_grad(x, t, device="cpu", **kwargs)
        try:
            _assert_close(loss, arrays[f"out{i}_loss"], _magnitudes(x, t, kwargs)[0], RTOL[x.dtype.type], "")
        except AssertionError:
            caught += 1
    assert caught >= 20, caught

"""Record PyTorch's cross-entropy answers on PyTorch's own test material, once, for gpunet's tests (CI never
installs torch).

The cases re-create the shapes, value ranges and options of PyTorch's ``sample_inputs_cross_entropy`` (its
OpInfo), of ``module_inputs_torch_nn_CrossEntropyLoss`` (its module tests: 2-D, 3-D, 4-D and higher-dimensional
inputs, probability targets, an unbatched row; weights, ignore_index 1, label smoothing 0.15), and of
``test_cross_entropy_*`` / ``test_cross_entropy_label_smoothing_*`` in its ``test/test_nn.py`` (index targets
against one-hot and smoothed probability targets over 0 to 4 extra dimensions, weights with ignored rows,
unbatched probability targets, a float32 precision case). Each case's loss and its gradient (of the summed
loss) go to ``tests/ops/data/cross_entropy_oracle.npz`` with the inputs; ``tests/ops/test_cross_entropy_oracle.py``
compares every device against it.

Run: ``python scripts/record_cross_entropy_oracle.py [--out PATH]`` (needs torch; about a second).
"""
from __future__ import annotations

import argparse
import itertools
import json
import pathlib

import numpy as np

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "ops" / "data" / "cross_entropy_oracle.npz"
REDUCTIONS = ("mean", "sum", "none")


class Recorder:
    """Collects inputs (stored once each) and cases (options plus PyTorch's loss and gradient)."""

    def __init__(self, torch):
        self.torch, self.arrays, self.cases = torch, {}, []

    def add_input(self, x, target, weight=None) -> int:
        j = sum(1 for k in self.arrays if k.endswith("_x"))
        self.arrays[f"in{j}_x"] = x.detach().numpy()
        self.arrays[f"in{j}_t"] = target.detach().numpy()
        if weight is not None:
            self.arrays[f"in{j}_w"] = weight.detach().numpy()
        return j

    def case(self, source: str, j: int, **options) -> None:
        torch = self.torch
        x = torch.tensor(self.arrays[f"in{j}_x"], requires_grad=True)
        target = torch.tensor(self.arrays[f"in{j}_t"])
        weighted = options.pop("weighted", True) and f"in{j}_w" in self.arrays
        weight = torch.tensor(self.arrays[f"in{j}_w"]) if weighted else None
        loss = torch.nn.functional.cross_entropy(x, target, weight=weight, **options)
        loss.sum().backward()
        i = len(self.cases)
        self.arrays[f"out{i}_loss"] = loss.detach().numpy()
        self.arrays[f"out{i}_grad"] = x.grad.numpy()
        self.cases.append({"source": source, "input": j, "weighted": weight is not None, **options})


def opinfo_samples(rec: Recorder, torch, dtype) -> None:
    """sample_inputs_cross_entropy: (2, 3) with 0-3 extra dims of 1, 2, 3; each reduction; weights; ignore_index 1;
    class and (unnormalised, in [0, 1)) probability targets. make_tensor's default range [-9, 9] for inputs."""
    from torch.testing import make_tensor
    shape = (2, 3)
    kwargs = [(shape, {}), ((2, 3, 1), {}), ((2, 3, 1, 2), {}), ((2, 3, 1, 2, 3), {}),
              *[(shape, {"reduction": r}) for r in REDUCTIONS],
              *[(shape, {"reduction": r, "weighted": True}) for r in REDUCTIONS],
              (shape, {"ignore_index": 1})]
    for (input_shape, kw), probabilities in itertools.product(kwargs, (False, True)):
        if probabilities and "ignore_index" in kw:
            continue
        x = make_tensor(input_shape, device="cpu", dtype=dtype)
        if probabilities:
            target = make_tensor(input_shape, device="cpu", dtype=dtype, low=0, high=1)
        else:
            target = make_tensor((2, *input_shape[2:]), device="cpu", dtype=torch.long, low=0, high=3)
            if "ignore_index" in kw and bool((target == kw["ignore_index"]).all()):
                target.view(-1)[0] = 0
        weight = make_tensor((3,), device="cpu", dtype=dtype) if kw.get("weighted") else None
        kw = {k: v for k, v in kw.items() if k != "weighted"}
        rec.case("sample_inputs_cross_entropy", rec.add_input(x, target, weight), **kw)


def module_inputs(rec: Recorder, torch, dtype) -> None:
    """module_inputs_torch_nn_CrossEntropyLoss: 4-D, 3-D, 2-D and 6-D inputs with class targets, and (without
    ignore_index) probability targets (softmax over axis 1) and an unbatched (3,) row."""
    from torch.testing import make_tensor
    options = [{}, {"weighted": True}, {"ignore_index": 1}, {"label_smoothing": 0.15},
               {"ignore_index": 1, "label_smoothing": 0.15}]
    for reduction, opts in itertools.product(REDUCTIONS, options):
        weight = make_tensor((3,), device="cpu", dtype=dtype) if opts.get("weighted") else None
        kw = {k: v for k, v in opts.items() if k != "weighted"}
        for shape in ((2, 3, 5, 5), (2, 3, 5), (2, 3), (2, 3, 5, 5, 2, 2)):
            x = make_tensor(shape, device="cpu", dtype=dtype)
            target = make_tensor((shape[0], *shape[2:]), device="cpu", dtype=torch.long, low=0, high=3)
            rec.case("module_inputs_CrossEntropyLoss", rec.add_input(x, target, weight), reduction=reduction, **kw)
        if "ignore_index" in kw:
            continue
        for shape in ((5, 3, 4, 2), (5, 3, 4), (5, 3), (2, 3, 5, 5, 2, 2)):
            x = make_tensor(shape, device="cpu", dtype=dtype)
            target = make_tensor(shape, device="cpu", dtype=dtype).softmax(dim=1)
            rec.case("module_inputs_CrossEntropyLoss", rec.add_input(x, target, weight), reduction=reduction, **kw)
        x = make_tensor((3,), device="cpu", dtype=dtype)
        target = make_tensor((), device="cpu", dtype=torch.long, low=0, high=3)
        rec.case("module_inputs_CrossEntropyLoss", rec.add_input(x, target, weight), reduction=reduction, **kw)


def test_nn_cases(rec: Recorder, torch) -> None:
    """test_nn.py's cross-entropy tests, in float64 (float32 for the precision case)."""
    N, C = 10, 4
    gen = torch.Generator().manual_seed(1)
    for k in range(5):  # label smoothing: index targets, their one-hot and smoothed probability forms, weights
        other = [int(torch.randint(2, 4, (1,), generator=gen)) for _ in range(k)]
        x = torch.randn(N, C, *other, dtype=torch.float64, generator=gen)
        target = torch.randint(C, (N, *other), generator=gen)
        weight = torch.rand(C, dtype=torch.float64, generator=gen) + 0.1
        j = rec.add_input(x, target, weight)
        one_hot = rec.add_input(x, torch.nn.functional.one_hot(target, C).movedim(-1, 1).to(torch.float64), weight)
        soft = rec.add_input(x, torch.randn(N, C, *other, dtype=torch.float64, generator=gen).softmax(1), weight)
        for reduction, eps, weighted in itertools.product(REDUCTIONS, (0.0, 0.15), (False, True)):
            for inp, source in ((j, "label_smoothing_consistent_index_target"),
                                (one_hot, "label_smoothing_consistent_one_hot_probs"),
                                (soft, "label_smoothing_with_probs")):
                rec.case(f"test_nn:{source}", inp, reduction=reduction, label_smoothing=eps, weighted=weighted)
        target_ignored = target.clone()
        target_ignored.view(-1)[::3] = 2  # ignore_index 2: a third of the rows and every row of class 2
        ig = rec.add_input(x, target_ignored, weight)
        for reduction, eps in itertools.product(REDUCTIONS, (0.0, 0.3)):
            rec.case("test_nn:label_smoothing_weight_ignore_indices", ig, reduction=reduction, label_smoothing=eps,
                     ignore_index=2)
    x = torch.randn(C, dtype=torch.float64, generator=gen)  # unbatched probability target (no_batch_dim)
    j = rec.add_input(x, torch.rand(C, dtype=torch.float64, generator=gen).softmax(0),
                      torch.rand(C, dtype=torch.float64, generator=gen))
    for reduction, eps in itertools.product(REDUCTIONS, (0.0, 0.2)):
        rec.case("test_nn:prob_target_no_batch_dim", j, reduction=reduction, label_smoothing=eps)
    x = torch.randn(4, 2, 24, 24, generator=gen)  # the precision test, scaled down from (128, 2, 768, 768)
    j = rec.add_input(x, torch.randint(2, (4, 24, 24), generator=gen))
    for reduction in REDUCTIONS:
        rec.case("test_nn:cross_entropy_loss_precision", j, reduction=reduction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    rec = Recorder(torch)
    for dtype in (torch.float64, torch.float32):
        opinfo_samples(rec, torch, dtype)
    module_inputs(rec, torch, torch.float64)
    test_nn_cases(rec, torch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "cases": rec.cases}
    np.savez_compressed(args.out, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **rec.arrays)
    print(f"{len(rec.cases)} cases from torch {torch.__version__} -> {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

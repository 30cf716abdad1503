"""Each op kind's written contract (gpunet/kinds.py) is what a new device implements (docs/adding-a-device.md):
the CUDA signatures it writes must be the kernels' own, so a kernel that grows an argument fails here until its
kind's docstring says so."""
import re

import pytest

from gpunet import kinds
from gpunet.cuda.source import signatures

# (kind, the kernel module, a kernel the contract's first CUDA signature names)
DOCUMENTED = [
    (kinds.CrossEntropyOp, "cross_entropy", "softmax_cross_entropy_mixed_warp1"),
    (kinds.CrossEntropyBackwardOp, "cross_entropy", "softmax_cross_entropy_backward"),
]


def documented_cuda_arguments(kind) -> list:
    """The argument names of the first ``CUDA kernel(s) ``name(...)`` `` in the kind's docstring, ``[, x]``
    optional ones included."""
    doc = " ".join(kind.__doc__.split())
    match = re.search(r"CUDA kernels? ``[\w\[\]<>]+\(([^`]*)\)``", doc)
    assert match, f"{kind.__name__}'s docstring names no CUDA signature"
    return [name.strip(" []") for name in match.group(1).replace("[,", ",").split(",")]


@pytest.mark.parametrize("kind, module, kernel", DOCUMENTED, ids=[k.__name__ for k, _, _ in DOCUMENTED])
def test_a_kinds_written_cuda_signature_is_its_kernels(kind, module, kernel):
    assert documented_cuda_arguments(kind) == [p.name for p in signatures(module)[kernel]]

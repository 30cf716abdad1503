"""The launch rule: which variant each width gets, and that the parity suite's widths cover every branch."""
import pytest

from gpunet.cuda.plans import SHARED_MEMORY_LIMIT, elementwise_plan, row_plan
from tests.ops.test_parity import WIDTHS


@pytest.mark.parametrize("cols,width,per_lane", [(1, 1, 1), (2, 2, 1), (10, 16, 1), (31, 32, 1), (32, 32, 1),
                                                 (33, 32, 2), (1000, 32, 32), (1024, 32, 32)])
def test_warp_variant(cols, width, per_lane):
    plan = row_plan("softmax_forward", 5, cols, 4, 1000)
    assert plan.kernel == f"softmax_forward_warp{per_lane}" and plan.extra_args == (width,)
    assert width * per_lane >= cols  # the registers hold the whole row
    rows_per_block = 4 * (32 // width)
    assert plan.grid == -(-5 // rows_per_block)


def test_block_variants_and_grid_cap():
    assert row_plan("softmax_forward", 3, 1025, 4, 2).variant == "smem"
    assert row_plan("softmax_forward", 3, 1025, 4, 2).grid == 2  # capped: the kernel strides over the rest
    assert row_plan("softmax_forward", 3, 1025, 4, 9).shared_bytes == 1025 * 4
    too_long = SHARED_MEMORY_LIMIT // 4 + 1
    assert row_plan("softmax_forward", 3, too_long, 4, 9).variant == "plain"
    assert row_plan("softmax_backward", 3, too_long // 2 + 1, 4, 9, cached_arrays=2).variant == "plain"
    assert row_plan("softmax_cross_entropy", 3, 2000, 4, 9, has_smem_variant=False).variant == "plain"
    with pytest.raises(ValueError):
        row_plan("softmax_forward", 0, 10, 4, 9)


@pytest.mark.parametrize("acc_bytes", [4, 8])
def test_parity_widths_cover_every_branch(acc_bytes):
    for cached in (1, 2):
        variants = {row_plan("op", 3, c, acc_bytes, 4, cached).variant for c in WIDTHS}
        assert variants == {"warp", "smem", "plain"}


def test_elementwise_plan():
    assert elementwise_plan("k", 1, 4).grid == 1
    assert elementwise_plan("k", 10**6, 4).grid == 4
    assert elementwise_plan("k", 513, 100).grid == 3


def test_every_count_and_offset_parameter_is_64_bit():
    """rows * cols can exceed 2^31: every kernel takes its element and row counts as long long."""
    from gpunet.cuda.source import modules, signatures
    checked = 0
    for module in modules():
        for kernel, params in signatures(module).items():
            for p in params:
                if p.name in ("rows", "n", "ignore_index"):
                    assert p.base == "long long", f"{kernel}: {p.name} is {p.base}"
                    checked += 1
    assert checked > 40

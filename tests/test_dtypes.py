"""The dtype table (gpunet/dtypes.py) against the C and CUDA sources: each lists exactly the table's dtypes, so a
dtype added to one and not the other fails here rather than at a user's first call."""
import re
from pathlib import Path

import numpy as np
import pytest

from gpunet import dtypes
from gpunet.cpu_kernels import PARTS
from gpunet.cuda.source import DTYPES, kernel_dir

SIM_HEADER = Path(dtypes.__file__).parent / "cuda" / "cuda_sim.h"


def common_cuh_types(text: str) -> tuple[set, set]:
    """The storage and accumulation types ``kernels/common.cuh`` says it is compiled for (its ``#error`` line,
    what a build without them is told)."""
    match = re.search(r"#error.*-DSCALAR_T=<([^>]*)>\s*-DACC_T=<([^>]*)>", text)
    assert match, "common.cuh no longer names its SCALAR_T and ACC_T choices"
    return set(match.group(1).split("|")), set(match.group(2).split("|"))


def dtype_switches(text: str) -> set:
    """The defines a header switches a dtype's code on (``#if defined(GPUNET_HALF)``), less the simulator's own."""
    return {name for name in re.findall(r"#if\s+defined\((GPUNET_\w+)\)", text) if not name.startswith("GPUNET_SIM")}


def cpp_instantiations(texts) -> set:
    """``(C type, suffix)`` of every ``GPUNET_*_ENTRY_POINTS(float, f32)`` line of the compiled CPU kernels."""
    return {pair for text in texts for pair in re.findall(r"^GPUNET_\w+_ENTRY_POINTS\((\w+),\s*(\w+)\)", text, re.M)}


def mismatches(table, common: str, sim: str, cpps) -> list[str]:
    """What the sources list that the table does not, and the reverse (empty when they agree)."""
    wrong = []
    scalars, accumulators = common_cuh_types(common)
    want_scalars = {d.c_type for d in table}
    want_acc = {next(e.c_type for e in table if e.name == d.accumulate) for d in table}
    if scalars != want_scalars:
        wrong.append(f"common.cuh SCALAR_T {sorted(scalars)} != table {sorted(want_scalars)}")
    if accumulators != want_acc:
        wrong.append(f"common.cuh ACC_T {sorted(accumulators)} != table {sorted(want_acc)}")
    want_switches = {define.split("=")[0] for d in table for define in d.cuda_defines}
    for name, text in (("common.cuh", common), ("cuda_sim.h", sim)):
        if dtype_switches(text) != want_switches:
            wrong.append(f"{name} switches on {sorted(dtype_switches(text))}, table on {sorted(want_switches)}")
    compiled, want_compiled = cpp_instantiations(cpps), {(d.c_type, d.cpu_suffix) for d in table if d.cpu_suffix}
    if compiled != want_compiled:
        wrong.append(f"the .cpp entry points instantiate {sorted(compiled)}, table {sorted(want_compiled)}")
    return wrong


def sources():
    return ((kernel_dir() / "common.cuh").read_text(), SIM_HEADER.read_text(),
            [p.read_text() for p in PARTS if p.suffix == ".cpp"])


def test_the_c_and_cuda_sources_list_exactly_the_tables_dtypes():
    assert mismatches(dtypes.FLOATS, *sources()) == []


def test_a_dtype_in_one_place_only_is_caught():
    """Mutation tests: a bfloat16 row in the table alone, a header that lists one more storage type, a .cpp that
    instantiates one more dtype: each is reported."""
    common, sim, cpps = sources()
    bf16 = dtypes.FloatDtype("bfloat16", "__nv_bfloat16", "float32", ("GPUNET_BF16=1",), None, "NCCL_BFLOAT16")
    assert len(mismatches((*dtypes.FLOATS, bf16), common, sim, cpps)) == 3  # SCALAR_T, both headers' switches
    assert mismatches(dtypes.FLOATS, common.replace("<float|double|__half>", "<float|double|__half|__nv_bfloat16>"),
                      sim, cpps)
    assert mismatches(dtypes.FLOATS, common, sim, [*cpps, "GPUNET_ROW_ENTRY_POINTS(__half, f16)\n"])
    assert mismatches(dtypes.FLOATS[1:], common, sim, cpps)  # the reverse: a dtype the table lost


def test_every_python_side_reads_the_table():
    from gpunet.cpu_kernels.binding import SUFFIXES
    from gpunet.numerics import wide_dtype
    from gpunet.ops.checks import SUPPORTED_FLOATS

    assert SUPPORTED_FLOATS == dtypes.NAMES and set(DTYPES) == set(dtypes.NAMES)
    assert set(SUFFIXES) == {d.name for d in dtypes.FLOATS if d.cpu_suffix}
    for d in dtypes.FLOATS:
        assert DTYPES[d.name].scalar == d.c_type and DTYPES[d.name].acc_numpy_dtype == np.dtype(d.accumulate)
        assert wide_dtype(d.name) == np.dtype(d.accumulate)
        assert np.dtype(d.name).char in dtypes.CHARS


@pytest.mark.parametrize("dtype", [np.int32, np.complex64, np.longdouble])
def test_a_dtype_outside_the_table_is_refused_by_name(dtype):
    from gpunet import ops

    with pytest.raises(ValueError, match="float"):
        ops.softmax(np.zeros((2, 3), dtype=dtype), device="cpu")

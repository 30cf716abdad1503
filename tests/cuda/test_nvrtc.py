"""Every kernel file compiles with NVRTC (the compiler CuPy uses) for every supported architecture, in every
dtype, with no register spills; NVRTC 12 covers Volta (sm_70), which NVRTC 13 dropped."""
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from gpunet.cuda.resources import parse_ptxas_log
from gpunet.cuda.source import DTYPES, modules, read_source, signatures
from gpunet.cuda.nvrtc import (ARCHITECTURES, FLOAT_SEMANTICS, VOLTA, Nvrtc, NvrtcError, compile_module,
                               compile_options)


def nvrtc_or_skip(major):
    try:
        return Nvrtc(major)
    except NvrtcError as exc:
        pytest.skip(str(exc))


# The one known spill, bounded: a double division's slow path (subnormal or huge operands) is a subroutine call,
# and with --fmad=false (docs/semantics.md) ptxas 13 for sm_90 saves registers around it in the block kernel of
# smoothing and probability targets (two divisions: eps / C once per thread, 1 / s per row). The slow path is never
# taken there (s is in [1, C], C an int), so the saves cost nothing measurable; growing past the bound fails.
KNOWN_SPILLS = {("cross_entropy", "float64", "sm_90", "softmax_cross_entropy_mixed_plain"): 40}


@pytest.mark.parametrize("arch", [*ARCHITECTURES, VOLTA])
def test_every_module_compiles_without_spills(arch):
    nvrtc = nvrtc_or_skip(12 if arch == VOLTA else 13)
    jobs = [(m, d) for m in modules() for d in DTYPES]
    with ThreadPoolExecutor(max_workers=2) as pool:  # NVRTC releases the GIL
        results = list(pool.map(lambda job: compile_module(job[0], DTYPES[job[1]], arch, nvrtc, verbose=True), jobs))
    for r in results:
        assert r.ok, f"{r.module}.cu ({r.dtype}, {arch}) does not compile:\n{r.log}"
        resources = parse_ptxas_log(r.log)
        assert set(resources) == set(signatures(r.module)), "the signature parser must see exactly the kernels"
        spilled = {k: (v.spill_stores, v.spill_loads) for k, v in resources.items()
                   if max(v.spill_stores, v.spill_loads) > KNOWN_SPILLS.get((r.module, r.dtype, arch, k), 0)}
        assert not spilled, f"{r.module}.cu ({r.dtype}, {arch}) spills registers: {spilled}"
        for name in signatures(r.module):
            assert name.encode() in r.cubin


def test_compile_errors_are_reported():
    nvrtc = nvrtc_or_skip(13)
    ok, log, _ = nvrtc.compile('extern "C" __global__ void k(float* x) { x[0] = INFINITY; }', "bad.cu",
                               ["--gpu-architecture=sm_80"])
    assert not ok and "INFINITY" in log  # NVRTC has no <math.h> macros: kernels must not use them


def test_float16_headers_come_from_the_test_extra_not_a_cuda_toolkit():
    """cuda_fp16.h with crt/ and nv/target, which the float16 kernels need in NVRTC and in the simulator, is found
    first in the pip wheels of the test extra (nvidia-cuda-runtime, nvidia-cuda-crt, nvidia-cuda-cccl), so the
    suite needs no CUDA toolkit on the machine."""
    import os

    from gpunet.cuda.nvrtc import cuda_include_dirs

    for host_compilable in (False, True):
        folders = cuda_include_dirs(host_compilable=host_compilable)
        assert folders, "no cuda_fp16.h: install the test extra (pip install -e '.[test]')"
        assert folders[0].endswith(os.path.join("nvidia", "cu13", "include")), folders


def flushing_instructions(ptx: str) -> set[str]:
    """The PTX instructions that flush subnormals, less the approximation seeds of libdevice's accurate ``exp``
    and reciprocal (``ex2.approx.ftz``, ``rcp.approx.ftz``), which get range-reduced arguments whatever ``--ftz``
    says."""
    return {i for i in re.findall(r"\t(\S+\.ftz\S*)", ptx) if not i.startswith(("ex2.approx.", "rcp.approx."))}


def test_every_module_keeps_subnormals_in_its_ptx():
    """docs/semantics.md: no flush to zero on the GPU. The PTX of every module and dtype, compiled with the one
    options function, flushes nowhere; the planted ``--ftz=true`` (what CuPy's own compile appends) shows the
    check can fail."""
    nvrtc = nvrtc_or_skip(13)
    for module in modules():
        for name, config in DTYPES.items():
            options = compile_options(config, "compute_90")
            assert set(FLOAT_SEMANTICS) <= set(options)
            ok, log, ptx = nvrtc.compile(read_source(module), f"{module}.cu", options)
            assert ok, log
            assert b".target sm_90" in ptx and not flushing_instructions(ptx.decode()), (module, name)
    ok, _, planted = nvrtc.compile(read_source("softmax"), "softmax.cu",
                                   compile_options(DTYPES["float32"], "compute_90") + ["--ftz=true"])
    assert ok and {"add.rn.ftz.f32", "mul.rn.ftz.f32"} <= flushing_instructions(planted.decode())

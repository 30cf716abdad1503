"""The CUDA simulator is faithful: indices, barriers, shared memory, shuffles with real mask semantics, votes,
atomics, argument checks, and sanitizers that catch planted bugs."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gpunet.cuda.source import DTYPES
from gpunet.cuda.sim_build import build_module, compiler
from gpunet.devices.sim import SimModule, SimulatorError

SOURCE = (Path(__file__).parent / "sim_kernels.cu").read_text()


@pytest.fixture(scope="module")
def sim():
    return SimModule("sim_test_kernels", DTYPES["float32"], source=SOURCE)


def test_thread_and_block_indices(sim):
    grid, block = (3, 2, 1), (8, 4, 1)
    out = np.full(3 * 2 * 8 * 4 * 4, -1, dtype=np.int32)
    sim.launch("thread_indices", grid, block, 0, [out])
    rows = out.reshape(-1, 4)
    want = [(tx, ty, bx, by) for by in range(2) for bx in range(3) for ty in range(4) for tx in range(8)]
    assert [tuple(r) for r in rows] == want


@pytest.mark.parametrize("active", [1, 10, 64])
def test_syncthreads_with_threads_that_returned(sim, active):
    x = np.random.default_rng(0).standard_normal(3 * active).astype(np.float32)
    out = np.zeros(3, dtype=np.float32)
    sim.launch("sum_with_early_exit", 3, 64, 0, [x, out, active])
    np.testing.assert_allclose(out, x.reshape(3, active).astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-6)


def test_dynamic_shared_memory_is_poisoned_and_bounds_checked(sim):
    out = np.zeros(2 * 32, dtype=np.float32)
    sim.launch("read_dynamic_shared", 2, 32, 32 * 4, [out, 0])
    assert np.all(np.isnan(out))  # never written: NaN, not a stale value
    with pytest.raises(SimulatorError, match="extern __shared__ access at index 32"):
        sim.launch("read_dynamic_shared", 1, 32, 32 * 4, [np.zeros(32, np.float32), 1])


@pytest.mark.parametrize("width,delta", [(32, 1), (32, 5), (16, 2), (8, 3), (4, 1)])
def test_shuffles_match_cuda_semantics(sim, width, delta):
    x = (np.arange(32, dtype=np.int32) * 7 + 3)
    out = np.zeros(32 * 4, dtype=np.int32)
    sim.launch("shuffles", 1, 32, 0, [x, out, width, delta])
    got = out.reshape(32, 4)
    for lane in range(32):
        base = lane - lane % width
        xor_src = lane ^ delta
        assert got[lane, 0] == x[base + 3 % width]
        assert got[lane, 1] == (x[xor_src] if xor_src // width == lane // width else x[lane])
        assert got[lane, 2] == (x[lane + delta] if lane % width + delta < width else x[lane])
        assert got[lane, 3] == (x[lane - delta] if lane % width >= delta else x[lane])


def test_votes_and_disjoint_sub_warp_masks(sim):
    pred = np.zeros(32, dtype=np.int32)
    pred[[3, 17, 20]] = 1
    out = np.zeros(32 * 3, dtype=np.uint32)
    sim.launch("votes", 1, 32, 0, [pred, out])
    got = out.reshape(32, 3)
    assert np.all(got[:, 0] == (1 << 3) | (1 << 17) | (1 << 20))
    assert np.all(got[:, 1] == 1)  # each half has a true predicate
    assert np.all(got[:, 2] == 0)
    pred[:] = 1
    pred[17] = 0
    sim.launch("votes", 1, 32, 0, [pred, out])
    assert np.all(out.reshape(32, 3)[:, 2] == 0)
    pred[:] = 1
    sim.launch("votes", 1, 32, 0, [pred, out])
    assert np.all(out.reshape(32, 3)[:, 2] == 1)


def test_reading_a_lane_outside_the_mask_is_an_error(sim):
    with pytest.raises(SimulatorError, match="lane 0 reads lane 20, which is not in the mask 0x0000ffff"):
        sim.launch("shuffle_outside_mask", 1, 32, 0, [np.zeros(32, np.int32)])


def test_mask_naming_returned_lanes_is_an_error(sim):
    with pytest.raises(SimulatorError, match="have returned"):
        sim.launch("shuffle_with_exited_lanes", 1, 32, 0, [np.zeros(32, np.int32)])


def test_deadlock_is_reported(sim):
    with pytest.raises(SimulatorError, match="deadlock"):
        sim.launch("divergent_deadlock", 1, 32, 0, [np.zeros(1, np.int32)])


def test_atomics_across_threads_and_blocks(sim):
    counter = np.zeros(1, dtype=np.uint64)
    total = np.zeros(1, dtype=np.float32)
    sim.launch("atomic_count", 5, 64, 0, [counter, total])
    assert counter[0] == 320 and total[0] == 160.0


def test_arguments_are_checked_against_the_signature(sim):
    x, y = np.arange(5.0), np.zeros(5)
    sim.launch("typed_args", 2, 32, 0, [x, y, 5, 2.0])
    np.testing.assert_array_equal(y, 2 * x)
    with pytest.raises(TypeError, match="parameter x .* takes a device array, got int"):
        sim.launch("typed_args", 1, 32, 0, [12345, y, 5, 2.0])
    with pytest.raises(TypeError, match="takes float64 data, got float32"):
        sim.launch("typed_args", 1, 32, 0, [x.astype(np.float32), y, 5, 2.0])
    with pytest.raises(TypeError, match="parameter n .* takes an integer, got float"):
        sim.launch("typed_args", 1, 32, 0, [x, y, 5.0, 2.0])
    with pytest.raises(TypeError, match="takes 4 arguments"):
        sim.launch("typed_args", 1, 32, 0, [x, y, 5])
    with pytest.raises(TypeError, match="C-contiguous"):
        sim.launch("typed_args", 1, 32, 0, [np.arange(10.0)[::2], y, 5, 2.0])
    readonly = np.zeros(5)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        sim.launch("typed_args", 1, 32, 0, [x, readonly, 5, 2.0])


def test_build_is_cached_by_source(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUNET_CACHE", str(tmp_path))
    a = build_module("cache_probe", DTYPES["float32"], source=SOURCE)
    assert build_module("cache_probe", DTYPES["float32"], source=SOURCE) == a
    b = build_module("cache_probe", DTYPES["float32"], source=SOURCE + "\n// changed\n")
    assert a != b and a.exists() and b.exists()


# ---- sanitizers ----------------------------------------------------------------------------------------------------
def _runtime(name):
    path = subprocess.run([compiler(), f"-print-file-name=lib{name}.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f"lib{name}.so is not installed with {compiler()}")
    return path


@pytest.mark.slow
def test_address_sanitizer_catches_an_out_of_bounds_read(tmp_path):
    """Python itself runs with ASan preloaded; the kernel reads one element past a NumPy array."""
    script = tmp_path / "oob.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np
        from gpunet.cuda.source import DTYPES
        from gpunet.devices.sim import SimModule
        source = open({str(Path(__file__).parent / 'sim_kernels.cu')!r}).read()
        sim = SimModule("sim_test_kernels", DTYPES["float32"], sanitize="address", source=source)
        x, out = np.ones(32, np.float32), np.zeros(32, np.float32)
        sim.launch("read_past_end", 1, 32, 0, [x, out, int(__import__("sys").argv[1])])
        print("clean run")
    """))
    env = dict(os.environ, LD_PRELOAD=_runtime("asan"), ASAN_OPTIONS="detect_leaks=0",
               PYTHONPATH=str(Path(__file__).parents[2]))
    ok = subprocess.run([sys.executable, str(script), "0"], env=env, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0 and "clean run" in ok.stdout, ok.stderr[-3000:]
    bad = subprocess.run([sys.executable, str(script), "1"], env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in bad.stderr and "read_past_end" in bad.stderr


TSAN_DRIVER = r"""
#include <cstdio>
#include <dlfcn.h>
typedef int (*launch_fn)(const unsigned*, const unsigned*, unsigned long long, void**, char*, int);
int main(int argc, char** argv) {
    void* lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { std::printf("dlopen: %s\n", dlerror()); return 2; }
    launch_fn launch = (launch_fn)dlsym(lib, "gpunet_sim_launch_block_sum");
    float x[64], out[1] = {0};
    for (int i = 0; i < 64; ++i) x[i] = 1.0f;
    int racy = argv[2][0] == '1';
    void* px = x; void* pout = out;
    void* args[] = {&px, &pout, &racy};
    unsigned grid[3] = {1, 1, 1}, block[3] = {64, 1, 1};
    char err[512] = {0};
    int rc = launch(grid, block, 0, args, err, sizeof err);
    std::printf("rc=%d sum=%g %s\n", rc, out[0], err);
    return rc;
}
"""


@pytest.mark.slow
def test_thread_sanitizer_catches_a_missing_syncthreads(tmp_path):
    """A driver (TSan-instrumented) launches the kernel twice: with its __syncthreads there is no report,
    without it TSan reports the data race on the shared buffer. (TSan cannot be preloaded into every Python
    build, so the driver is a small C++ program calling the very launcher Python calls.)"""
    _runtime("tsan")
    lib = build_module("sim_test_kernels", DTYPES["float32"], sanitize="thread", source=SOURCE)
    driver = tmp_path / "driver"
    subprocess.run([compiler(), "-fsanitize=thread", "-O1", "-o", str(driver), "-x", "c++", "-", "-ldl"],
                   input=TSAN_DRIVER, text=True, check=True)
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=0 exitcode=66")
    clean = subprocess.run([str(driver), str(lib), "0"], env=env, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0 and "sum=64" in clean.stdout, clean.stderr[-3000:]
    assert "ThreadSanitizer" not in clean.stderr
    racy = subprocess.run([str(driver), str(lib), "1"], env=env, capture_output=True, text=True, timeout=300)
    assert "WARNING: ThreadSanitizer: data race" in racy.stderr and "block_sum" in racy.stderr

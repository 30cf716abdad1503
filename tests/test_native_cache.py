"""Compiled libraries in the cache are checked before they are loaded: a truncated one (which would kill the
loading process with SIGBUS), one whose digest is corrupt or missing, is rebuilt with one log line; a build is
fsync'ed before its rename; a cache folder that cannot be used builds in a temporary folder, on cpu and sim."""
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gpunet import cpu_kernels, native
from gpunet.cuda.sim_build import build_module
from gpunet.cuda.source import DTYPES
from gpunet.devices.cpu import reset_compiled_cache
from gpunet.devices.sim import SimModule

ROOT = Path(__file__).parents[1]
KERNEL = """
extern "C" __global__ void add_one(float* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += 1.0f;
}
"""
REBUILT = "is not loaded"

# Each child loads the library its device needs from GPUNET_CACHE and runs one op on it.
CHILDREN = {
    "sim": """
        from gpunet.cuda.source import DTYPES
        from gpunet.devices.sim import SimModule
        x = np.zeros(40, np.float32)
        SimModule("cache_probe_add", DTYPES["float32"], source=KERNEL).launch("add_one", 2, 32, 0, [x, 40])
        print("sum", x.sum())
    """,
    "cpu": """
        from gpunet import cpu_kernels
        lib = cpu_kernels.library()
        assert lib is not None, "fell back to NumPy"
        x = np.ones((4, 5), np.float32)
        y = np.empty_like(x)
        lib.function("softmax_forward", x.dtype)(x, y, 4, 5, 1)
        print("sum", round(float(y.sum()), 4))
    """,
}
EXPECTED = {"sim": "sum 40.0", "cpu": "sum 4.0"}


def run_child(device: str, cache: Path) -> subprocess.CompletedProcess:
    script = ("import logging, sys\nlogging.basicConfig(level=logging.WARNING, format='LOG %(message)s')\n"
              f"import numpy as np\nKERNEL = {KERNEL!r}\n" + textwrap.dedent(CHILDREN[device]))
    env = dict(os.environ, GPUNET_CACHE=str(cache), PYTHONPATH=str(ROOT), GPUNET_CPU_ISA="generic")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)


def libraries(cache: Path, device: str) -> list:
    return sorted((cache / device).glob("*.so"))


@pytest.mark.parametrize("device", ["cpu", "sim"])
def test_a_truncated_library_is_rebuilt_not_loaded(tmp_path, device):
    """Cut to a third, the library made every later process die of SIGBUS (exit -7) until deleted. In
    subprocesses: a SIGBUS here would kill pytest."""
    first = run_child(device, tmp_path)
    assert first.returncode == 0 and EXPECTED[device] in first.stdout, first.stderr[-3000:]
    assert REBUILT not in first.stderr
    [lib] = libraries(tmp_path, device)
    whole = lib.read_bytes()
    lib.write_bytes(whole[:len(whole) // 3])
    second = run_child(device, tmp_path)
    assert second.returncode == 0 and EXPECTED[device] in second.stdout, (second.returncode, second.stderr[-3000:])
    assert second.stderr.count(REBUILT) == 1 and "do not match its digest" in second.stderr
    assert libraries(tmp_path, device) == [lib] and lib.stat().st_size == len(whole)
    third = run_child(device, tmp_path)  # the rebuilt library passes its check: no rebuild, no log line
    assert third.returncode == 0 and EXPECTED[device] in third.stdout and third.stderr.count(REBUILT) == 0


def probe(tmp_path, monkeypatch, source=KERNEL) -> Path:
    monkeypatch.setenv("GPUNET_CACHE", str(tmp_path))
    return build_module("cache_probe_add", DTYPES["float32"], source=source)


@pytest.mark.parametrize("digest", ["0" * 64, "not a digest", "", None])
def test_a_corrupt_or_missing_digest_rebuilds_with_one_log_line(tmp_path, monkeypatch, caplog, digest):
    lib = probe(tmp_path, monkeypatch)
    sidecar = lib.parent / (lib.name + native.DIGEST_SUFFIX)
    good = sidecar.read_text()
    assert good.strip() == native.file_digest(lib)
    if digest is None:
        sidecar.unlink()
    else:
        sidecar.write_text(digest)
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        assert probe(tmp_path, monkeypatch) == lib
    assert sum(REBUILT in r.message for r in caplog.records) == 1
    assert sidecar.read_text().strip() == native.file_digest(lib)
    x = np.zeros(3, np.float32)
    SimModule("cache_probe_add", DTYPES["float32"], source=KERNEL).launch("add_one", 1, 32, 0, [x, 3])
    np.testing.assert_array_equal(x, np.ones(3, np.float32))


def test_a_library_of_other_bytes_than_its_digest_says_is_rebuilt(tmp_path, monkeypatch, caplog):
    """Same size, one byte changed: the digest, not the size, decides."""
    lib = probe(tmp_path, monkeypatch)
    whole = bytearray(lib.read_bytes())
    whole[len(whole) // 2] ^= 0xFF
    lib.write_bytes(bytes(whole))
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        probe(tmp_path, monkeypatch)
    assert sum(REBUILT in r.message for r in caplog.records) == 1
    assert native.verify(lib) is None


def test_a_build_is_fsynced_before_its_rename(tmp_path, monkeypatch):
    """The library's bytes reach the disk before its name does, and the folder after: a power cut leaves the old
    library or the new one whole, never a name over a hole."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", "folder" if os.path.isdir(target) else Path(target).name))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", Path(src).name, Path(dst).name))
        return real_replace(src, dst)
    monkeypatch.setattr(native.os, "fsync", fsync)
    monkeypatch.setattr(native.os, "replace", replace)
    lib = probe(tmp_path, monkeypatch)
    renames = [i for i, e in enumerate(events) if e[0] == "rename"]
    assert [events[i][2] for i in renames] == [lib.name, lib.name + native.DIGEST_SUFFIX]
    library_rename, digest_rename = renames
    assert ("fsync", events[library_rename][1]) in events[:library_rename]
    assert ("fsync", events[digest_rename][1]) in events[library_rename:digest_rename]
    assert ("fsync", "folder") in events[digest_rename:]


def cache_as_a_file(tmp_path, monkeypatch) -> Path:
    blocker = tmp_path / "not a folder"
    blocker.write_text("")
    monkeypatch.setenv("GPUNET_CACHE", str(blocker))
    return blocker


def test_cache_as_a_file_builds_the_simulator_in_a_temporary_folder(tmp_path, monkeypatch, caplog):
    blocker = cache_as_a_file(tmp_path, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        sim = SimModule("cache_probe_add", DTYPES["float32"], source=KERNEL)
        lib = build_module("cache_probe_add", DTYPES["float32"], source=KERNEL)
    x = np.zeros(3, np.float32)
    sim.launch("add_one", 1, 32, 0, [x, 3])
    np.testing.assert_array_equal(x, np.ones(3, np.float32))
    said = [r.message for r in caplog.records if "temporary folder" in r.message]
    assert len(said) == 1 and str(blocker) in said[0] and "Not a directory" in said[0] and "GPUNET_CACHE" in said[0]
    assert not lib.is_relative_to(blocker) and native.verify(lib) is None


def test_cache_as_a_file_builds_the_cpu_kernels_in_a_temporary_folder(tmp_path, monkeypatch, caplog):
    """Before, the CPU fell back to every op's NumPy form; now the compiled kernels still run."""
    blocker = cache_as_a_file(tmp_path, monkeypatch)
    monkeypatch.setenv("GPUNET_CPU_ISA", "generic")
    reset_compiled_cache()
    try:
        with caplog.at_level(logging.WARNING, logger="gpunet"):
            lib = cpu_kernels.library()
            assert cpu_kernels.library() is lib
        assert lib is not None
        x = np.ones((2, 4), np.float32)
        y = np.empty_like(x)
        lib.function("softmax_forward", x.dtype)(x, y, 2, 4, 1)
        np.testing.assert_allclose(y, np.full((2, 4), 0.25, np.float32), rtol=1e-6)
        said = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(said) == 1 and str(blocker) in said[0] and "temporary folder" in said[0]
    finally:
        reset_compiled_cache()


def test_a_read_only_cache_still_loads_what_it_holds_and_builds_elsewhere(tmp_path, monkeypatch, caplog):
    """A folder that refuses new files (read-only; planted, since root writes to any folder) still serves the
    libraries it holds; a missing one is built in a temporary folder, with one log line."""
    lib = probe(tmp_path, monkeypatch)
    real = native.tempfile.TemporaryDirectory

    def refusing(dir):
        if Path(dir) == lib.parent:
            raise PermissionError(13, "Permission denied", str(dir))
        return real(dir=dir)
    monkeypatch.setattr(native.tempfile, "TemporaryDirectory", refusing)
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        assert probe(tmp_path, monkeypatch) == lib  # verified: loaded from the folder as it is
        assert caplog.records == []
        other = probe(tmp_path, monkeypatch, KERNEL + "// changed\n")  # not there: built elsewhere
    assert not other.is_relative_to(tmp_path) and native.verify(other) is None
    said = [r.message for r in caplog.records]
    assert len(said) == 1 and "cannot be written" in said[0] and "Permission denied" in said[0]


def test_processes_starting_at_once_build_a_library_once(tmp_path):
    """N ranks on a fresh cache: one builds under the library's lock, the others wait and load that build (no
    duplicate compile, no library renamed over another's digest)."""
    calls = tmp_path / "calls"
    wrapper = tmp_path / "cxx"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> {calls}\nexec {native.compiler("the test")} "$@"\n')
    wrapper.chmod(0o755)
    script = ("import numpy as np\nfrom gpunet.cuda.source import DTYPES\nfrom gpunet.devices.sim import SimModule\n"
              f"x = np.zeros(3, np.float32)\nKERNEL = {KERNEL!r}\n"
              "SimModule('cache_probe_add', DTYPES['float32'], source=KERNEL).launch('add_one', 1, 32, 0, [x, 3])\n"
              "print('sum', x.sum())\n")
    env = dict(os.environ, GPUNET_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT), CXX=str(wrapper))
    ranks = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(3)]
    outputs = [rank.communicate(timeout=300) for rank in ranks]
    assert all(rank.returncode == 0 and "sum 3.0" in out and REBUILT not in err
               for rank, (out, err) in zip(ranks, outputs)), outputs
    assert len(calls.read_text().split()) == 2  # one build: g++ -E, then the compile
    [lib] = libraries(tmp_path / "cache", "sim")
    assert native.verify(lib) is None

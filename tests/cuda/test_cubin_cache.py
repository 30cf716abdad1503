"""The images the cuda device loads (gpunet.cuda.cubin_cache): one options function shared with the NVRTC tests,
the on-disk cache and its sidecar, and the PTX fallback for a driver older than the NVRTC. No GPU: the real NVRTC
compiles, a stand-in CuPy loads (tests/cuda/test_cuda_launcher.py)."""
import ast
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from gpunet.cuda import cubin_cache, nvrtc
from gpunet.cuda.source import DTYPES
from gpunet.devices.cuda import CudaLauncher
from gpunet.ops.softmax import SOFTMAX

from .test_cuda_launcher import StandInRawModule, stand_in_cupy
from .test_nvrtc import flushing_instructions, nvrtc_or_skip

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUNET_CACHE", str(tmp_path))
    return tmp_path / "cuda"


def test_the_nvrtc_tests_and_the_cuda_path_take_their_options_from_one_function(fresh_cache, monkeypatch):
    """Wrap compile_options: the NVRTC tests' compile (compile_module, verbose) and the cuda path's image both call
    it with the same arguments, and the image's sidecar records what it returned."""
    nvrtc_or_skip(13)
    calls = []
    original = nvrtc.compile_options

    def recording(config, arch, verbose=False):
        calls.append((config.name, arch, verbose))
        return original(config, arch, verbose)
    monkeypatch.setattr(nvrtc, "compile_options", recording)
    tested = nvrtc.compile_module("softmax", DTYPES["float32"], "sm_90", verbose=True)
    assert tested.ok and calls == [("float32", "sm_90", True)]
    calls.clear()
    image = cubin_cache.module_image("softmax", np.float32, "sm_90")
    assert calls and set(calls) == {("float32", "sm_90", True)}
    sidecar = json.loads(image.with_suffix(".json").read_text())
    assert sidecar["options"] == original(DTYPES["float32"], "sm_90", verbose=True)
    assert {k: sidecar[k] for k in ("module", "dtype", "arch", "format", "nvrtc")} == {
        "module": "softmax", "dtype": "float32", "arch": "sm_90", "format": "cubin",
        "nvrtc": cubin_cache.version_of(nvrtc_or_skip(13))}
    assert image.parent == fresh_cache and image.read_bytes() == tested.cubin


def test_an_image_is_compiled_once_and_a_damaged_one_again(fresh_cache, monkeypatch, caplog):
    nvrtc_or_skip(13)
    image = cubin_cache.module_image("softmax", "float64", "sm_80")
    good = image.read_bytes()

    def no_compile(*args, **kwargs):
        raise AssertionError("a cached image was compiled again")
    with monkeypatch.context() as m:
        m.setattr(nvrtc, "compile_module", no_compile)
        assert cubin_cache.module_image("softmax", "float64", "sm_80") == image
    assert cubin_cache.module_image("softmax", "float64", "sm_86") != image  # another architecture, another image
    image.write_bytes(good[:100])  # torn by a crash outside write_atomically, say
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        assert cubin_cache.module_image("softmax", "float64", "sm_80") == image
    assert image.read_bytes() == good and "does not match its sidecar" in caplog.text


def test_a_cache_folder_that_cannot_be_used_compiles_into_a_private_folder(tmp_path, monkeypatch, caplog):
    nvrtc_or_skip(13)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("GPUNET_CACHE", str(blocked))
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        image = cubin_cache.module_image("elementwise", "float32", "sm_80")
    assert image.is_file() and blocked not in image.parents and image.with_suffix(".json").is_file()
    assert "set GPUNET_CACHE to a writable folder" in caplog.text


class CUDADriverError(RuntimeError):
    """CuPy's error type for a failed driver call; its message starts with the driver's error name."""


def refusing(codes_by_suffix, nvrtc_majors=("13", "12")):
    """A stand-in RawModule whose load of a ``.cubin`` or ``.ptx`` made by one of ``nvrtc_majors`` raises the
    driver error given for it."""
    class Refusing(StandInRawModule):
        tried = []

        def __init__(self, *, path):
            made_by = json.loads(Path(path).with_suffix(".json").read_text())["nvrtc"]
            Refusing.tried.append((made_by.split(".")[0], Path(path).suffix))
            code = codes_by_suffix.get(Path(path).suffix)
            if code and made_by.split(".")[0] in nvrtc_majors:
                raise CUDADriverError(f"{code}: the driver says no")
            super().__init__(path=path)
    return Refusing


def test_a_cubin_the_driver_cannot_load_falls_back_to_ptx_with_one_log_line(caplog):
    nvrtc_or_skip(13)
    raw = refusing({".cubin": "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"})
    launcher = CudaLauncher(stand_in_cupy(raw), 0)
    x = np.random.default_rng(1).standard_normal((3, 50)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        y = SOFTMAX.run(launcher, x)
    np.testing.assert_allclose(y, np.exp(x - x.max(1, keepdims=True)) / np.exp(x - x.max(1, keepdims=True)).sum(
        1, keepdims=True), rtol=1e-5)
    assert raw.tried == [("13", ".cubin"), ("13", ".ptx")]
    (module,) = StandInRawModule.instances
    assert module.format == "ptx" and module.options == nvrtc.compile_options(DTYPES["float32"], "compute_90", True)
    ptx = module.path.read_text()
    assert ".target sm_90" in ptx and not flushing_instructions(ptx)
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    version = cubin_cache.version_of(nvrtc_or_skip(13))
    assert f"NVRTC {version}'s cubin: CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in record.getMessage()
    assert record.getMessage().endswith(f"it loaded NVRTC {version}'s ptx instead")


def test_a_cuda_12_driver_loads_the_cubin_of_nvrtc_12_installed_beside_13(caplog):
    """A CUDA 12 driver refuses NVRTC 13's cubin and PTX; the test extra's NVRTC 12 makes one it loads."""
    nvrtc_or_skip(13)
    nvrtc_or_skip(12)
    raw = refusing({".cubin": "CUDA_ERROR_INVALID_IMAGE", ".ptx": "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"},
                   nvrtc_majors=("13",))
    launcher = CudaLauncher(stand_in_cupy(raw), 0)
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        SOFTMAX.run(launcher, np.ones((2, 3), np.float32))
    assert raw.tried == [("13", ".cubin"), ("13", ".ptx"), ("12", ".cubin")]
    (module,) = StandInRawModule.instances
    assert module.format == "cubin" and module.options == nvrtc.compile_options(DTYPES["float32"], "sm_90", True)
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


def test_a_driver_that_loads_no_image_is_named_with_every_refusal():
    version = cubin_cache.version_of(nvrtc_or_skip(13))
    raw = refusing({".cubin": "CUDA_ERROR_NO_BINARY_FOR_GPU", ".ptx": "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"})
    launcher = CudaLauncher(stand_in_cupy(raw), 0)
    with pytest.raises(RuntimeError, match="driver is older than every NVRTC installed") as caught:
        SOFTMAX.run(launcher, np.zeros((2, 3), np.float32))
    assert len(raw.tried) == 2 * len(cubin_cache.installed_nvrtcs("sm_90")[0])
    assert f"{version}'s cubin: CUDA_ERROR_NO_BINARY_FOR_GPU" in str(caught.value)
    assert f"{version}'s ptx: CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in str(caught.value)


def test_other_load_errors_are_not_hidden_behind_a_fallback():
    nvrtc_or_skip(13)
    raw = refusing({".cubin": "CUDA_ERROR_OUT_OF_MEMORY"})
    launcher = CudaLauncher(stand_in_cupy(raw), 0)
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_OUT_OF_MEMORY"):
        SOFTMAX.run(launcher, np.zeros((2, 3), np.float32))
    assert raw.tried == [("13", ".cubin")]


def test_no_cupy_compile_is_left_in_gpunet():
    """CuPy's own compile (RawModule(code=...), RawKernel, ElementwiseKernel) appends -ftz=true: gpunet has none."""
    def compiles(call):
        name = getattr(call.func, "attr", getattr(call.func, "id", None))
        return name in ("RawKernel", "ElementwiseKernel", "ReductionKernel") or name == "RawModule" and (
            call.args or any(k.arg == "code" for k in call.keywords))
    offenders = [(str(p.relative_to(REPO)), node.lineno) for p in (REPO / "gpunet").rglob("*.py")
                 for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Call) and compiles(node)]
    assert offenders == []
    assert compiles(ast.parse("cupy.RawModule(code=src, options=o)").body[0].value)  # the check can fail


def test_an_architecture_no_nvrtc_compiles_for_is_named():
    nvrtc_or_skip(13)
    with pytest.raises(nvrtc.NvrtcError, match="no installed NVRTC compiles for sm_10"):
        cubin_cache.nvrtc_for("sm_10")

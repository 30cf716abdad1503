"""The images the ``cuda`` device loads: each (module, dtype) compiled by gpunet's own NVRTC binding with exactly
``nvrtc.compile_options`` (the options the NVRTC tests check) for the device's architecture, cached on disk.

No compiler but this one runs for the GPU: CuPy's ``RawModule(code=...)`` would add ``-ftz=true`` behind gpunet's
back (docs/semantics.md), so the device loads the finished image with ``RawModule(path=...)``. An image is cached
as ``<cache>/cuda/<digest>.cubin`` (``.ptx`` for the driver-compiled fallback) beside a sidecar ``<digest>.json``
that says what it is; the digest covers the kernel sources, the options, the architecture and NVRTC's version.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

from .. import native
from . import nvrtc as binding  # through the module, so that a test that wraps compile_options sees every call
from .nvrtc import Nvrtc, NvrtcError
from .source import dtype_config, source_digest_parts

FORMATS = ("cubin", "ptx")
# The driver's answers to an image newer than itself (a newer PTX ISA, a cubin of a newer CUDA major, none for its
# architecture): another image may still load. A damaged file cannot be the cause: the sidecar's sha256 is checked.
DRIVER_CANNOT_LOAD = ("CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "CUDA_ERROR_NO_BINARY_FOR_GPU",
                      "CUDA_ERROR_INVALID_IMAGE")

_log = logging.getLogger("gpunet")


@functools.lru_cache(maxsize=None)
def installed_nvrtcs(arch: str) -> tuple[tuple[Nvrtc, ...], tuple[str, ...]]:
    """The NVRTCs installed that compile for ``arch`` (``sm_XY``), newest first, and why each other one does not."""
    found, problems = [], []
    for major in (13, 12):
        try:
            nvrtc = Nvrtc(major)
        except NvrtcError as exc:
            problems.append(str(exc))
            continue
        if arch in nvrtc.supported_archs():
            found.append(nvrtc)
        else:
            problems.append(f"NVRTC {version_of(nvrtc)} does not compile for {arch}")
    return tuple(found), tuple(problems)


def nvrtc_for(arch: str) -> Nvrtc:
    """The newest NVRTC installed that compiles for ``arch``: NVRTC 13, or NVRTC 12 for sm_70."""
    found, problems = installed_nvrtcs(arch)
    if not found:
        raise NvrtcError(f"no installed NVRTC compiles for {arch}: {'; '.join(problems)} (install gpunet[cuda13], "
                         "or gpunet[cuda12] for sm_70)")
    return found[0]


def version_of(nvrtc: Nvrtc) -> str:
    return f"{nvrtc.version[0]}.{nvrtc.version[1]}"


def target_arch(arch: str, fmt: str) -> str:
    """``sm_90`` for a cubin, ``compute_90`` for PTX."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r}: expected one of {FORMATS}")
    return arch if fmt == "cubin" else "compute_" + arch.split("_", 1)[1]


def module_image(module: str, dtype, arch: str, fmt: str = "cubin", nvrtc: Nvrtc | None = None) -> Path:
    """The path of ``kernels/<module>.cu`` compiled for ``dtype`` and ``arch`` (``sm_XY``), as a cubin or, with
    ``fmt="ptx"``, as PTX; compiled once and cached (written atomically: image first, then its sidecar)."""
    config = dtype_config(dtype)
    nvrtc = nvrtc or nvrtc_for(arch)
    compiled_for = target_arch(arch, fmt)
    options = binding.compile_options(config, compiled_for, verbose=True)  # ptxas' report goes to the log, not the code
    digest = native.digest_of(module, *source_digest_parts(), "\0".join(options), compiled_for,
                              f"nvrtc {version_of(nvrtc)}", fmt)
    record = {"module": module, "dtype": config.name, "arch": compiled_for, "options": options, "format": fmt,
              "nvrtc": version_of(nvrtc)}

    def compiled_into(folder: Path) -> Path:
        image, sidecar = folder / f"{digest}.{fmt}", folder / f"{digest}.json"
        cached = _cached(image, sidecar, record)
        if cached:
            return cached
        result = binding.compile_module(module, config, compiled_for, nvrtc, verbose=True)
        if not result.ok:
            raise NvrtcError(f"{module}.cu ({config.name}, {compiled_for}) does not compile with NVRTC "
                             f"{version_of(nvrtc)}:\n{result.log}")
        data = result.cubin.rstrip(b"\0") if fmt == "ptx" else result.cubin
        native.write_atomically(image, data)
        native.write_atomically(sidecar, json.dumps(
            {**record, "sha256": hashlib.sha256(data).hexdigest()}, indent=1).encode())
        return image
    try:
        return compiled_into(native.cache_dir("cuda"))
    except OSError as exc:  # as native.cached_library: this process's own folder where the cache cannot be used
        native.warn_once(f"gpunet: the cache folder {native.cache_root() / 'cuda'} cannot be used ({exc}): "
                         "compiling kernels into a temporary folder for this process only (set GPUNET_CACHE to a "
                         "writable folder)")
        folder = native._private_dir() / "cuda"
        folder.mkdir(exist_ok=True)
        return compiled_into(folder)


def _cached(image: Path, sidecar: Path, record: dict) -> Path | None:
    """``image`` when it and its sidecar are there and agree (a torn or foreign pair is compiled again)."""
    try:
        recorded = json.loads(sidecar.read_text())
        data = image.read_bytes()
    except (OSError, ValueError):
        return None
    if {k: recorded.get(k) for k in record} != record or recorded.get("sha256") != hashlib.sha256(data).hexdigest():
        _log.warning("gpunet: the cached kernel image %s does not match its sidecar; compiling it again", image)
        return None
    return image


def load_module(load: Callable[[Path], object], module: str, dtype, arch: str):
    """``load(path)`` of the newest NVRTC's cubin. Where the driver refuses an image as too new for it (a driver
    older than the NVRTC), the next is tried: that NVRTC's PTX, which the driver compiles itself, then the cubin
    and PTX of an older NVRTC installed beside it (NVRTC 12 for a CUDA 12 driver), with one log line saying what
    was refused; where the driver refuses every one, a RuntimeError that names each refusal."""
    nvrtc_for(arch)  # no NVRTC for this architecture: say so before trying anything
    refusals = []
    for nvrtc in installed_nvrtcs(arch)[0]:
        for fmt in FORMATS:
            try:
                loaded = load(module_image(module, dtype, arch, fmt, nvrtc))
            except Exception as exc:  # CuPy's CUDADriverError, whose message starts with the driver's error name
                if not any(code in str(exc) for code in DRIVER_CANNOT_LOAD):
                    raise
                refusals.append(f"NVRTC {version_of(nvrtc)}'s {fmt}: {exc}")
                continue
            if refusals:
                _log.warning("gpunet: the CUDA driver refused %s for %s (%s); it loaded NVRTC %s's %s instead",
                             module + ".cu", arch, "; ".join(refusals), version_of(nvrtc), fmt)
            return loaded
    raise RuntimeError(f"the CUDA driver loads no image of {module}.cu for {arch} ({'; '.join(refusals)}): the "
                       "driver is older than every NVRTC installed; update the driver, or install the NVRTC of the "
                       "driver's CUDA version (nvidia-cuda-nvrtc-cu12 for CUDA 12)")

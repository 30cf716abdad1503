"""The CUDA sources in ``kernels/``: where they are, how a dtype is compiled, and each kernel's signature.

The signature (parsed from the source) lets the launcher check every argument before a launch, on the GPU and
in the simulator alike: a Python int where the kernel takes a pointer is a TypeError here, where on a GPU it
would corrupt memory.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import numpy as np

from .. import dtypes

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def kernel_dir() -> Path:
    """``kernels/`` of a source checkout, or its copy ``gpunet/_kernels`` inside an installed wheel."""
    for candidate in (_PACKAGE_DIR.parent / "kernels", _PACKAGE_DIR / "_kernels"):
        if (candidate / "common.cuh").is_file():
            return candidate
    raise FileNotFoundError("gpunet's CUDA sources (kernels/*.cu) are missing from this installation")


def modules() -> tuple[str, ...]:
    """Every kernel module: the ``.cu`` files of ``kernels/`` (a new file is a new module, nothing to register)."""
    return tuple(sorted(p.stem for p in kernel_dir().glob("*.cu")))


@dataclasses.dataclass(frozen=True)
class DtypeConfig:
    """How one dtype is compiled: storage type, accumulation type, extra defines."""
    name: str
    scalar: str
    acc: str
    defines: tuple = ()

    @functools.cached_property
    def numpy_dtype(self):
        return np.dtype(self.name)

    @functools.cached_property
    def acc_numpy_dtype(self):
        return np.dtype(dtypes.C_TYPES[self.acc])

    def compile_defines(self) -> list[str]:
        return [f"-DSCALAR_T={self.scalar}", f"-DACC_T={self.acc}", *(f"-D{d}" for d in self.defines)]


# One per dtype of gpunet.dtypes: its storage type, the C type of the dtype it accumulates in, its defines.
DTYPES = {d.name: DtypeConfig(d.name, d.c_type, dtypes.BY_NAME[d.accumulate].c_type, d.cuda_defines)
          for d in dtypes.FLOATS}


def dtype_config(dtype) -> DtypeConfig:
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise TypeError(f"the CUDA kernels support {sorted(DTYPES)}, not {name}")
    return DTYPES[name]


@functools.lru_cache(maxsize=None)
def read_source(module: str) -> str:
    path = kernel_dir() / f"{module}.cu"
    return path.read_text()


def source_digest_parts() -> list[bytes]:
    """Every kernel file's bytes, for build caches keyed on the source."""
    return [p.name.encode() + p.read_bytes() for p in sorted(kernel_dir().glob("*.cu*"))]


# ---- signatures ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    ctype: str          # the C type as written, e.g. "const scalar_t* __restrict__"
    base: str           # the element or value type, e.g. "scalar_t", "long long"
    pointer: bool


_DEFINE = re.compile(r"^#define\s+(\w+)[ \t]+((?:.*\\\n)*.*)$", re.M)
# A kernel's launch bounds come as __launch_bounds__(...) or as an upper-case macro from a header.
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+'
                     r'(?:(?:__launch_bounds__\s*\((?:[^()]|\([^()]*\))*\)|[A-Z][A-Z0-9_]*)\s+)?'
                     r'(\w+)\s*\(([^)]*)\)')
_QUALIFIERS = {"const", "__restrict__", "volatile"}


def _expand_object_macros(text: str) -> str:
    macros = {name: body.replace("\\\n", " ") for name, body in _DEFINE.findall(text)}
    for _ in range(3):
        text = re.sub(r"\b(" + "|".join(map(re.escape, macros)) + r")\b(?!\s*\()",
                      lambda m: macros[m.group(1)], text) if macros else text
    return text


def _parse_param(text: str) -> Param:
    text = " ".join(text.split())
    match = re.match(r"^(.*?)(\w+)$", text)
    if not match:
        raise ValueError(f"cannot parse kernel parameter {text!r}")
    ctype, name = match.group(1).strip(), match.group(2)
    pointer = "*" in ctype
    base = " ".join(t for t in ctype.replace("*", " ").split() if t not in _QUALIFIERS)
    return Param(name, ctype, base, pointer)


def signatures(module: str) -> dict[str, tuple[Param, ...]]:
    """Kernel name -> parameters, for every ``extern "C" __global__`` kernel of ``kernels/<module>.cu``."""
    return signatures_of(read_source(module))


@functools.lru_cache(maxsize=None)
def signatures_of(source: str) -> dict[str, tuple[Param, ...]]:
    """Kernel name -> parameters for CUDA source text (object-like macros in parameter lists are expanded)."""
    body = "\n".join(line for line in source.splitlines() if not line.startswith("#define"))
    expanded = _expand_object_macros(_defines_only(source) + body)
    return {name: tuple(_parse_param(p) for p in params.split(",") if p.strip())
            for name, params in _KERNEL.findall(expanded)}


def _defines_only(source: str) -> str:
    return "\n".join(m.group(0) for m in _DEFINE.finditer(source)) + "\n"


_VALUE_TYPES = {"int": "int32", "long long": "int64", "unsigned int": "uint32", "unsigned": "uint32",
                "unsigned long long": "uint64", **{c: name for c, name in dtypes.C_TYPES.items() if c != "__half"}}


def element_dtype(base: str, config: DtypeConfig):
    """The NumPy dtype a C type stands for under ``config``."""
    if base == "scalar_t":
        return config.numpy_dtype
    if base == "acc_t":
        return config.acc_numpy_dtype
    if base in _VALUE_TYPES:
        return np.dtype(_VALUE_TYPES[base])
    raise TypeError(f"kernel parameter type {base!r} has no NumPy equivalent")


@functools.lru_cache(maxsize=None)
def _integer_range(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def check_arguments(kernel: str, params, args, config: DtypeConfig, is_array, wants=None):
    """Check ``args`` against the kernel's parameters; return ``[(param, value, dtype)]``.

    ``wants``: each parameter's element dtype under ``config``, when the caller has it at hand (launchers look it
    up once per kernel; this runs at every launch).

    Pointers take an array of the exact element dtype, C-contiguous, or None (nullptr); integers take Python or
    NumPy integers (not bools); floating parameters take real numbers.
    """
    if len(args) != len(params):
        raise TypeError(f"kernel {kernel} takes {len(params)} arguments ({', '.join(p.name for p in params)}), "
                        f"got {len(args)}")
    bound = []
    if wants is None:
        wants = [element_dtype(param.base, config) for param in params]
    for param, value, want in zip(params, args, wants):
        if param.pointer:
            if value is None:
                bound.append((param, None, want))
                continue
            if not is_array(value):
                raise TypeError(f"kernel {kernel}: parameter {param.name} ({param.ctype}) takes a device array, "
                                f"got {type(value).__name__}")
            if value.dtype != want:
                raise TypeError(f"kernel {kernel}: parameter {param.name} ({param.ctype}) takes {want} data, "
                                f"got {value.dtype}")
            if not value.flags.c_contiguous:
                raise TypeError(f"kernel {kernel}: parameter {param.name} must be C-contiguous (kernels ignore strides)")
            bound.append((param, value, want))
        elif want.kind in "iu":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"kernel {kernel}: parameter {param.name} ({param.ctype}) takes an integer, "
                                f"got {type(value).__name__}")
            low, high = _integer_range(want)
            if not low <= int(value) <= high:
                raise OverflowError(f"kernel {kernel}: parameter {param.name} = {value} does not fit {param.base}")
            bound.append((param, int(value), want))
        else:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"kernel {kernel}: parameter {param.name} ({param.ctype}) takes a number, "
                                f"got {type(value).__name__}")
            bound.append((param, float(value), want))
    return bound

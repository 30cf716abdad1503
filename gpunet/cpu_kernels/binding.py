"""The one way into the compiled CPU kernels: signatures parsed from the ``.cpp`` sources, every argument checked.

Each entry point is written once in a ``GPUNET_*_ENTRY_POINTS(T, SUFFIX)`` macro and instantiated for float32
(``_f32``) and float64 (``_f64``). A buffer parameter carries its length as a comment, ``const T* x /*[rows*cols]*/``,
and a list of buffers as ``T* const* w /*[count][n]*/`` (``count`` buffers, the k-th of ``n[k]`` elements; a
trailing ``?`` allows null). Before a call, every buffer's dtype, contiguity, writability and length is checked
against that declaration and every integer against its C range, as the simulator does for the ``.cu`` kernels:
a wrong call is a TypeError, ValueError or OverflowError, never a read of memory the arrays do not own.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import re
import weakref
from pathlib import Path

import numpy

_ENTRY = re.compile(r"\b(void|int64_t)\s+(\w+)_##SUFFIX\s*\(([^)]*)\)\s*\{")
_PARAM = re.compile(r"^(?P<ctype>.*?)\b(?P<name>\w+)\s*(?:/\*\s*(?P<length>(?:\[[^\]]*\])+)\s*(?P<nullable>\?)?\s*\*/)?$")
_SCALARS = {"int": (ctypes.c_int, numpy.dtype("int32")), "int64_t": (ctypes.c_int64, numpy.dtype("int64")),
            "double": (ctypes.c_double, None)}
_ELEMENTS = {"int64_t": numpy.dtype("int64"), "double": numpy.dtype("float64")}  # besides T, the kernel's dtype
SUFFIXES = {"float32": "f32", "float64": "f64"}


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    kind: str               # "buffer", "list" (of buffers), "int" or "float"
    element: str            # "T", "int64_t", "double" for buffers and lists; the C type for scalars
    writable: bool = False  # a buffer the kernel writes to
    length: tuple = ()      # buffer: (product of names and numbers,); list: (count, name of the sizes buffer)
    nullable: bool = False


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    params: tuple
    returns: str            # "void" or "int64_t"


def _parse_param(text: str) -> Param:
    match = _PARAM.match(" ".join(text.split()))
    if match is None:
        raise ValueError(f"cannot parse compiled-kernel parameter {text!r}")
    ctype, name = match["ctype"].strip(), match["name"]
    stars = ctype.count("*")
    element = ctype.replace("*", " ").replace("const", " ").split()[0]
    if stars == 0:
        if element not in _SCALARS:
            raise ValueError(f"parameter {name}: unsupported scalar type {ctype!r}")
        return Param(name, "float" if element == "double" else "int", element)
    if not match["length"]:
        raise ValueError(f"buffer parameter {name} ({ctype}) has no /*[length]*/ comment: every buffer declares it")
    dims = tuple(d.strip() for d in re.findall(r"\[([^\]]*)\]", match["length"]))
    writable = not ctype.startswith("const")
    if stars == 1:
        return Param(name, "buffer", element, writable, (dims[0],), bool(match["nullable"]))
    return Param(name, "list", element, writable, dims, bool(match["nullable"]))


def parse_signatures(source: str) -> dict[str, Signature]:
    """Entry point name (without the dtype suffix) -> its Signature, for every entry point in ``source``."""
    text = source.replace("\\\n", " ")
    return {name: Signature(name, tuple(_parse_param(p) for p in params.split(",") if p.strip()), returns)
            for returns, name, params in _ENTRY.findall(text)}


@functools.lru_cache(maxsize=None)
def signatures_of_files(paths: tuple) -> dict[str, Signature]:
    found: dict[str, Signature] = {}
    for path in paths:
        found.update(parse_signatures(Path(path).read_text()))
    return found


def _length(expression: str, scalars: dict) -> int:
    """The value of ``rows*cols``-style products of integer parameters and numbers."""
    total = 1
    for factor in expression.split("*"):
        factor = factor.strip()
        total *= int(factor) if factor.isdigit() else scalars[factor]
    return total


class Function:
    """One compiled entry point for one dtype, callable with NumPy arrays, lists of them, and Python numbers."""

    def __init__(self, lib, signature: Signature, dtype):
        self.signature, self.dtype = signature, numpy.dtype(dtype)
        self.name = f"{signature.name}_{SUFFIXES[self.dtype.name]}"
        self._fn = getattr(lib, self.name)
        self._fn.argtypes = [ctypes.c_void_p if p.kind in ("buffer", "list") else _SCALARS[p.element][0]
                             for p in signature.params]
        self._fn.restype = ctypes.c_int64 if signature.returns == "int64_t" else None
        self._lists: dict[str, tuple] = {}  # the last pointer array built for each list parameter

    def _element(self, param: Param):
        return self.dtype if param.element == "T" else _ELEMENTS[param.element]

    def __call__(self, *args):
        params = self.signature.params
        if len(args) != len(params):
            raise TypeError(f"{self.name} takes {len(params)} arguments ({', '.join(p.name for p in params)}), "
                            f"got {len(args)}")
        scalars = {}
        for param, value in zip(params, args):
            if param.kind == "int":
                if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, numpy.integer)):
                    raise TypeError(f"{self.name}: {param.name} takes an integer, got {type(value).__name__}")
                info = numpy.iinfo(_SCALARS[param.element][1])
                if not info.min <= int(value) <= info.max:
                    raise OverflowError(f"{self.name}: {param.name} = {value} does not fit {param.element}")
                scalars[param.name] = int(value)
        converted = []
        for param, value in zip(params, args):
            if param.kind == "buffer":
                converted.append(self._buffer(param, value, _length(param.length[0], scalars)))
            elif param.kind == "list":
                converted.append(self._list(param, value, scalars, args))
            elif param.kind == "float":
                if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, float, numpy.number)):
                    raise TypeError(f"{self.name}: {param.name} takes a number, got {type(value).__name__}")
                converted.append(float(value))
            else:
                converted.append(int(value))
        return self._fn(*converted)

    def _buffer(self, param: Param, value, length: int, where: str = ""):
        if value is None and param.nullable:
            return None
        name = f"{self.name}: {param.name}{where}"
        if not isinstance(value, numpy.ndarray):
            raise TypeError(f"{name} takes a NumPy array, got {type(value).__name__}")
        want = self._element(param)
        if value.dtype != want:
            raise TypeError(f"{name} takes {want} data, got {value.dtype}")
        if not value.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (the kernels ignore strides)")
        if param.writable and not value.flags.writeable:
            raise ValueError(f"{name} is written to, but the array is read-only")
        if value.size != length:
            raise ValueError(f"{name} must hold {length} elements, got {value.size} (shape {value.shape})")
        return value.ctypes.data

    def _list(self, param: Param, value, scalars: dict, args):
        """A ctypes array of the buffers' data pointers. An optimizer passes the same arrays at every step: while
        every one is the same live object as at the last call (weak references), its pointer array is reused
        (a few microseconds instead of tens)."""
        if value is None and param.nullable:
            return None
        count_name, sizes_name = param.length
        count = _length(count_name, scalars)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{self.name}: {param.name} takes a list of {count} arrays, got {type(value).__name__}")
        if len(value) != count:
            raise ValueError(f"{self.name}: {param.name} takes a list of {count} arrays, got {len(value)}")
        cached = self._lists.get(param.name)
        if cached is not None and len(cached[0]) == count and all(ref() is a for ref, a in zip(cached[0], value)):
            sizes = cached[2]
        else:
            cached = None
        sizes_index = next(i for i, p in enumerate(self.signature.params) if p.name == sizes_name)
        wanted_sizes = args[sizes_index]
        if cached is None or not numpy.array_equal(sizes, wanted_sizes):
            pointers = [self._buffer(param, a, int(n), f"[{k}]") for k, (a, n) in enumerate(zip(value, wanted_sizes))]
            cached = (tuple(weakref.ref(a) for a in value), (ctypes.c_void_p * max(count, 1))(*pointers),
                      numpy.array(wanted_sizes, copy=True))
            self._lists[param.name] = cached
        return ctypes.addressof(cached[1])


class Binding:
    """The compiled library's entry points by name and dtype (float32 and float64 only)."""

    def __init__(self, lib, signatures: dict[str, Signature]):
        self._lib, self._signatures = lib, signatures
        self._functions: dict = {}

    def function(self, name: str, dtype) -> Function | None:
        """The checked entry point ``name`` for ``dtype``, or None where there is none (float16; no such kernel)."""
        key = (name, dtype)
        try:
            return self._functions[key]
        except KeyError:
            pass
        dtype = numpy.dtype(dtype)
        found = None
        if name in self._signatures and dtype.name in SUFFIXES:
            found = Function(self._lib, self._signatures[name], dtype)
        self._functions[key] = found
        return found

    def names(self) -> list[str]:
        return sorted(self._signatures)

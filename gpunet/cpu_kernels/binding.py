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
import threading
import weakref
from pathlib import Path

import numpy

from .. import dtypes

_ENTRY = re.compile(r"\b(void|int64_t)\s+(\w+)_##SUFFIX\s*\(([^)]*)\)\s*\{")
_PARAM = re.compile(r"^(?P<ctype>.*?)\b(?P<name>\w+)\s*(?:/\*\s*(?P<length>(?:\[[^\]]*\])+)\s*(?P<nullable>\?)?\s*\*/)?$")
_SCALARS = {"int": (ctypes.c_int, numpy.dtype("int32")), "int64_t": (ctypes.c_int64, numpy.dtype("int64")),
            "double": (ctypes.c_double, None)}
_ELEMENTS = {"int64_t": numpy.dtype("int64"), "double": numpy.dtype("float64")}  # besides T, the kernel's dtype
SUFFIXES = {d.name: d.cpu_suffix for d in dtypes.FLOATS if d.cpu_suffix}  # "float32" -> "f32"


def data_pointer(a: numpy.ndarray) -> int:
    """The address of ``a``'s first element, through NumPy's public array interface (about 1.2 us a buffer: the
    cheaper of the public ways, ``.ctypes.data`` being about 1.6)."""
    return a.__array_interface__["data"][0]


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


class Function:
    """One compiled entry point for one dtype, callable with NumPy arrays, lists of them, and Python numbers.

    Everything about the checks that does not depend on the arguments (element dtypes, integer ranges, which
    parameters a length multiplies) is worked out here once: a training step makes a dozen of these calls.
    """

    def __init__(self, lib, signature: Signature, dtype):
        self.signature, self.dtype = signature, numpy.dtype(dtype)
        self.name = f"{signature.name}_{SUFFIXES[self.dtype.name]}"
        self._fn = getattr(lib, self.name)
        params = signature.params
        self._fn.argtypes = [ctypes.c_void_p if p.kind in ("buffer", "list") else _SCALARS[p.element][0]
                             for p in params]
        self._fn.restype = ctypes.c_int64 if signature.returns == "int64_t" else None
        position = {p.name: i for i, p in enumerate(params)}
        self._lengths = {p.name: tuple(_factors(d, position) for d in p.length) for p in params
                         if p.kind in ("buffer", "list")}
        self._sizes_index = {p.name: position[p.length[1]] for p in params if p.kind == "list"}
        self._elements = {p.name: self.dtype if p.element == "T" else _ELEMENTS[p.element] for p in params
                          if p.kind in ("buffer", "list")}
        # What each parameter needs checked, grouped by kind: (position, param, ...).
        self._ints = [(i, p, *_int_range(p.element)) for i, p in enumerate(params) if p.kind == "int"]
        self._floats = [(i, p) for i, p in enumerate(params) if p.kind == "float"]
        self._buffers = [(i, p, self._lengths[p.name][0]) for i, p in enumerate(params) if p.kind == "buffer"]
        self._list_params = [(i, p) for i, p in enumerate(params) if p.kind == "list"]
        self._local = threading.local()  # per thread: the last pointer array built for each list parameter

    def __call__(self, *args):
        params = self.signature.params
        if len(args) != len(params):
            raise TypeError(f"{self.name} takes {len(params)} arguments ({', '.join(p.name for p in params)}), "
                            f"got {len(args)}")
        converted = list(args)
        for i, param, low, high in self._ints:
            value = args[i]
            if type(value) is not int:
                if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, numpy.integer)):
                    raise TypeError(f"{self.name}: {param.name} takes an integer, got {type(value).__name__}")
                value = converted[i] = int(value)
            if not low <= value <= high:
                raise OverflowError(f"{self.name}: {param.name} = {value} does not fit {param.element}")
        for i, param in self._floats:
            value = args[i]
            if type(value) is not float:
                if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, float, numpy.number)):
                    raise TypeError(f"{self.name}: {param.name} takes a number, got {type(value).__name__}")
                converted[i] = float(value)
        for i, param in self._list_params:  # before the buffers: a list's sizes are one of them
            converted[i] = self._list(param, args[i], converted)
        for i, param, factors in self._buffers:
            converted[i] = self._buffer(param, args[i], _product(factors, converted))
        return self._fn(*converted)

    def _buffer(self, param: Param, value, length: int, where: str = ""):
        if value is None and param.nullable:
            return None
        if not isinstance(value, numpy.ndarray):
            raise TypeError(f"{self.name}: {param.name}{where} takes a NumPy array, got {type(value).__name__}")
        if value.dtype != self._elements[param.name]:
            raise TypeError(f"{self.name}: {param.name}{where} takes {self._elements[param.name]} data, "
                            f"got {value.dtype}")
        flags = value.flags
        if not flags.c_contiguous:
            raise ValueError(f"{self.name}: {param.name}{where} must be C-contiguous (the kernels ignore strides)")
        if param.writable and not flags.writeable:
            raise ValueError(f"{self.name}: {param.name}{where} is written to, but the array is read-only")
        if value.size != length:
            raise ValueError(f"{self.name}: {param.name}{where} must hold {length} elements, got {value.size} "
                             f"(shape {value.shape})")
        return data_pointer(value)

    def _list(self, param: Param, value, args):
        """A ctypes array of the buffers' data pointers (the array object itself, so that the call holds it). An
        optimizer passes the same arrays at every step: while every one is the same live object as at this
        thread's last call (weak references) and the declared sizes are the same, its pointer array is reused (a
        few microseconds instead of tens); only writability is looked at again."""
        if value is None and param.nullable:
            return None
        count = _product(self._lengths[param.name][0], args)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{self.name}: {param.name} takes a list of {count} arrays, got {type(value).__name__}")
        if len(value) != count:
            raise ValueError(f"{self.name}: {param.name} takes a list of {count} arrays, got {len(value)}")
        sizes = args[self._sizes_index[param.name]]
        sizes = tuple(sizes.tolist()) if isinstance(sizes, numpy.ndarray) else tuple(sizes)
        lists = self._local.__dict__.setdefault("lists", {})
        cached = lists.get(param.name)
        if (cached is None or cached[2] != sizes or len(cached[0]) != count
                or not all(ref() is a for ref, a in zip(cached[0], value))):
            pointers = [self._buffer(param, a, int(n), f"[{k}]") for k, (a, n) in enumerate(zip(value, sizes))]
            cached = (tuple(weakref.ref(a) for a in value), (ctypes.c_void_p * max(count, 1))(*pointers), sizes)
            lists[param.name] = cached
        elif param.writable:
            for k, a in enumerate(value):
                if not a.flags.writeable:
                    raise ValueError(f"{self.name}: {param.name}[{k}] is written to, but the array is read-only")
        return cached[1]


def _factors(expression: str, position: dict) -> tuple:
    """``rows*cols`` as the factors of a product: numbers, or the positions of integer parameters."""
    factors = []
    for factor in expression.split("*"):
        factor = factor.strip()
        if factor.isdigit():
            factors.append(int(factor))
        elif factor in position:
            factors.append(("arg", position[factor]))
        else:
            raise ValueError(f"length {expression!r} names {factor!r}, which is no parameter")
    return tuple(factors)


@functools.lru_cache(maxsize=None)
def _int_range(element: str) -> tuple[int, int]:
    info = numpy.iinfo(_SCALARS[element][1])
    return int(info.min), int(info.max)


def _product(factors: tuple, args) -> int:
    total = 1
    for factor in factors:
        total *= args[factor[1]] if factor.__class__ is tuple else factor
    return total


class Binding:
    """The compiled library's entry points by name and dtype (float32 and float64 only)."""

    def __init__(self, lib, signatures: dict[str, Signature]):
        self._lib, self._signatures = lib, signatures
        self._functions: dict = {}

    def function(self, name: str, dtype) -> Function | None:
        """The checked entry point ``name`` for ``dtype``, or None where there is none (float16, a byte-swapped
        dtype, no such kernel)."""
        key = (name, dtype)
        try:
            return self._functions[key]
        except KeyError:
            pass
        dtype = numpy.dtype(dtype)
        found = None
        if name in self._signatures and dtype.name in SUFFIXES and dtype.isnative:  # not a byte-swapped one
            found = Function(self._lib, self._signatures[name], dtype)
        self._functions[key] = found
        return found

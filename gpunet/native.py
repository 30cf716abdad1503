"""C++ compiled on the user's machine into shared libraries, cached by a hash of everything that goes in.

Used by the CUDA simulator (the kernels of ``kernels/`` built for the CPU) and by the CPU row kernels. A
change to a source or a flag rebuilds; nothing else does. A build lands by atomic rename, so two processes
building at once, or one killed mid-build, never leave a broken library behind.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class BuildError(RuntimeError):
    pass


def compiler(purpose: str, error=BuildError) -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise error(f"{purpose} needs a C++20 compiler; {cxx!r} was not found (set CXX)")
    return cxx


def cache_dir(sub: str) -> Path:
    root = os.environ.get("GPUNET_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                           "gpunet")
    path = Path(root) / sub
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest_of(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def build_shared(target: Path, text: str, flags: list[str], cxx: str, what: str, error=BuildError,
                 suffix: str = ".cpp", libs: tuple = ()) -> Path:
    """Compile C++ ``text`` with ``flags`` (and link ``libs``, which go after the source) into ``target``,
    unless it exists; return it."""
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source = Path(tmp) / f"unit{suffix}"
        source.write_text(text)
        lib = Path(tmp) / "module.so"
        res = subprocess.run([cxx, *flags, "-x", "c++", str(source), "-o", str(lib), *libs], capture_output=True,
                             text=True)
        if res.returncode != 0:
            raise error(f"compiling {what} failed:\n{res.stderr[-6000:]}")
        os.replace(lib, target)
    return target

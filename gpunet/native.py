"""C++ compiled on the user's machine into shared libraries, cached by a hash of everything that goes in.

Used by the CUDA simulator (the kernels of ``kernels/`` built for the CPU) and by the CPU row kernels. A
change to a source or a flag rebuilds; nothing else does. A build is written to a temporary file, fsync'ed with
a SHA-256 of its bytes beside it (``<library>.sha256``), and lands by atomic rename, so a process killed
mid-build never leaves a broken library behind (processes starting at once take turns on a lock file: one
builds, the others load its build). A library is loaded only if its bytes match that digest, since a truncated
or overwritten one would kill the loading process with SIGBUS (not an exception), every run, until deleted:
one that fails the check is rebuilt, with one log line. A cache folder that cannot be used (``GPUNET_CACHE``
naming a file, a read-only folder) gives one log line, and the process builds in a temporary folder of its
own, removed at exit.
"""
from __future__ import annotations

import atexit
import fcntl
import functools
import hashlib
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

_log = logging.getLogger("gpunet")
DIGEST_SUFFIX = ".sha256"


class BuildError(RuntimeError):
    pass


class CacheUnavailable(OSError):
    """The cache folder cannot be made or is not a folder; the message says which and how to fix it."""


def compiler(purpose: str, error=BuildError) -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise error(f"{purpose} needs a C++20 compiler; {cxx!r} was not found (set CXX)")
    return cxx


def cache_root() -> Path:
    return Path(os.environ.get("GPUNET_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                                "gpunet"))


def cache_dir(sub: str) -> Path:
    """``<cache root>/<sub>``, made if missing; CacheUnavailable if it cannot be."""
    path = cache_root() / sub
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheUnavailable(f"the cache folder {path} cannot be made ({exc.strerror or exc})") from exc
    return path


@functools.cache
def _private_dir() -> Path:
    """This process's own build folder, for when the cache cannot be used: removed at exit (a library loaded from
    it stays mapped; only its name goes)."""
    path = Path(tempfile.mkdtemp(prefix="gpunet-build-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_warned: set = set()


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        _log.warning(message)


def digest_of(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(target: Path) -> str | None:
    """Why ``target`` must not be loaded (missing, no digest beside it, or its bytes do not match it), or None."""
    if not target.exists():
        return "missing"
    try:
        recorded = (target.parent / (target.name + DIGEST_SUFFIX)).read_text().strip()
    except FileNotFoundError:
        return "no digest beside it"
    except (OSError, UnicodeDecodeError) as exc:
        return f"its digest cannot be read ({exc})"
    try:
        actual = file_digest(target)
    except OSError as exc:
        return f"it cannot be read ({exc})"
    if actual != recorded:
        return f"its bytes do not match its digest ({target.stat().st_size} bytes)"
    return None


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` to a temporary file beside ``path``, fsync'ed, renamed over ``path``, and the folder fsync'ed:
    after a crash ``path`` holds the old bytes or the new ones, never a part."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def cached_library(sub: str, name: str, text: Callable[[], str], flags: list[str], cxx: str, what: str,
                   error=BuildError, suffix: str = ".cpp", libs: tuple = ()) -> Path:
    """The library ``name`` in the cache folder ``sub``: the one there if it passes its digest check, else the
    C++ ``text()`` returns compiled with ``flags`` (and ``libs``, linked after the source). Where the cache folder
    cannot be used, the build goes to this process's own temporary folder."""
    def build(target: Path) -> Path:
        return _build(target, text, flags, cxx, what, error, suffix, libs)
    try:
        return _checked_or_built(cache_dir(sub) / name, build)
    except BuildError:
        raise
    except OSError as exc:
        why = str(exc) if isinstance(exc, CacheUnavailable) else f"the cache folder {cache_root() / sub} cannot be " \
                                                                   f"written ({exc})"
        warn_once(f"gpunet: {why}: building in a temporary folder for this process only (set GPUNET_CACHE to a "
                  "writable folder)")
        folder = _private_dir() / sub
        folder.mkdir(exist_ok=True)
        return _checked_or_built(folder / name, build)


def _checked_or_built(target: Path, build: Callable[[Path], Path]) -> Path:
    """``target`` if it passes its digest check, else ``build(target)``, under a lock on the folder's
    ``.<name>.lock`` (N ranks starting at once build it once; the others wait and load that build)."""
    if verify(target) is None:
        return target
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        problem = verify(target)
        if problem is None:  # built by another process while this one waited
            return target
        if target.exists():
            _log.warning("gpunet: the cached library %s is not loaded: %s; rebuilding it", target, problem)
        return build(target)


def _build(target: Path, text: Callable[[], str], flags: list[str], cxx: str, what: str, error, suffix: str,
           libs: tuple) -> Path:
    """Compile into a temporary folder beside ``target``; fsync the library, write its digest, rename it into
    place (the digest last: a library without one is never loaded)."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source = Path(tmp) / f"unit{suffix}"
        source.write_text(text())
        lib = Path(tmp) / "module.so"
        res = subprocess.run([cxx, *flags, "-x", "c++", str(source), "-o", str(lib), *libs], capture_output=True,
                             text=True)
        if res.returncode != 0:
            raise error(f"compiling {what} failed:\n{res.stderr[-6000:]}")
        with open(lib, "rb+") as f:
            os.fsync(f.fileno())
        digest = file_digest(lib)
        os.replace(lib, target)
        write_atomically(target.parent / (target.name + DIGEST_SUFFIX), (digest + "\n").encode())
    return target

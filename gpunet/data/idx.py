"""Reader for the IDX format of MNIST and Fashion-MNIST (gzip-compressed or raw).

Layout: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions, then each dimension as a big-endian
int32, then the data. Every way a file can be wrong is an error that names the file.
"""
from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"


class DatasetError(ValueError):
    """A dataset file is missing, truncated, corrupt or not what it claims to be."""


def read_bytes(path) -> bytes:
    """The decompressed content of ``path`` (gzip detected by its magic bytes)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: corrupt or truncated gzip file ({exc})") from exc


def md5_of(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def read_idx(path, ndim: int):
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions (3 for images, 1 for labels)."""
    data = read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX file ({len(data)} bytes, the header alone needs {header})")
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != ndim:
        raise DatasetError(f"{path}: bad IDX magic {data[:4].hex()} (expected 000008{ndim:02x}: "
                           f"unsigned bytes in {ndim} dimension(s))")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "over-long"
        raise DatasetError(f"{path}: {kind} IDX file: header says shape {tuple(dims)} ({expected} bytes), "
                           f"the file holds {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)

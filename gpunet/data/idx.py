"""Reader for the IDX format of MNIST and Fashion-MNIST (gzip-compressed or raw).

Layout: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions, then each dimension as a big-endian
int32, then the data. Every way a file can be wrong is an error that names the file. The header is read first and
the size it claims checked (in Python integers, so no product of dimensions overflows) before the rest is
decompressed: a gzip file never inflates past what its header promises.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import zlib
from pathlib import Path

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot shrink data by more than about 1032:1: a gzip header promising more is not telling the truth.
MAX_DEFLATE_RATIO = 1100


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


def read_idx(path, ndim: int, md5: str | None = None):
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions (3 for images, 1 for labels).

    ``md5``: the expected MD5 of the uncompressed content (header and data), checked whether the file is raw or
    gzip-compressed; a mismatch is a DatasetError.
    """
    return read_idx_with_md5(path, ndim, md5)[0]


def read_idx_with_md5(path, ndim: int, md5: str | None = None):
    """``(array, MD5 of the uncompressed content)``; see :func:`read_idx`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    raw = path.read_bytes()
    compressed = raw[:2] == GZIP_MAGIC
    stream = gzip.GzipFile(fileobj=io.BytesIO(raw)) if compressed else io.BytesIO(raw)
    header_size = 4 + 4 * ndim
    try:
        header = stream.read(header_size)
        if len(header) < header_size:
            raise DatasetError(f"{path}: truncated IDX file ({len(header)} bytes, the header alone needs "
                               f"{header_size})")
        if header[0] != 0 or header[1] != 0 or header[2] != 0x08 or header[3] != ndim:
            raise DatasetError(f"{path}: bad IDX magic {header[:4].hex()} (expected 000008{ndim:02x}: "
                               f"unsigned bytes in {ndim} dimension(s))")
        dims = [int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        expected = header_size + math.prod(dims)
        if compressed and expected > MAX_DEFLATE_RATIO * len(raw) + header_size:
            raise DatasetError(f"{path}: the IDX header claims shape {tuple(dims)} ({expected} bytes), more than "
                               f"this {len(raw)}-byte gzip file can hold: corrupt")
        cap = MAX_DEFLATE_RATIO * len(raw) if compressed else len(raw)
        body = stream.read(min(expected - header_size, cap) + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: corrupt or truncated gzip file ({exc})") from exc
    size = header_size + len(body)
    if size != expected:
        kind = "truncated" if size < expected else "over-long"
        raise DatasetError(f"{path}: {kind} IDX file: header says shape {tuple(dims)} ({expected} bytes), "
                           f"the file holds {size if size < expected else 'more'}")
    digest = hashlib.md5(header + body).hexdigest()
    if md5 is not None and digest != md5:
        raise DatasetError(f"{path}: MD5 {digest} of the uncompressed content differs from the official {md5}: "
                           "the file is corrupt or not the original")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims), digest

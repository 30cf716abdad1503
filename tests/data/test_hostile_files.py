"""Untrusted dataset files: CIFAR-10 pickles that try to grow, allocate or corrupt, every single-byte corruption of
a valid batch, and MNIST IDX files that lie (a bit flip under --verify-md5, dimensions that overflow, empty splits).
Whatever the file, the loaders answer with data or a DatasetError, never another exception."""
import gzip
import pickle
import shutil
import struct
import time

import numpy as np
import pytest

from gpunet.data import DatasetError, load_cifar10, load_mnist, read_batch, read_idx
from gpunet.data.cifar10 import TEST_BATCH, TRAIN_BATCHES
from gpunet.data.mnist import EMBEDDED_MNIST, MNIST_CONTENT_MD5

# -- CIFAR-10 -----------------------------------------------------------------------------------------------------


def official_batch(n=1, seed=0, labels=None):
    """A batch as the official files hold it (a dict of bytes keys; uint8 pixels, int labels), pickled at protocol
    2 as Python 3 does (bytes through ``_codecs.encode(..., 'latin1')``)."""
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"testing batch 1 of 1",
             b"labels": rng.integers(0, 10, n).tolist() if labels is None else labels,
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [f"img{i}.png".encode() for i in range(n)]}
    return pickle.dumps(batch, protocol=2)


def py2_batch(pixels: bytes, labels):
    """The layout the official files (written by Python 2) have: pixels as a BINSTRING, no ``_codecs``; assembled
    opcode by opcode, as Python 3 cannot write it."""
    def string(s: bytes):
        return (b"U" + bytes([len(s)]) if len(s) < 256 else b"T" + struct.pack("<I", len(s))) + s

    def integer(v):
        return b"K" + bytes([v]) if 0 <= v < 256 else b"M" + struct.pack("<H", v) if 0 <= v < 65536 else \
            b"J" + struct.pack("<i", v)
    n = len(labels)
    dtype = (b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
             + b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b")
             + b"\x87R" + b"(" + integer(1) + integer(n) + integer(3072) + b"\x86" + dtype + b"\x89"
             + string(pixels) + b"tb")
    label_list = b"](" + b"".join(integer(v) for v in labels) + b"e"
    return (b"\x80\x02}(" + string(b"batch_label") + string(b"training batch 1 of 5") + string(b"labels")
            + label_list + string(b"data") + array + b"u.")


def test_the_python2_layout_of_the_official_files_loads(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, 2 * 3072, dtype=np.uint8)
    (tmp_path / "b").write_bytes(py2_batch(pixels.tobytes(), [3, 9]))
    x, y = read_batch(tmp_path / "b")
    assert y.tolist() == [3, 9] and np.array_equal(x, pixels.reshape(2, 3072) / np.float32(255))


def encode_chain(steps: int) -> bytes:
    """``_codecs.encode(b"seed", 'hex_codec')`` applied ``steps`` times to its own result (the bytes first made by
    the latin-1 encoding Python 3 pickles bytes with): each step doubles the size."""
    body = b"\x80\x02c_codecs\nencode\nq\x00" + b"h\x00" * steps
    body += b"h\x00X\x04\x00\x00\x00seedX\x06\x00\x00\x00latin1\x86R"
    for _ in range(steps):
        body += b"X\x09\x00\x00\x00hex_codec\x86R"
    return body + b"."


def test_a_chain_of_codec_calls_cannot_grow_the_file(tmp_path):
    """On the old unpickler 40 steps took a 500-byte file to 2**40 bytes (a MemoryError after gigabytes)."""
    (tmp_path / "bomb").write_bytes(encode_chain(40))
    start = time.perf_counter()
    with pytest.raises(DatasetError, match="_codecs.encode is admitted only"):
        read_batch(tmp_path / "bomb")
    assert time.perf_counter() - start < 1


def test_re_encoding_one_string_many_times_runs_out_of_budget(tmp_path):
    """latin-1 does not grow a string, but encoding the same memoised string again and again would."""
    big = b"x" * 10_000
    body = (b"\x80\x02]q\x00(c_codecs\nencode\nq\x01X" + struct.pack("<I", len(big)) + big + b"q\x02"
            + b"h\x01h\x02X\x06\x00\x00\x00latin1\x86R" * 1000 + b"e.")
    (tmp_path / "reuse").write_bytes(body)
    with pytest.raises(DatasetError, match="more data than the file holds"):
        read_batch(tmp_path / "reuse")


@pytest.mark.parametrize("name, body", [
    # _reconstruct of a 2**40-element array: an allocation the file cannot pay for
    ("huge _reconstruct", b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                          b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85U\x01b\x87R."),
    # numpy.ndarray called, and NEWOBJ on it, with a 2**40 shape
    ("ndarray called", b"\x80\x02cnumpy\nndarray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85R."),
    ("ndarray NEWOBJ", b"\x80\x02cnumpy\nndarray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85\x81."),
    # a dtype state with the flags of a type holding Python objects (NumPy would treat the bytes as pointers)
    ("dtype flags", b"\x80\x02cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
                    b"K\x01tb."),
    ("object dtype", b"\x80\x02cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R."),
    # a memo index of 2**32-1 (the C unpickler would grow its memo table to it) and a 2**60-byte string
    ("memo index", b"\x80\x02K\x01r\xff\xff\xff\xff."),
    ("bytes8 length", b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b"abc."),
    ("frame length", b"\x80\x04\x95" + struct.pack("<Q", 1 << 60) + b"K\x01."),
    ("bytes(n)", b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R."),
    ("a module's function", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."),
    ("not a pickle", b"hello"),
    ("empty", b""),
])
def test_hostile_pickles(tmp_path, name, body):
    (tmp_path / "b").write_bytes(body)
    start = time.perf_counter()
    with pytest.raises(DatasetError):
        read_batch(tmp_path / "b")
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("labels, match", [([2 ** 70], "0..9"), ([-1], "0..9"), ([True], "integers"),
                                           ([1.5], "integers"), ([[1]], "integers"), ([], "1 images but 0")])
def test_bad_labels(tmp_path, labels, match):
    (tmp_path / "b").write_bytes(official_batch(1, labels=labels))
    with pytest.raises(DatasetError, match=match):
        read_batch(tmp_path / "b")


def corrupted(good: bytes, positions, rng):
    for pos in positions:
        for value in (good[pos] ^ 0xFF, int(rng.integers(256))):
            bad = bytearray(good)
            bad[pos] = value
            yield pos, value, bytes(bad)


def assert_only_dataset_errors(tmp_path, cases):
    path = tmp_path / "batch"
    escaped = []
    for pos, value, body in cases:
        path.write_bytes(body)
        try:
            read_batch(path)
        except DatasetError:
            pass
        except BaseException as exc:  # noqa: BLE001 - the point is that nothing else comes out
            escaped.append(f"byte {pos} = {value}: {type(exc).__name__}: {exc}"[:200])
    assert not escaped, "\n".join(escaped[:20])


def test_single_byte_corruptions_of_a_batch_are_dataset_errors(tmp_path):
    """300 random positions of a valid one-image batch, two values each."""
    good = official_batch(1)
    rng = np.random.default_rng(7)
    positions = rng.choice(len(good), 300, replace=False)
    assert_only_dataset_errors(tmp_path, corrupted(good, positions, rng))


@pytest.mark.slow
def test_every_single_byte_corruption_of_a_batch_is_a_dataset_error(tmp_path):
    good = official_batch(1)
    assert_only_dataset_errors(tmp_path, corrupted(good, range(len(good)), np.random.default_rng(8)))


def test_an_empty_cifar_split_is_an_error(tmp_path):
    for name in TRAIN_BATCHES:
        (tmp_path / name).write_bytes(official_batch(2))
    (tmp_path / TEST_BATCH).write_bytes(official_batch(0))
    with pytest.raises(DatasetError, match="test split is empty"):
        load_cifar10(tmp_path)


# -- MNIST ----------------------------------------------------------------------------------------------------------


def copy_embedded(tmp_path, raw=()):
    """The embedded MNIST in ``tmp_path``, the stems in ``raw`` decompressed (as many mirrors serve them)."""
    for f in EMBEDDED_MNIST.glob("*.gz"):
        stem = f.name[:-3]
        if stem in raw:
            (tmp_path / stem).write_bytes(gzip.decompress(f.read_bytes()))
        else:
            shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_verify_md5_checks_raw_files_too(tmp_path):
    copy_embedded(tmp_path, raw={"train-labels-idx1-ubyte"})
    path = tmp_path / "train-labels-idx1-ubyte"
    assert read_idx(path, 1, md5=MNIST_CONTENT_MD5[path.name]).shape == (60000,)  # the official content, raw
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # label 8 -> 9: still a valid file
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="MD5 .* differs from the official"):
        load_mnist(tmp_path, verify_md5=True)
    assert read_idx(path, 1)[-1] == 9


def test_verify_md5_accepts_the_official_content_recompressed(tmp_path):
    copy_embedded(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=0))
    assert load_mnist(tmp_path, verify_md5=True)[3].shape == (10000,)


def idx(dims, body=b"", magic=8):
    return bytes([0, 0, magic, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims) + body


@pytest.mark.parametrize("dims, body", [
    ((2 ** 31, 2 ** 31, 4), b""),              # the product is 2**64: 0 in int64, the size of this empty body
    ((2 ** 21, 2 ** 21, 2 ** 22), b""),
    ((2 ** 32 - 1,) * 3, b"\x00" * 64),
    ((0, 2 ** 32 - 1, 5), b"\x00" * 64),
])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_dimensions_whose_product_overflows(tmp_path, dims, body, compress):
    data = idx(dims, body)
    (tmp_path / "x").write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DatasetError, match="claims|over-long|truncated"):
        read_idx(tmp_path / "x", 3)


def test_a_gzip_file_never_inflates_past_its_header(tmp_path):
    (tmp_path / "x").write_bytes(gzip.compress(idx((10,), b"\x01" * 10) + b"\x00" * 50_000_000))
    start = time.perf_counter()
    with pytest.raises(DatasetError, match="over-long"):
        read_idx(tmp_path / "x", 1)
    assert time.perf_counter() - start < 1  # stopped after 11 bytes, not after inflating 50 MB


def write_split(root, prefix, n, rng):
    (root / f"{prefix}-images-idx3-ubyte").write_bytes(idx((n, 28, 28), rng.integers(0, 256, n * 784,
                                                                                     dtype=np.uint8).tobytes()))
    (root / f"{prefix}-labels-idx1-ubyte").write_bytes(idx((n,), rng.integers(0, 10, n, dtype=np.uint8).tobytes()))


@pytest.mark.parametrize("empty", ["t10k", "train"])
def test_an_empty_split_is_an_error(tmp_path, empty):
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        write_split(tmp_path, prefix, 0 if prefix == empty else 5, rng)
    with pytest.raises(DatasetError, match=f"{'test' if empty == 't10k' else 'train'} split is empty"):
        load_mnist(tmp_path)

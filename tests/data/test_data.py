"""Dataset loaders: real MNIST, CIFAR-10 in the official format on small files, every kind of broken file."""
import gzip
import pickle
import shutil

import numpy as np
import pytest

from gpunet.data import Batches, DatasetError, load_cifar10, load_mnist, read_batch, read_idx, spiral, two_moons
from gpunet.data.mnist import EMBEDDED_MNIST


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_embedded_mnist_is_the_real_thing(mnist):
    x_train, y_train, x_test, y_test = mnist
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_train.dtype == np.float32 and 0.0 == x_train.min() and x_train.max() == 1.0
    assert np.bincount(y_train).tolist()[:2] == [5923, 6742]  # the well-known class counts
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]


def write_idx(path, array, compress=True, magic=None):
    header = bytes([0, 0, 8, array.ndim]) if magic is None else magic
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        data = gzip.compress(data)
    path.write_bytes(data)


def small_mnist(tmp_path, compress=True):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        suffix = ".gz" if compress else ""
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n), compress)
    return tmp_path


@pytest.mark.parametrize("compress", [True, False])
def test_idx_gz_and_raw(tmp_path, compress):
    x_train, y_train, x_test, y_test = load_mnist(small_mnist(tmp_path, compress))
    assert x_train.shape == (20, 784) and y_test.shape == (10,)


def test_truncated_idx(tmp_path):
    small_mnist(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DatasetError, match="truncated IDX"):
        load_mnist(tmp_path)


def test_bad_magic(tmp_path):
    write_idx(tmp_path / "x", np.zeros(3), compress=False, magic=bytes([0, 0, 9, 1]))
    with pytest.raises(DatasetError, match="bad IDX magic"):
        read_idx(tmp_path / "x", 1)


def test_corrupt_gzip(tmp_path):
    small_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DatasetError, match="corrupt or truncated gzip"):
        load_mnist(tmp_path)


def test_md5_mismatch_is_caught(tmp_path):
    for f in EMBEDDED_MNIST.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 10])))
    with pytest.raises(DatasetError, match="MD5"):
        load_mnist(tmp_path, verify_md5=True)
    assert load_mnist(tmp_path, verify_md5=False)[3].shape == (10000,)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="no train-images"):
        load_mnist(tmp_path)


def write_cifar_batch(path, n, rng, labels=None):
    batch = {b"batch_label": b"testing batch", b"labels": labels if labels is not None else
             rng.integers(0, 10, n).tolist(), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [f"img{i}.png".encode() for i in range(n)]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def test_cifar10_official_format(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        write_cifar_batch(tmp_path / f"data_batch_{i}", 4, rng)
    write_cifar_batch(tmp_path / "test_batch", 3, rng)
    x_train, y_train, x_test, y_test = load_cifar10(tmp_path)
    assert x_train.shape == (20, 3072) and x_test.shape == (3, 3072) and y_train.dtype == np.int64
    assert 0 <= x_train.min() and x_train.max() <= 1


def test_cifar10_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    write_cifar_batch(tmp_path / "b", 4, rng, labels=[0, 1, 2, 10])
    with pytest.raises(DatasetError, match="0..9"):
        read_batch(tmp_path / "b")
    (tmp_path / "evil").write_bytes(pickle.dumps(print))
    with pytest.raises(DatasetError, match="refusing"):
        read_batch(tmp_path / "evil")
    (tmp_path / "cut").write_bytes((tmp_path / "b").read_bytes()[:100])
    with pytest.raises(DatasetError):
        read_batch(tmp_path / "cut")


def test_toy_sets():
    x, y = spiral(50, 3, seed=1)
    assert x.shape == (150, 2) and np.bincount(y).tolist() == [50, 50, 50]
    x, y = two_moons(101, seed=1)
    assert x.shape == (101, 2) and set(y.tolist()) == {0, 1}


def test_batches_are_seeded_and_cover_the_data():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    y = np.arange(10)
    a = [yb.tolist() for _, yb in Batches(x, y, 4, seed=3, device="cpu").epoch(2)]
    b = [yb.tolist() for _, yb in Batches(x, y, 4, seed=3, device="cpu").epoch(2)]
    c = [yb.tolist() for _, yb in Batches(x, y, 4, seed=3, device="cpu").epoch(3)]
    assert a == b and a != c and [len(v) for v in a] == [4, 4, 2]
    assert sorted(sum(a, [])) == list(range(10))
    with pytest.raises(ValueError, match="batch size"):
        Batches(x, y, 0)

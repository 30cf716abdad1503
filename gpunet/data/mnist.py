"""MNIST (and the format-identical Fashion-MNIST): four IDX files -> float32 images in [0, 1], int64 labels.

A copy of the official MNIST files ships in ``gpunet/data/mnist`` (CC BY-SA 3.0, Yann LeCun, Corinna Cortes and
Christopher J.C. Burges), so training works offline.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from .idx import DatasetError, read_idx

EMBEDDED_MNIST = Path(__file__).parent / "mnist"
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# MD5 of the official gzip files.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# MD5 of their uncompressed content: what ``verify_md5`` checks, so that raw and re-compressed copies are checked too.
MNIST_CONTENT_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: no {stem}.gz or {stem} found")


def load_mnist(root=None, verify_md5: bool | None = None):
    """Return ``(x_train, y_train, x_test, y_test)``; images flattened to (N, 784).

    ``verify_md5`` (default: only for the embedded copy) checks each file's uncompressed content against the official
    MD5 sums, whether the file is gzip-compressed or raw. An empty split is an error.
    """
    root = Path(root) if root is not None else EMBEDDED_MNIST
    if verify_md5 is None:
        verify_md5 = root == EMBEDDED_MNIST
    arrays = {}
    for key, stem in FILES.items():
        path = _find(root, stem)
        arrays[key] = read_idx(path, 3 if key.endswith("images") else 1,
                               md5=MNIST_CONTENT_MD5[stem] if verify_md5 else None)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(f"{root}: {images.shape[0]} {split} images but {labels.shape[0]} labels")
        if images.shape[0] == 0:
            raise DatasetError(f"{root}: the {split} split is empty (0 images)")
        if min(images.shape[1:]) == 0:
            raise DatasetError(f"{root}: {split} images of shape {images.shape[1:]} hold no pixels")
        if labels.max() > 9:
            raise DatasetError(f"{root}: {split} label {int(labels.max())} is outside 0..9")
    return tuple(
        arrays[f"{split}_images"].reshape(arrays[f"{split}_images"].shape[0], -1).astype(np.float32) / 255.0
        if part == "images" else arrays[f"{split}_labels"].astype(np.int64)
        for split in ("train", "test") for part in ("images", "labels")
    )


def load_fashion_mnist(root=None):
    root = Path(root) if root is not None else FASHION_MNIST_DEBIAN
    if not root.is_dir():
        raise DatasetError(f"Fashion-MNIST not found at {root} (on Debian: apt-get install dataset-fashion-mnist)")
    return load_mnist(root, verify_md5=False)

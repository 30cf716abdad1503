"""Dataset names the CLI accepts -> ``(x_train, y_train, x_test, y_test, n_classes)``. The toy sets' test split
is drawn with another seed (the same distribution, other points), so their accuracy is measured on held-out
points."""
from __future__ import annotations

from .cifar10 import load_cifar10
from .mnist import load_fashion_mnist, load_mnist
from .toy import spiral, two_moons

DATASETS = ("mnist", "fashion-mnist", "cifar10", "spiral", "moons")
TEST_SEED_OFFSET = 1_000_003


def load_dataset(name: str, root=None, seed: int = 0):
    if name == "mnist":
        return (*load_mnist(root), 10)
    if name == "fashion-mnist":
        return (*load_fashion_mnist(root), 10)
    if name == "cifar10":
        if root is None:
            raise ValueError("cifar10 needs --data-root pointing at the 'cifar-10-batches-py' folder")
        return (*load_cifar10(root), 10)
    if name == "spiral":
        return (*spiral(seed=seed), *spiral(seed=seed + TEST_SEED_OFFSET), 3)
    if name == "moons":
        return (*two_moons(seed=seed), *two_moons(seed=seed + TEST_SEED_OFFSET), 2)
    raise ValueError(f"unknown dataset {name!r}: expected one of {DATASETS}")

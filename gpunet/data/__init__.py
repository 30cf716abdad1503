"""Datasets (MNIST embedded, Fashion-MNIST, CIFAR-10, toy sets) and minibatching."""
from .batches import Batches
from .cifar10 import load_cifar10, read_batch
from .idx import DatasetError, read_idx
from .mnist import load_fashion_mnist, load_mnist
from .registry import DATASETS, load_dataset
from .toy import spiral, two_moons

__all__ = ["DATASETS", "load_dataset", "Batches", "DatasetError", "load_mnist", "load_fashion_mnist", "load_cifar10", "read_batch",
           "read_idx", "spiral", "two_moons"]

"""Seeded, shuffling minibatches, moved to the device once and sliced there."""
from __future__ import annotations

from ..devices import device as as_device, get_default_device
import numpy as np

from ..seeding import host_rng


class Batches:
    """Iterate ``(x, y)`` minibatches of an epoch; ``epoch(k)`` gives epoch ``k``'s order.

    The order of epoch ``k`` depends only on ``(seed, k)``, so a resumed run sees the same batches.
    """

    def __init__(self, x, y, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 device=None):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        if len(x) == 0:
            raise ValueError("cannot iterate over an empty dataset")
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.device = as_device(device) if device is not None else get_default_device()
        self.x = self.device.asarray(x)
        self.y = self.device.asarray(y)
        self.n = len(x)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def order(self, epoch: int):
        if not self.shuffle:
            return np.arange(self.n)
        return host_rng([self.seed, epoch]).permutation(self.n)

    def epoch(self, epoch: int = 0):
        order = self.device.asarray(self.order(epoch))
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            with self.device.context():  # the gather runs on the data's GPU, not on whichever is current
                batch = self.x[idx], self.y[idx]
            yield batch

    def __iter__(self):
        return self.epoch(0)
